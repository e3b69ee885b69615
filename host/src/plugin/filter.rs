//! Request-filter plugins: a verdict on every channel request before it reaches the backend.
//! A plugin that fails denies the request.
use std::sync::Arc;

use anyhow::Context;

use super::guest_output::with_output;

use crate::plugin::auth::{wire_v0_1, wire_v0_2};
use crate::plugin::bindings::{v0_1, v0_2};
use crate::plugin::check::ApiVersion;
use crate::plugin::engine::PluginRuntime;
use crate::plugin::instance::PluginCore;
use crate::plugin::settings::PluginSettings;
use crate::plugin::state::CallState;
use crate::plugin::ConnectionInfo;

const FILTER_INTERFACE: &str = "request-filter";

/// A loaded request-filter plugin; cheap to clone.
#[derive(Clone)]
pub struct FilterPlugin {
    inner: Arc<(PluginCore, Pre)>,
}

/// The linked component, by the API version it was built against.
enum Pre {
    V0_1(v0_1::filter::FilterPluginPre<CallState>),
    V0_2(v0_2::filter::FilterPluginPre<CallState>),
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
    /// `ssh -L` / `-D`: a connection to this host and port, made from inside the container.
    DirectTcpip {
        host: String,
        port: u32,
    },
    /// `ssh -R`: a listener inside the container.
    TcpipForward {
        host: String,
        port: u32,
    },
    /// A connection to this Unix socket inside the container.
    DirectStreamlocal(String),
    /// A listening Unix socket inside the container.
    StreamlocalForward(String),
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
        let (core, pre, version) = self.prepare(name, settings, FILTER_INTERFACE)?;
        let pre = match version {
            ApiVersion::V0_1 => v0_1::filter::FilterPluginPre::new(pre).map(Pre::V0_1),
            ApiVersion::V0_2 => v0_2::filter::FilterPluginPre::new(pre).map(Pre::V0_2),
        }
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
                let called = match pre {
                    Pre::V0_1(pre) => {
                        let Some(request) = v0_1_request(request) else {
                            return Ok(Verdict::Deny(format!(
                                "{} cannot be checked by this filter plugin (plugin API 0.1)",
                                kind(request)
                            )));
                        };
                        let instance = pre
                            .instantiate_async(&mut store)
                            .await
                            .map_err(anyhow::Error::from)
                            .context("cannot instantiate")?;
                        instance
                            .containerssh_plugin_request_filter()
                            .call_filter(&mut store, &wire_v0_1::info(conn), session_id, &request)
                            .await
                            .map(|v| {
                                use v0_1::filter::exports::containerssh::plugin::request_filter::Verdict as V;
                                match v {
                                    V::Allow => WireVerdict::Allow,
                                    V::Deny(r) => WireVerdict::Deny(r),
                                    V::RewriteCommand(c) => WireVerdict::RewriteCommand(c),
                                }
                            })
                    }
                    Pre::V0_2(pre) => {
                        let instance = pre
                            .instantiate_async(&mut store)
                            .await
                            .map_err(anyhow::Error::from)
                            .context("cannot instantiate")?;
                        instance
                            .containerssh_plugin_request_filter()
                            .call_filter(&mut store, &wire_v0_2::info(conn), session_id, &v0_2_request(request))
                            .await
                            .map(|v| {
                                use v0_2::filter::exports::containerssh::plugin::request_filter::Verdict as V;
                                match v {
                                    V::Allow => WireVerdict::Allow,
                                    V::Deny(r) => WireVerdict::Deny(r),
                                    V::RewriteCommand(c) => WireVerdict::RewriteCommand(c),
                                }
                            })
                    }
                };
                let last = store.data().output.emit(&core.name, &conn.connection_id);
                let verdict = called.map_err(|e| {
                    with_output(anyhow::Error::from(e).context("the plugin failed"), &last)
                })?;
                Ok(match verdict {
                    WireVerdict::Allow => Verdict::Allow,
                    WireVerdict::Deny(reason) => Verdict::Deny(one_line(reason)),
                    WireVerdict::RewriteCommand(cmd) if cmd.len() <= MAX_VERDICT_BYTES => {
                        Verdict::RewriteCommand(cmd)
                    }
                    WireVerdict::RewriteCommand(_) => {
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

/// A verdict off the wire, any version.
enum WireVerdict {
    Allow,
    Deny(String),
    RewriteCommand(String),
}

/// The request's type, for logs, metrics and denials.
pub fn kind(request: &ChannelRequest) -> &'static str {
    match request {
        ChannelRequest::OpenSession(_) => "session",
        ChannelRequest::Env(..) => "env",
        ChannelRequest::Pty { .. } => "pty",
        ChannelRequest::Shell => "shell",
        ChannelRequest::Exec(_) => "exec",
        ChannelRequest::Subsystem(_) => "subsystem",
        ChannelRequest::Signal(_) => "signal",
        ChannelRequest::WindowChange { .. } => "window-change",
        ChannelRequest::X11 => "x11",
        ChannelRequest::AgentForwarding => "agent",
        ChannelRequest::DirectTcpip { .. } => "direct-tcpip",
        ChannelRequest::TcpipForward { .. } => "tcpip-forward",
        ChannelRequest::DirectStreamlocal(_) => "direct-streamlocal",
        ChannelRequest::StreamlocalForward(_) => "streamlocal-forward",
    }
}

/// A request as API 0.1 spells it; `None` for requests 0.1 has no case for. 0.1's
/// `tcpip-forwarding` carried "host:port" and stands for `ssh -L`.
fn v0_1_request(
    r: &ChannelRequest,
) -> Option<v0_1::filter::exports::containerssh::plugin::request_filter::ChannelRequest> {
    use v0_1::filter::exports::containerssh::plugin::request_filter as wit;
    Some(match r {
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
        ChannelRequest::DirectTcpip { host, port } => {
            wit::ChannelRequest::TcpipForwarding(format!("{host}:{port}"))
        }
        ChannelRequest::TcpipForward { .. }
        | ChannelRequest::DirectStreamlocal(_)
        | ChannelRequest::StreamlocalForward(_) => return None,
    })
}

fn v0_2_request(
    r: &ChannelRequest,
) -> v0_2::filter::exports::containerssh::plugin::request_filter::ChannelRequest {
    use v0_2::filter::exports::containerssh::plugin::request_filter as wit;
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
        ChannelRequest::DirectTcpip { host, port } => {
            wit::ChannelRequest::DirectTcpip(wit::Endpoint {
                host: host.clone(),
                port: *port,
            })
        }
        ChannelRequest::TcpipForward { host, port } => {
            wit::ChannelRequest::TcpipForward(wit::Endpoint {
                host: host.clone(),
                port: *port,
            })
        }
        ChannelRequest::DirectStreamlocal(p) => wit::ChannelRequest::DirectStreamlocal(p.clone()),
        ChannelRequest::StreamlocalForward(p) => wit::ChannelRequest::StreamlocalForward(p.clone()),
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
