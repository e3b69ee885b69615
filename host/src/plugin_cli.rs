//! `containerssh plugin ...`: what a plugin author needs without a gateway: the WIT this binary
//! speaks, and a check of a compiled plugin (the same loading the gateway does at start,
//! with messages that say how to fix what is wrong).
use std::path::Path;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::plugin::{default_cache_dir, PluginRuntime, PluginSettings};

/// The plugin API this binary loads.
pub const WIT: &str = include_str!("../../wit/v0.1/plugin.wit");

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Print the plugin API (WIT) this gateway loads; generate bindings from it.
    Wit,
    /// Check a compiled plugin: a component, with the imports and exports of its role; compiles
    /// it into the cache so the gateway's first start with it is fast.
    Check {
        file: std::path::PathBuf,
        #[arg(long, value_enum, default_value_t = Role::Auth)]
        role: Role,
        /// Memory limit in bytes (the plugin setting `memoryLimit`).
        #[arg(long)]
        memory_limit: Option<u64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Role {
    /// `auth:` (world authenticator-plugin)
    Auth,
    /// `configserver:` (world config-plugin)
    Config,
    /// `filter:` (world filter-plugin)
    Filter,
}

pub fn main(command: PluginCommand) -> ExitCode {
    match command {
        PluginCommand::Wit => {
            print!("{WIT}");
            ExitCode::SUCCESS
        }
        PluginCommand::Check {
            file,
            role,
            memory_limit,
        } => match check(&file, role, memory_limit) {
            Ok(summary) => {
                println!("{}: {summary}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e:#}", file.display());
                ExitCode::FAILURE
            }
        },
    }
}

/// What kind of file it is, from its first bytes.
fn kind(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file (it does not start with \\0asm)".into());
    }
    // The version field: 1 for a core module, 0x0d with layer 1 for a component.
    match bytes[4..8] {
        [1, 0, 0, 0] => Err("a core WebAssembly module, not a component. The gateway loads components \
             (wasm32-wasip2). Build for wasm32-wasip2, or wrap the module: \
             `wasm-tools component new MODULE.wasm --adapt wasi_snapshot_preview1.reactor.wasm -o plugin.wasm` \
             (the adapter is in the crate wasi-preview1-component-adapter-provider)"
            .into()),
        [_, _, 1, 0] => Ok(()),
        _ => Err("a WebAssembly file of an unknown version".into()),
    }
}

fn check(file: &Path, role: Role, memory_limit: Option<u64>) -> anyhow::Result<String> {
    let bytes = std::fs::read(file)?;
    kind(&bytes).map_err(anyhow::Error::msg)?;
    let mut settings = serde_json::json!({"plugin": file.to_string_lossy()});
    if let Some(limit) = memory_limit {
        settings["memoryLimit"] = limit.into();
    }
    let settings: PluginSettings = serde_json::from_value(settings)?;
    let runtime = PluginRuntime::new(default_cache_dir())?;
    let started = std::time::Instant::now();
    let world = match role {
        Role::Auth => runtime
            .load_authenticator("check", &settings)
            .map(|_| "authenticator-plugin"),
        Role::Config => runtime
            .load_config_provider("check", &settings)
            .map(|_| "config-plugin"),
        Role::Filter => runtime
            .load_filter("check", &settings)
            .map(|_| "filter-plugin"),
    }?;
    Ok(format!(
        "a component for world {world}: imports and exports check out; compiled and cached in {} ms",
        started.elapsed().as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_say_what_the_file_is() {
        assert!(kind(b"hello world")
            .unwrap_err()
            .contains("not a WebAssembly file"));
        let core = kind(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(
            core.contains("core WebAssembly module") && core.contains("wasm-tools component new")
        );
        assert!(kind(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
