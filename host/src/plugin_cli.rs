//! `containerssh plugin ...`: what a plugin author needs without a gateway: the WIT this binary
//! speaks, and a check of a compiled plugin (the same loading the gateway does at start,
//! with messages that say how to fix what is wrong).
use std::path::Path;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::plugin::{default_cache_dir, PluginRuntime, PluginSettings};

/// The plugin API new plugins are built against (0.1 plugins still load).
pub const WIT: &str = include_str!("../../wit/v0.2/plugin.wit");
/// The first plugin API, for plugins built against it.
pub const WIT_V0_1: &str = include_str!("../../wit/v0.1/plugin.wit");

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Print the plugin API (WIT) to build new plugins against (0.2); generate bindings from it.
    Wit {
        /// Which version: 0.2 (the newest) or 0.1 (still loaded, for existing plugins).
        #[arg(long, default_value = "0.2", value_parser = ["0.1", "0.2"])]
        api: String,
    },
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
    /// One authentication call, without SSH or a container: prints the outcome and the grant.
    Call {
        file: std::path::PathBuf,
        #[arg(long)]
        user: String,
        #[arg(long, conflicts_with = "key", required_unless_present = "key")]
        password: Option<String>,
        /// A public key file (authorized_keys form, e.g. id_ed25519.pub).
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        /// The plugin's configuration (its `config:` block): JSON text, or @FILE for a JSON file.
        #[arg(long)]
        plugin_config: Option<String>,
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
        PluginCommand::Wit { api } => {
            print!("{}", if api == "0.1" { WIT_V0_1 } else { WIT });
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
        PluginCommand::Call {
            file,
            user,
            password,
            key,
            plugin_config,
        } => match call(&file, &user, password, key, plugin_config) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(2),
            Err(e) => {
                eprintln!("{}: {e:#}", file.display());
                ExitCode::FAILURE
            }
        },
    }
}

/// Runs one password or public-key call; true if the plugin let the user in.
fn call(
    file: &Path,
    user: &str,
    password: Option<String>,
    key: Option<std::path::PathBuf>,
    config: Option<String>,
) -> anyhow::Result<bool> {
    use crate::plugin::{AuthOutcome, ConnectionInfo};
    let config: serde_json::Value = match config.as_deref() {
        None => serde_json::json!({}),
        Some(text) => {
            let text = match text.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)?,
                None => text.to_string(),
            };
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--plugin-config: {e}"))?
        }
    };
    let settings: PluginSettings = serde_json::from_value(serde_json::json!({
        "plugin": file.to_string_lossy(),
        "config": config,
    }))?;
    let runtime = PluginRuntime::new(default_cache_dir())?;
    let plugin = runtime.load_authenticator("call", &settings)?;
    let conn = ConnectionInfo {
        connection_id: hex::encode(rand::random::<[u8; 16]>()),
        remote_address: "127.0.0.1:22".into(),
        client_version: "SSH-2.0-containerssh-plugin-call".into(),
        username: user.to_string(),
    };
    // The key file is read before the runtime starts (no file I/O on its workers).
    let public_key = match &key {
        Some(path) => Some(
            std::fs::read_to_string(path)?
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        None => None,
    };
    let async_runtime = tokio::runtime::Runtime::new()?;
    let outcome = match (&password, &public_key) {
        (Some(p), _) => async_runtime.block_on(plugin.password(&conn, p.as_bytes())),
        (None, Some(k)) => async_runtime.block_on(plugin.public_key(&conn, k)),
        (None, None) => anyhow::bail!("give --password or --key"),
    };
    let outcome = match outcome {
        AuthOutcome::Success(grant) => {
            let authorized = async_runtime.block_on(plugin.authorize(&conn, &grant));
            match authorized {
                AuthOutcome::Success(final_grant) => AuthOutcome::Success(final_grant),
                other => other,
            }
        }
        other => other,
    };
    Ok(match outcome {
        AuthOutcome::Success(grant) => {
            println!("success: user {}", grant.authenticated_username);
            let secret = |k: &str| grant.sensitive.iter().any(|s| s == k);
            for (k, v) in &grant.metadata {
                println!(
                    "  metadata {k} = {}",
                    if secret(k) { "<sensitive>" } else { v }
                );
            }
            for (k, v) in &grant.environment {
                println!(
                    "  environment {k} = {}",
                    if secret(k) { "<sensitive>" } else { v }
                );
            }
            for (path, content) in &grant.files {
                println!("  file {path} ({} bytes)", content.len());
            }
            true
        }
        AuthOutcome::Failure(reason) => {
            println!("failure: {reason}");
            false
        }
        AuthOutcome::Unsupported => {
            println!("unsupported: the plugin does not handle this method");
            false
        }
        AuthOutcome::Unavailable(reason) => {
            println!("unavailable: {reason}");
            false
        }
        AuthOutcome::Overloaded(o) => anyhow::bail!("{o}"),
        AuthOutcome::Error(e) => return Err(e.context("the plugin failed")),
    })
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
        "a component for world {world}: imports and exports check out, one trial instance fits its memory limit; compiled and cached in {} ms",
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
