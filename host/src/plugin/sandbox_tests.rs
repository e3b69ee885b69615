//! The sandbox contains a hostile plugin (tests/plugins/misbehave): an endless loop hits the
//! epoch deadline, a memory bomb hits the memory cap, a panic traps, an oversized answer is
//! refused. Each is an `Error` (deny), and the same plugin keeps serving afterwards.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// The hostile plugin, built by build.rs from tests/plugins/misbehave.
fn misbehave_wasm() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins/misbehave.wasm")
}

fn plugin(mode: &str, memory_limit: u64, timeout: &str) -> AuthenticatorPlugin {
    let settings: PluginSettings = serde_json::from_value(json!({
        "plugin": misbehave_wasm().to_string_lossy(),
        "config": {"mode": mode},
        "memoryLimit": memory_limit,
        "timeout": timeout,
    }))
    .unwrap();
    PluginRuntime::new(None)
        .unwrap()
        .load_authenticator("hostile", &settings)
        .unwrap()
}

fn conn() -> ConnectionInfo {
    ConnectionInfo {
        connection_id: "feedfacefeedfacefeedfacefeedface".into(),
        remote_address: "127.0.0.1:1".into(),
        client_version: "SSH-2.0-test".into(),
        username: "mallory".into(),
    }
}

fn expect_error(outcome: AuthOutcome, what: &str) -> String {
    match outcome {
        AuthOutcome::Error(e) => format!("{e:#}"),
        other => panic!("{what}: expected a contained error, got {other:?}"),
    }
}

/// On a single-threaded runtime, so a plugin that held its thread would stop everything else.
#[tokio::test(flavor = "current_thread")]
async fn an_endless_loop_is_stopped_at_the_deadline_without_holding_the_thread() {
    let p = plugin("loop", 64 << 20, "300ms");
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let started = Instant::now();
    let err = expect_error(p.password(&conn(), b"x").await, "loop");
    let took = started.elapsed();
    ticker.abort();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "took {took:?}: {err}"
    );
    assert!(
        err.contains("deadline") || err.contains("did not answer within"),
        "{err}"
    );
    // The other task kept running while the plugin looped (it would be near 0 otherwise).
    let ticked = ticks.load(std::sync::atomic::Ordering::Relaxed);
    // (Loosely: a loaded machine delays the ticker too.)
    assert!(ticked >= 5, "only {ticked} ticks in {took:?}");
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_cap() {
    let p = plugin("memory", 32 << 20, "5s");
    let started = Instant::now();
    let err = expect_error(p.password(&conn(), b"x").await, "memory");
    // Stopped by the cap, not by the deadline.
    assert!(started.elapsed() < Duration::from_secs(4), "{err}");
    assert!(err.contains("growing memory"), "{err}");
}

#[tokio::test]
async fn a_trap_is_an_error_and_the_plugin_keeps_serving() {
    let p = plugin("trap", 64 << 20, "5s");
    let err = expect_error(p.password(&conn(), b"x").await, "trap");
    // The panic message the guest wrote to stderr explains the trap.
    assert!(err.contains("the plugin's last output"), "{err}");
    assert!(
        err.contains("stderr: ") && err.contains("deliberate trap"),
        "{err}"
    );
    // A fresh instance per call: the next call starts clean (and traps again, cleanly).
    expect_error(p.password(&conn(), b"x").await, "trap again");
    let good = plugin("allow", 64 << 20, "5s");
    assert!(matches!(
        good.password(&conn(), b"x").await,
        AuthOutcome::Success(_)
    ));
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let p = plugin("huge", 64 << 20, "5s");
    let err = expect_error(p.password(&conn(), b"x").await, "huge");
    assert!(err.contains("more than"), "{err}");
}
