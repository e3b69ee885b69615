//! The same authentication plugin written in Rust (the built-in static-users), Python
//! (examples/plugins/python-auth) and C (examples/plugins/c): per-call cost of a public-key
//! check (a fresh sandboxed instance per call, two config lookups, a string comparison), the
//! first load (compilation) and a load from the compilation cache. Ratios are against Rust,
//! measured in the same run, calls interleaved.
//!
//!   cargo bench -p containerssh --bench plugin_languages
//!
//! Needs what tests/run.sh installs (componentize-py; clang, wasi-libc and wit-bindgen).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use containerssh::plugin::{
    AuthOutcome, AuthenticatorPlugin, ConnectionInfo, PluginRuntime, PluginSettings,
};
use serde_json::json;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Runs an example's build script, which writes the component to `out`.
fn build(script: &str, args: &[&str], out: &Path) -> String {
    let status = Command::new(workspace().join(script))
        .args(args)
        .arg(out)
        .env("CONTAINERSSH", env!("CARGO_BIN_EXE_containerssh"))
        .status()
        .expect("build script");
    assert!(status.success(), "{script} failed");
    out.to_string_lossy().into_owned()
}

fn settings(plugin: &str) -> PluginSettings {
    serde_json::from_value(json!({
        "plugin": plugin,
        "config": {"users": {"alice": {"authorizedKeys": [format!("{KEY} alice@laptop")]}}},
    }))
    .expect("settings")
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let out_dir = workspace().join("target/examples");
    std::fs::create_dir_all(&out_dir).expect("target/examples");
    let languages = [
        ("rust", "builtin:static-users".to_string()),
        (
            "python",
            build(
                "examples/plugins/python-auth/build.sh",
                &[],
                &out_dir.join("python-auth.wasm"),
            ),
        ),
        (
            "c",
            build(
                "examples/plugins/c/build.sh",
                &["auth"],
                &out_dir.join("c-auth.wasm"),
            ),
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let conn = ConnectionInfo {
        connection_id: "0123456789abcdef0123456789abcdef".into(),
        remote_address: "127.0.0.1:40000".into(),
        client_version: "SSH-2.0-bench".into(),
        username: "alice".into(),
    };

    // Loads: into an empty cache (compiles), then from it (what a restart costs).
    let mut plugins: Vec<(&str, AuthenticatorPlugin)> = Vec::new();
    let mut loads = Vec::new();
    for (name, plugin) in &languages {
        let cache = tempfile::tempdir().expect("cache dir");
        let runtime = PluginRuntime::new(Some(cache.path().to_path_buf())).expect("runtime");
        let start = Instant::now();
        runtime
            .load_authenticator("auth", &settings(plugin))
            .expect("first load");
        let first = start.elapsed();
        let runtime = PluginRuntime::new(Some(cache.path().to_path_buf())).expect("runtime");
        let start = Instant::now();
        let loaded = runtime
            .load_authenticator("auth", &settings(plugin))
            .expect("cached load");
        loads.push((name, first, start.elapsed()));
        plugins.push((name, loaded));
    }

    // Calls, interleaved so that a busy moment of the machine hits every language alike.
    let n = 300;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); plugins.len()];
    rt.block_on(async {
        for (_, plugin) in &plugins {
            for _ in 0..20 {
                let _ = plugin.public_key(&conn, KEY).await;
            }
        }
        for _ in 0..n {
            for (i, (name, plugin)) in plugins.iter().enumerate() {
                let start = Instant::now();
                let outcome = plugin.public_key(&conn, KEY).await;
                times[i].push(start.elapsed());
                assert!(
                    matches!(outcome, AuthOutcome::Success(_)),
                    "{name}: {outcome:?}"
                );
            }
        }
    });
    let medians: Vec<f64> = times
        .iter_mut()
        .map(|t| median(t).as_secs_f64() * 1e6)
        .collect();
    println!("public-key check, median of {n} calls (ratio: time against Rust's):");
    for ((name, _), us) in plugins.iter().zip(&medians) {
        println!("  {name:7} {us:9.1} µs/call  ratio {:.2}", us / medians[0]);
    }
    println!("load (compile into an empty cache / from the cache):");
    for (name, first, cached) in loads {
        println!(
            "  {name:7} {:9.1} ms / {:7.1} ms",
            millis(first),
            millis(cached)
        );
    }
}
