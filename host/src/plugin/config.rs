//! Configuration plugins: once per connection after authentication, a partial configuration
//! for that connection (merged over the file's by the caller) and the grant to continue with.
use std::sync::Arc;

use anyhow::Context;

use super::guest_output::with_output;

use crate::plugin::auth::{wire_v0_1, wire_v0_2, MAX_ANSWER_BYTES};
use crate::plugin::bindings::{v0_1, v0_2};
use crate::plugin::check::ApiVersion;
use crate::plugin::engine::PluginRuntime;
use crate::plugin::instance::PluginCore;
use crate::plugin::settings::PluginSettings;
use crate::plugin::state::CallState;
use crate::plugin::{AuthGrant, ConnectionInfo};

const CONFIG_INTERFACE: &str = "config-provider";

/// A loaded configuration plugin; cheap to clone.
#[derive(Clone)]
pub struct ConfigPlugin {
    inner: Arc<(PluginCore, Pre)>,
}

/// The linked component, by the API version it was built against.
enum Pre {
    V0_1(v0_1::config::ConfigPluginPre<CallState>),
    V0_2(v0_2::config::ConfigPluginPre<CallState>),
}

/// What a configuration plugin answered for one connection.
#[derive(Debug)]
pub struct ConfigAnswer {
    /// Partial configuration (a JSON object), not yet merged or validated.
    pub config: serde_json::Value,
    pub grant: AuthGrant,
}

impl PluginRuntime {
    pub fn load_config_provider(
        self: &Arc<Self>,
        name: &str,
        settings: &PluginSettings,
    ) -> anyhow::Result<ConfigPlugin> {
        let (core, pre, version) = self.prepare(name, settings, CONFIG_INTERFACE)?;
        let pre = match version {
            ApiVersion::V0_1 => v0_1::config::ConfigPluginPre::new(pre).map(Pre::V0_1),
            ApiVersion::V0_2 => v0_2::config::ConfigPluginPre::new(pre).map(Pre::V0_2),
        }
        .map_err(anyhow::Error::from)
        .with_context(|| format!("plugin {}: not a config provider", settings.plugin))?;
        Ok(ConfigPlugin {
            inner: Arc::new((core, pre)),
        })
    }
}

/// A config answer off the wire, any version.
struct Answer {
    config: String,
    grant: AuthGrant,
}

impl ConfigPlugin {
    /// The plugin's answer; any failure (trap, timeout, error answer, nonsense) is an error,
    /// which the caller turns into a refused connection.
    pub async fn get_config(
        &self,
        conn: &ConnectionInfo,
        grant: &AuthGrant,
    ) -> anyhow::Result<ConfigAnswer> {
        let (core, pre) = &*self.inner;
        core.run("config", async {
            let mut store = core.store(&conn.connection_id, None);
            let called = match pre {
                Pre::V0_1(pre) => {
                    let instance = pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(anyhow::Error::from)
                        .context("cannot instantiate")?;
                    instance
                        .containerssh_plugin_config_provider()
                        .call_get_config(
                            &mut store,
                            &wire_v0_1::info(conn),
                            &wire_v0_1::grant(grant),
                        )
                        .await
                        .map(|answer| answer.map(|a| (a.config, wire_v0_1::from_grant(a.grant))))
                }
                Pre::V0_2(pre) => {
                    let instance = pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(anyhow::Error::from)
                        .context("cannot instantiate")?;
                    instance
                        .containerssh_plugin_config_provider()
                        .call_get_config(
                            &mut store,
                            &wire_v0_2::info(conn),
                            &wire_v0_2::grant(grant),
                        )
                        .await
                        .map(|answer| answer.map(|a| (a.config, wire_v0_2::from_grant(a.grant))))
                }
            };
            let last = store.data().output.emit(&core.name, &conn.connection_id);
            let (config, grant) = called
                .map_err(|e| {
                    with_output(anyhow::Error::from(e).context("the plugin failed"), &last)
                })?
                .map_err(|e| {
                    let mut e = e;
                    e.truncate(e.floor_char_boundary(512));
                    anyhow::anyhow!("the plugin refused: {e}")
                })?;
            let answer = Answer {
                config,
                grant: grant?,
            };
            if answer.config.len() > MAX_ANSWER_BYTES {
                anyhow::bail!("the plugin's configuration is larger than {MAX_ANSWER_BYTES} bytes");
            }
            let config: serde_json::Value = if answer.config.trim().is_empty() {
                serde_json::Value::Object(Default::default())
            } else {
                serde_json::from_str(&answer.config)
                    .context("the plugin's configuration is not JSON")?
            };
            if !config.is_object() {
                anyhow::bail!("the plugin's configuration is not a JSON object");
            }
            Ok(ConfigAnswer {
                config,
                grant: answer.grant,
            })
        })
        .await
    }
}
