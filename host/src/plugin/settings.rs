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
    /// Deadline for one call, including any HTTP requests it makes; the wait for a slot
    /// (`queueTimeout`) is not part of it.
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// Calls of this plugin running at once; more wait for a slot. Unset: see
    /// [`PluginSettings::concurrency`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Longest wait for a free slot; a call that gets none in time is refused as overloaded.
    #[serde(default = "default_queue_timeout", with = "crate::config::duration")]
    pub queue_timeout: Duration,
    /// Calls that may wait for a slot at once; more are refused at once as overloaded.
    #[serde(default = "default_max_queued")]
    pub max_queued: u32,
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
fn default_queue_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_queued() -> u32 {
    1000
}

/// Slots of a plugin that makes HTTP requests: its calls mostly wait for answers.
const NETWORK_CONCURRENCY: u32 = 32;

impl PluginSettings {
    /// A plugin with default limits and no config, egress or TLS.
    pub fn builtin(name: &str) -> Self {
        Self {
            plugin: format!("builtin:{name}"),
            config: serde_json::Value::Object(Default::default()),
            memory_limit: default_memory_limit(),
            timeout: default_timeout(),
            max_concurrency: None,
            queue_timeout: default_queue_timeout(),
            max_queued: default_max_queued(),
            egress: EgressSettings::default(),
        }
    }

    /// Calls running at once: `maxConcurrency`, or by default, for a plugin allowed no egress
    /// (which can only compute) one per core and at least 2, since more calls than cores only
    /// make every call late; for one that makes HTTP requests (and mostly waits), 32.
    pub fn concurrency(&self) -> u32 {
        self.max_concurrency.unwrap_or_else(|| {
            if self.egress.allow.is_empty() {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                u32::try_from(cores).unwrap_or(u32::MAX).max(2)
            } else {
                NETWORK_CONCURRENCY
            }
        })
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
        if self.max_concurrency == Some(0) {
            problems.push("maxConcurrency: must be at least 1".into());
        }
        if self.queue_timeout.is_zero() {
            problems.push("queueTimeout: must be above zero".into());
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
