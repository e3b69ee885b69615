//! Request-filter plugins: a verdict on every channel request before it reaches the backend.
//! A plugin that fails denies the request.
use std::sync::Arc;

use anyhow::Context;

use super::guest_output::with_output;

use crate::plugin::auth::to_wit_info;
use crate::plugin::bindings::filter::exports::containerssh::plugin::request_filter as wit;
use crate::plugin::bindings::filter::FilterPluginPre;
use crate::plugin::engine::PluginRuntime;
use crate::plugin::instance::PluginCore;
use crate::plugin::settings::PluginSettings;
use crate::plugin::state::CallState;
use crate::plugin::ConnectionInfo;

const FILTER_EXPORT: &str = "containerssh:plugin/request-filter@0.1.0";

/// A loaded request-filter plugin; cheap to clone.
#[derive(Clone)]
pub struct FilterPlugin {
    inner: Arc<(PluginCore, FilterPluginPre<CallState>)>,
}

/// A channel request as the filter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRequest {
    /// A session channel is opening; this many are open already.
    OpenSession(u32),
    Env(String, String),
    Pty {
        term: String,
        columns: u32,
        rows: u32,
    },
    Shell,
    Exec(String),
    Subsystem(String),
    Signal(String),
    WindowChange {
        columns: u32,
        rows: u32,
    },
    X11,
    AgentForwarding,
    TcpipForwarding(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused, with a one-line reason for the client.
    Deny(String),
    /// Allowed, but this command runs instead.
    RewriteCommand(String),
}

/// Longest deny reason or rewritten command accepted from a plugin.
const MAX_VERDICT_BYTES: usize = 64 * 1024;

impl PluginRuntime {
    pub fn load_filter(
        self: &Arc<Self>,
        name: &str,
        settings: &PluginSettings,
    ) -> anyhow::Result<FilterPlugin> {
        let (core, pre) = self.prepare(name, settings, FILTER_EXPORT)?;
        let pre = FilterPluginPre::new(pre)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("plugin {}: not a request filter", settings.plugin))?;
        Ok(FilterPlugin {
            inner: Arc::new((core, pre)),
        })
    }
}

impl FilterPlugin {
    /// The verdict on `request`. `config_json` replaces the plugin's own config for this call
    /// (the connection's merged security settings). A failing plugin denies.
    pub async fn filter(
        &self,
        conn: &ConnectionInfo,
        session_id: u32,
        request: &ChannelRequest,
        config_json: Option<String>,
    ) -> Verdict {
        let (core, pre) = &*self.inner;
        let result = core
            .run("filter", async {
                let mut store = core.store(&conn.connection_id, config_json);
                let instance = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(anyhow::Error::from)
                    .context("cannot instantiate")?;
                let called = instance
                    .containerssh_plugin_request_filter()
                    .call_filter(&mut store, &to_wit_info(conn), session_id, &to_wit(request))
                    .await;
                let last = store.data().output.emit(&core.name, &conn.connection_id);
                let verdict = called.map_err(|e| {
                    with_output(anyhow::Error::from(e).context("the plugin failed"), &last)
                })?;
                Ok(match verdict {
                    wit::Verdict::Allow => Verdict::Allow,
                    wit::Verdict::Deny(reason) => Verdict::Deny(one_line(reason)),
                    wit::Verdict::RewriteCommand(cmd) if cmd.len() <= MAX_VERDICT_BYTES => {
                        Verdict::RewriteCommand(cmd)
                    }
                    wit::Verdict::RewriteCommand(_) => {
                        anyhow::bail!(
                            "the plugin's command is longer than {MAX_VERDICT_BYTES} bytes"
                        )
                    }
                })
            })
            .await;
        result.unwrap_or_else(|e| {
            tracing::error!(connection_id = %conn.connection_id, error = format!("{e:#}"), "request filter failed; denying");
            Verdict::Deny("the request could not be checked".into())
        })
    }
}

/// The first line of a reason, printable characters only, bounded.
fn one_line(reason: String) -> String {
    let line: String = reason
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if line.is_empty() {
        "denied by policy".into()
    } else {
        line
    }
}

fn to_wit(r: &ChannelRequest) -> wit::ChannelRequest {
    match r {
        ChannelRequest::OpenSession(n) => wit::ChannelRequest::OpenSession(*n),
        ChannelRequest::Env(k, v) => wit::ChannelRequest::Env((k.clone(), v.clone())),
        ChannelRequest::Pty {
            term,
            columns,
            rows,
        } => wit::ChannelRequest::Pty(wit::PtyRequest {
            term: term.clone(),
            columns: *columns,
            rows: *rows,
        }),
        ChannelRequest::Shell => wit::ChannelRequest::Shell,
        ChannelRequest::Exec(c) => wit::ChannelRequest::Exec(c.clone()),
        ChannelRequest::Subsystem(s) => wit::ChannelRequest::Subsystem(s.clone()),
        ChannelRequest::Signal(s) => wit::ChannelRequest::Signal(s.clone()),
        ChannelRequest::WindowChange { columns, rows } => {
            wit::ChannelRequest::WindowChange((*columns, *rows))
        }
        ChannelRequest::X11 => wit::ChannelRequest::X11,
        ChannelRequest::AgentForwarding => wit::ChannelRequest::AgentForwarding,
        ChannelRequest::TcpipForwarding(s) => wit::ChannelRequest::TcpipForwarding(s.clone()),
    }
}

/// How the request filter starts its answer when the policy itself is unreadable.
pub const INVALID_POLICY_PREFIX: &str = "invalid security configuration";

impl FilterPlugin {
    /// Asks the filter about a first session once, with `security_json` as its policy: a
    /// policy that cannot be read says so (at start, and for a config server's answer).
    pub async fn check_policy(&self, security_json: &str) -> anyhow::Result<()> {
        let probe = ConnectionInfo {
            connection_id: "0".repeat(32),
            remote_address: "127.0.0.1:0".into(),
            client_version: "SSH-2.0-containerssh-config-check".into(),
            username: "config-check".into(),
        };
        let verdict = self
            .filter(
                &probe,
                0,
                &ChannelRequest::OpenSession(0),
                Some(security_json.to_string()),
            )
            .await;
        match verdict {
            Verdict::Deny(reason) if reason.starts_with(INVALID_POLICY_PREFIX) => {
                anyhow::bail!("{reason}")
            }
            _ => Ok(()),
        }
    }
}
