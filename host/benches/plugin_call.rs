//! Per-call cost of the static-users auth plugin (fresh sandboxed instance per call) against
//! the same check done natively in Rust, in the same process.
//!
//!   cargo bench -p containerssh --bench plugin_call
//!
//! Target: plugin overhead (plugin − native) under 100 µs per call.
use std::time::{Duration, Instant};

use containerssh::plugin::{AuthOutcome, ConnectionInfo, PluginRuntime, PluginSettings};
use serde_json::json;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
const PASSWORD: &str = "open sesame";

/// The same work the plugin does for one call: parse its config, find the user, check.
fn native_public_key(config_json: &str, user: &str, offered: &str) -> bool {
    let config: serde_json::Value = serde_json::from_str(config_json).expect("config");
    let identity = |k: &str| {
        let mut p = k.split_whitespace();
        (p.next().map(str::to_string), p.next().map(str::to_string))
    };
    config["users"][user]["authorizedKeys"]
        .as_array()
        .is_some_and(|keys| {
            keys.iter()
                .filter_map(|k| k.as_str())
                .any(|k| identity(k) == identity(offered))
        })
}

fn native_password(config_json: &str, user: &str, password: &[u8]) -> bool {
    let config: serde_json::Value = serde_json::from_str(config_json).expect("config");
    config["users"][user]["password"]
        .as_str()
        .is_some_and(|h| bcrypt::verify(password, h).unwrap_or(false))
}

fn per_call(n: u32, total: Duration) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let hash = bcrypt::hash(PASSWORD, 4).expect("hash");
    let config = json!({"users": {"alice": {"password": hash, "authorizedKeys": [format!("{KEY} alice@laptop")]}}});
    let config_json = config.to_string();
    let settings: PluginSettings =
        serde_json::from_value(json!({"plugin": "builtin:static-users", "config": config}))
            .expect("settings");
    let runtime = PluginRuntime::new(None).expect("runtime");
    let plugin = runtime
        .load_authenticator("auth", &settings)
        .expect("plugin");
    let conn = ConnectionInfo {
        connection_id: "0123456789abcdef0123456789abcdef".into(),
        remote_address: "127.0.0.1:40000".into(),
        client_version: "SSH-2.0-bench".into(),
        username: "alice".into(),
    };

    let n = 3000;
    rt.block_on(async {
        for _ in 0..200 {
            let _ = plugin.public_key(&conn, KEY).await;
        }
        let start = Instant::now();
        for _ in 0..n {
            assert!(matches!(plugin.public_key(&conn, KEY).await, AuthOutcome::Success(_)));
        }
        let wasm_key = per_call(n, start.elapsed());
        let start = Instant::now();
        for _ in 0..n {
            assert!(native_public_key(&config_json, "alice", KEY));
        }
        let native_key = per_call(n, start.elapsed());

        let m = 300;
        let start = Instant::now();
        for _ in 0..m {
            assert!(matches!(plugin.password(&conn, PASSWORD.as_bytes()).await, AuthOutcome::Success(_)));
        }
        let wasm_pw = per_call(m, start.elapsed());
        let start = Instant::now();
        for _ in 0..m {
            assert!(native_password(&config_json, "alice", PASSWORD.as_bytes()));
        }
        let native_pw = per_call(m, start.elapsed());

        println!("public-key check: plugin {wasm_key:8.1} µs/call  native {native_key:8.1} µs/call  ratio {:.1}  overhead {:.1} µs (target < 100)", wasm_key / native_key, wasm_key - native_key);
        println!("password (bcrypt cost 4): plugin {wasm_pw:8.1} µs/call  native {native_pw:8.1} µs/call  ratio {:.2}  overhead {:.1} µs", wasm_pw / native_pw, wasm_pw - native_pw);
    });
}
