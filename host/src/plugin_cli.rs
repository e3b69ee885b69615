//! `containerssh plugin ...`: what a plugin author needs without a gateway: the WIT this binary
//! speaks, a check of a compiled plugin (the same loading the gateway does at start, with
//! messages that say how to fix what is wrong), one call, and the wrapping of a core module
//! (what C and other wasi-libc toolchains make) into a component.
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
    /// Wrap a core WebAssembly module built for WASI preview 1 (clang with wasi-libc, with the
    /// `*_component_type.o` that wit-bindgen generates linked in) into a component the gateway
    /// loads. The WASI preview 1 adapter of the gateway's own runtime is built in.
    Componentize {
        module: std::path::PathBuf,
        /// Where to write the component.
        #[arg(short, long)]
        output: std::path::PathBuf,
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
        PluginCommand::Componentize { module, output } => match componentize(&module, &output) {
            Ok(size) => {
                println!("{}: a component of {size} bytes", output.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e:#}", module.display());
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
/// Wraps a core module into a component: its WIT world comes from the component-type custom
/// section wit-bindgen's generators leave in it, its WASI preview 1 imports go through the
/// adapter of the same wasmtime release the gateway runs. Returns the component's size.
fn componentize(module: &Path, output: &Path) -> anyhow::Result<usize> {
    use anyhow::Context;
    let bytes = std::fs::read(module)?;
    match kind(&bytes) {
        Err(_) if bytes.starts_with(b"\0asm") && bytes.get(4..8) == Some(&[1, 0, 0, 0]) => {}
        Ok(()) => anyhow::bail!("already a component: load it as it is"),
        Err(e) => anyhow::bail!(e),
    }
    if !has_world(&bytes)? {
        anyhow::bail!(
            "the module carries no plugin world: link the `*_component_type.o` that \
             `wit-bindgen c --world ...` generated into it"
        );
    }
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&bytes)?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
        .context("the module cannot be made into a component")?;
    std::fs::write(output, &component)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(component.len())
}

/// Whether a core module has the custom section in which wit-bindgen's generators record the
/// world it was built for (`component-type...`).
fn has_world(module: &[u8]) -> anyhow::Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::CustomSection(section) = payload? {
            if section.name().starts_with("component-type") {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// What kind of file it is, from its first bytes.
fn kind(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file (it does not start with \\0asm)".into());
    }
    // The version field: 1 for a core module, 0x0d with layer 1 for a component.
    match bytes[4..8] {
        [1, 0, 0, 0] => Err(
            "a core WebAssembly module, not a component. The gateway loads components \
             (wasm32-wasip2). Build for wasm32-wasip2, or wrap the module: \
             `containerssh plugin componentize MODULE.wasm -o plugin.wasm`"
                .into(),
        ),
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
            core.contains("core WebAssembly module")
                && core.contains("containerssh plugin componentize")
        );
        assert!(kind(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn componentize_explains_what_it_cannot_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.wasm");
        let empty = dir.path().join("empty.wasm");
        std::fs::write(&empty, b"\0asm\x01\0\0\0").unwrap();
        let e = format!("{:#}", componentize(&empty, &out).unwrap_err());
        assert!(
            e.contains("no plugin world") && e.contains("component_type.o"),
            "{e}"
        );
        let text = dir.path().join("plugin.c");
        std::fs::write(&text, b"int main() {}").unwrap();
        let e = format!("{:#}", componentize(&text, &out).unwrap_err());
        assert!(e.contains("not a WebAssembly file"), "{e}");
        let component = dir.path().join("component.wasm");
        std::fs::write(&component, b"\0asm\x0d\0\x01\0").unwrap();
        let e = format!("{:#}", componentize(&component, &out).unwrap_err());
        assert!(e.contains("already a component"), "{e}");
        assert!(!out.exists());
    }
}
