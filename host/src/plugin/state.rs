//! What a plugin instance's store holds: a WASI context with nothing granted, the HTTP hooks,
//! memory limits, and who is calling (for logs).
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::plugin::bindings::host_api::{self, LogLevel};
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

impl host_api::Host for CallState {
    fn log(&mut self, level: LogLevel, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
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

    fn plugin_config(&mut self) -> String {
        self.config_json.clone()
    }
}

impl crate::plugin::bindings::types_api::Host for CallState {}
