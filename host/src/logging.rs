//! Structured logs (text or JSON). `RUST_LOG` overrides the configured level.
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub fn init(config: &LogConfig) {
    let level = match config.level.as_str() {
        "warning" => "warn",
        "notice" => "info",
        other => other,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},russh=warn,bollard=warn,wasmtime=warn,cranelift=warn,hyper=warn,hyper_util=warn,reqwest=warn,rustls=warn,kube=warn,kube_client=warn,tower=warn,tungstenite=warn,tokio_tungstenite=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into files or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
