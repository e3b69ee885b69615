//! What a plugin instance's store holds: a WASI context with nothing granted, the HTTP hooks,
//! memory limits, and who is calling (for logs).
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::plugin::bindings::{v0_1, v0_2};
use crate::plugin::egress::EgressHooks;
use crate::plugin::guest_output::GuestOutput;

pub struct CallState {
    pub plugin: String,
    pub connection_id: String,
    pub config_json: String,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: EgressHooks,
    table: ResourceTable,
    pub limits: StoreLimits,
    /// What the guest writes to stdout and stderr during this call.
    pub output: GuestOutput,
}

/// Longest log line a plugin may write; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

impl CallState {
    pub fn new(
        plugin: &str,
        connection_id: &str,
        config_json: String,
        memory_limit: u64,
        hooks: EgressHooks,
    ) -> Self {
        // No preopened directories, no environment, no arguments, no stdin; sockets and name
        // lookups are denied by the builder's defaults and stated here for the reader.
        let output = GuestOutput::default();
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(output.stdout.clone())
            .stderr(output.stderr.clone());
        Self {
            plugin: plugin.to_string(),
            connection_id: connection_id.to_string(),
            config_json,
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(usize::try_from(memory_limit).unwrap_or(usize::MAX))
                .trap_on_grow_failure(true)
                .build(),
            output,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl CallState {
    fn log_line(&self, level: LogLevel, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            message.truncate(message.floor_char_boundary(MAX_LOG_LINE));
        }
        let (plugin, cid) = (&self.plugin, &self.connection_id);
        match level {
            LogLevel::Trace => tracing::trace!(plugin, connection_id = cid, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, connection_id = cid, "{message}"),
            LogLevel::Info => tracing::info!(plugin, connection_id = cid, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, connection_id = cid, "{message}"),
            LogLevel::Error => tracing::error!(plugin, connection_id = cid, "{message}"),
        }
    }
}

/// The log levels of every API version, as one.
#[derive(Clone, Copy)]
enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl v0_1::host_api::Host for CallState {
    fn log(&mut self, level: v0_1::types_api::LogLevel, message: String) {
        use v0_1::types_api::LogLevel as L;
        let level = match level {
            L::Trace => LogLevel::Trace,
            L::Debug => LogLevel::Debug,
            L::Info => LogLevel::Info,
            L::Warn => LogLevel::Warn,
            L::Error => LogLevel::Error,
        };
        self.log_line(level, message);
    }

    fn plugin_config(&mut self) -> String {
        self.config_json.clone()
    }
}

impl v0_1::types_api::Host for CallState {}

impl v0_2::host_api::Host for CallState {
    fn log(&mut self, level: v0_2::types_api::LogLevel, message: String) {
        use v0_2::types_api::LogLevel as L;
        let level = match level {
            L::Trace => LogLevel::Trace,
            L::Debug => LogLevel::Debug,
            L::Info => LogLevel::Info,
            L::Warn => LogLevel::Warn,
            L::Error => LogLevel::Error,
        };
        self.log_line(level, message);
    }

    fn plugin_config(&mut self) -> String {
        self.config_json.clone()
    }

    fn config_get(&mut self, key: String) -> Option<String> {
        config_get(&self.config_json, &key)
    }
}

impl v0_2::types_api::Host for CallState {}

impl v0_2::password_hash_api::Host for CallState {
    async fn verify(&mut self, hash: String, password: Vec<u8>) -> Result<bool, String> {
        crate::plugin::password_hash::verify(hash, password).await
    }
}

/// One value of a JSON document by dotted path ("users.alice.password", "hosts.0"): strings as
/// they are, other values as JSON text, `None` for a missing path or null.
pub fn config_get(config_json: &str, key: &str) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(config_json).ok()?;
    for part in key.split('.') {
        value = match value {
            serde_json::Value::Object(mut map) => map.remove(part)?,
            serde_json::Value::Array(mut list) => {
                let index: usize = part.parse().ok()?;
                if index >= list.len() {
                    return None;
                }
                list.swap_remove(index)
            }
            _ => return None,
        };
    }
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::config_get;

    #[test]
    fn config_get_walks_objects_and_lists() {
        let json = r#"{"users": {"alice": {"password": "$2b$x", "uid": 1000}}, "hosts": ["a", "b"], "n": null}"#;
        assert_eq!(
            config_get(json, "users.alice.password").as_deref(),
            Some("$2b$x")
        );
        assert_eq!(config_get(json, "users.alice.uid").as_deref(), Some("1000"));
        assert_eq!(config_get(json, "hosts.1").as_deref(), Some("b"));
        assert_eq!(config_get(json, "hosts").as_deref(), Some(r#"["a","b"]"#));
        assert_eq!(config_get(json, "hosts.2"), None);
        assert_eq!(config_get(json, "n"), None);
        assert_eq!(config_get(json, "users.bob"), None);
        assert_eq!(config_get("not json", "a"), None);
    }
}
