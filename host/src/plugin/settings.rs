//! How a plugin is configured: where its component comes from, its own config, its limits and
//! what it may reach over the network.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plugin::tls::TlsSettings;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginSettings {
    /// A `.wasm` component file, or `builtin:NAME` for a plugin shipped inside the binary.
    pub plugin: String,
    /// The plugin's own configuration, handed to it as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Linear memory cap per call, in bytes.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: u64,
    /// Deadline for one call, including any HTTP requests it makes.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Calls of this plugin running at once; more wait (up to `timeout`).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    /// Outbound HTTP the plugin may make through wasi:http.
    #[serde(default)]
    pub egress: EgressSettings,
}

/// Outbound HTTP policy of one plugin. The host makes the connection; TLS keys never enter
/// the sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressSettings {
    /// Destinations as `host:port` (or `host`, meaning ports 80 and 443). Empty: no egress.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Largest response body the plugin may read, in bytes (default 1 MiB).
    #[serde(default)]
    pub max_response_bytes: Option<u64>,
    /// TLS client settings: CA, client certificate and key (mutual TLS), versions, suites.
    #[serde(default)]
    pub tls: TlsSettings,
}

/// Largest per-plugin memory limit the engine's instance pool is sized for.
pub const MAX_MEMORY_LIMIT: u64 = 1 << 30;

fn default_memory_limit() -> u64 {
    64 << 20
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_concurrency() -> u32 {
    32
}

impl PluginSettings {
    /// A plugin with default limits and no config, egress or TLS.
    pub fn builtin(name: &str) -> Self {
        Self {
            plugin: format!("builtin:{name}"),
            config: serde_json::Value::Object(Default::default()),
            memory_limit: default_memory_limit(),
            timeout: default_timeout(),
            max_concurrency: default_max_concurrency(),
            egress: EgressSettings::default(),
        }
    }

    /// Every problem with these settings (an empty list means fine).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(name) = self.plugin.strip_prefix("builtin:") {
            if crate::plugin::builtin::get(name).is_none() {
                problems.push(format!(
                    "plugin: unknown built-in plugin {name:?} (built in: {})",
                    crate::plugin::builtin::names().join(", ")
                ));
            }
        } else if self.plugin.is_empty() {
            problems.push("plugin: a .wasm file or builtin:NAME is required".into());
        } else if !std::path::Path::new(&self.plugin).is_file() {
            problems.push(format!("plugin: file {} does not exist", self.plugin));
        }
        if self.memory_limit < (1 << 20) || self.memory_limit > MAX_MEMORY_LIMIT {
            problems.push(format!(
                "memoryLimit: {} is outside 1 MiB..{} bytes",
                self.memory_limit, MAX_MEMORY_LIMIT
            ));
        }
        if self.timeout.is_zero() {
            problems.push("timeout: must be above zero".into());
        }
        if self.max_concurrency == 0 {
            problems.push("maxConcurrency: must be at least 1".into());
        }
        for dest in &self.egress.allow {
            if crate::plugin::egress::Destination::parse(dest).is_none() {
                problems.push(format!("egress.allow: {dest:?} is not host or host:port"));
            }
        }
        problems.extend(
            self.egress
                .tls
                .validate()
                .into_iter()
                .map(|p| format!("egress.tls.{p}")),
        );
        problems
    }
}
