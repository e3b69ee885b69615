//! bcrypt (cost 10) password checks: the static-users plugin (a fresh sandboxed instance per
//! call, bcrypt compiled to WebAssembly) against the `bcrypt` crate natively, in the same
//! process; then 100 logins (check and authorization) at once through the plugin, as 100
//! clients arriving together make them, with one slot per core against 32 slots, at cost 10
//! and at cost 12 (where 32 calls sharing 2 cores run past the 5 s call deadline).
//!
//! Last, the 100 logins at cost 10 against the same 100 verifications done natively in one
//! process on one thread per core (logins/s ratio; target at least 0.7). Plugins of API 0.2
//! check hashes through the gateway's native `password-hash` import, as static-users does.
//!
//!   cargo bench -p containerssh --bench password_hash
use std::time::{Duration, Instant};

use containerssh::plugin::{
    AuthOutcome, AuthenticatorPlugin, ConnectionInfo, Credentials, PluginRuntime, PluginSettings,
};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";
const COST: u32 = 10;
const CONCURRENT: usize = 100;

fn conn(i: usize) -> ConnectionInfo {
    ConnectionInfo {
        connection_id: format!("{i:032x}"),
        remote_address: "127.0.0.1:40000".into(),
        client_version: "SSH-2.0-bench".into(),
        username: "alice".into(),
    }
}

fn load(runtime: &std::sync::Arc<PluginRuntime>, hash: &str, slots: u32) -> AuthenticatorPlugin {
    let settings: PluginSettings = serde_json::from_value(json!({
        "plugin": "builtin:static-users",
        "config": {"users": {"alice": {"password": hash}}},
        "maxConcurrency": slots,
    }))
    .expect("settings");
    runtime
        .load_authenticator("auth", &settings)
        .expect("plugin")
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median of `times` (sorted in place).
fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let hash = bcrypt::hash(PASSWORD, COST).expect("hash");
    let runtime = PluginRuntime::new(None).expect("runtime");
    let plugin = load(&runtime, &hash, 1);

    // One check at a time: the cost of bcrypt itself, in WebAssembly and natively.
    let n = 20;
    rt.block_on(async {
        for _ in 0..3 {
            let _ = plugin.password(&conn(0), PASSWORD.as_bytes()).await;
        }
    });
    let mut wasm = Vec::new();
    let mut native = Vec::new();
    for i in 0..n {
        // Interleaved, so that a busy moment of the machine hits both alike.
        let start = Instant::now();
        let outcome = rt.block_on(plugin.password(&conn(i), PASSWORD.as_bytes()));
        assert!(matches!(outcome, AuthOutcome::Success(_)), "{outcome:?}");
        wasm.push(start.elapsed());
        let start = Instant::now();
        assert!(bcrypt::verify(PASSWORD, &hash).expect("verify"));
        native.push(start.elapsed());
    }
    let (wasm, native) = (median(&mut wasm), median(&mut native));
    println!(
        "bcrypt cost {COST}, one check at a time (median of {n}): plugin {:.1} ms  native {:.1} ms  ratio {:.2}",
        millis(wasm),
        millis(native),
        wasm.as_secs_f64() / native.as_secs_f64()
    );

    // 100 logins at once, as 100 clients arriving together make them.
    let hash_12 = bcrypt::hash(PASSWORD, 12).expect("hash");
    let mut plugin_cost_10 = None;
    for (cost, hash) in [(COST, &hash), (12, &hash_12)] {
        for slots in [u32::try_from(cores).unwrap_or(2).max(2), 32] {
            let plugin = load(&runtime, hash, slots);
            let started = Instant::now();
            let results = rt.block_on(async {
                let calls = (0..CONCURRENT).map(|i| {
                    let plugin = plugin.clone();
                    tokio::spawn(async move {
                        let t = Instant::now();
                        let password = Credentials::Password(PASSWORD.as_bytes());
                        let outcome = plugin.login(&conn(i), password).await;
                        (matches!(outcome, AuthOutcome::Success(_)), t.elapsed())
                    })
                });
                futures::future::join_all(calls).await
            });
            let total = started.elapsed();
            let mut times: Vec<Duration> = Vec::new();
            let mut ok = 0;
            for (success, took) in results.into_iter().flatten() {
                ok += usize::from(success);
                times.push(took);
            }
            if cost == COST && plugin_cost_10.is_none() {
                plugin_cost_10 = Some((ok, total));
            }
            let slowest = times.iter().max().copied().unwrap_or_default();
            let med = median(&mut times);
            println!(
                "{CONCURRENT} logins at once, cost {cost}, {slots:2} slots on {cores} cores: {ok}/{CONCURRENT} succeeded in {:.1} s  median {:.0} ms  slowest {:.0} ms",
                total.as_secs_f64(),
                millis(med),
                millis(slowest),
            );
        }
    }

    // The baseline: the same verifications natively, one thread per core.
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..cores {
            let hash = &hash;
            scope.spawn(move || {
                for _ in (t..CONCURRENT).step_by(cores) {
                    assert!(bcrypt::verify(PASSWORD, hash).expect("verify"));
                }
            });
        }
    });
    let native_total = started.elapsed();
    if let Some((ok, total)) = plugin_cost_10 {
        let plugin_rate = ok as f64 / total.as_secs_f64();
        let native_rate = CONCURRENT as f64 / native_total.as_secs_f64();
        println!(
            "{CONCURRENT} logins at once through the plugin vs {CONCURRENT} native verifications on {cores} threads: {plugin_rate:.1} vs {native_rate:.1} per second, ratio {:.2} (target >= 0.7)",
            plugin_rate / native_rate
        );
    }
}
