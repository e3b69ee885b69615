use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

#[test]
fn container_is_removed_when_the_client_vanishes() {
    let gw = Gateway::start(json!({}));
    let mut child = gw.spawn_ssh("sleep 300", false);
    gw.wait_for_container();
    // SIGKILL: the client sends nothing more, the TCP connection just closes.
    child.kill().expect("kill ssh");
    let _ = child.wait();
    gw.assert_no_containers();
    assert!(gw.log_text().contains("container removed"));
}

#[test]
fn orphans_of_an_earlier_run_are_reaped_at_start() {
    let host = hostname::get().unwrap().to_string_lossy().into_owned();
    assert_orphan_is_reaped(|port| format!("{host}_127.0.0.1:{port}"), json!({}));
}

/// A set `instanceId` replaces the host-name default, so a gateway that moves to another host
/// (or a pod that gets a new name) still finds what it left.
#[test]
fn orphans_are_found_by_a_configured_instance_id() {
    assert_orphan_is_reaped(
        |_| "gateway-west-1".into(),
        json!({"instanceId": "gateway-west-1"}),
    );
}

/// Plants a container labelled as the gateway's (instance id from its port) before it
/// starts; the gateway must remove it.
fn assert_orphan_is_reaped(instance: impl Fn(u16) -> String, overrides: serde_json::Value) {
    let mut orphan = String::new();
    let gw = Gateway::start_with(
        |port, _| {
            let out = Command::new("docker")
                .args(["run", "-d", "--network", "none"])
                .args(["--label", "containerssh.managed=true", "--label"])
                .arg(format!("containerssh.instance={}", instance(port)))
                .args([IMAGE, "sleep", "600"])
                .output()
                .expect("docker run");
            assert!(out.status.success(), "{out:?}");
            orphan = text(&out.stdout).trim().to_string();
        },
        overrides,
    );
    assert!(!orphan.is_empty());
    gw.wait_for_log("removed orphaned container", Duration::from_secs(30));
    let left = docker_ids(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("id={orphan}"),
    ]);
    assert!(left.is_empty(), "orphan still there");
}

#[test]
fn sigterm_lets_running_sessions_finish_then_removes_everything() {
    let mut gw = Gateway::start(json!({"ssh": {"shutdownTimeout": "30s"}}));
    let child = gw.spawn_ssh("sleep 3; echo finished-after-sigterm", true);
    gw.wait_for_container();
    let status = gw.terminate();
    let out = child.wait_with_output().expect("ssh output");
    assert_eq!(text(&out.stdout), "finished-after-sigterm\n", "{out:?}");
    assert!(status.success(), "gateway exit status {status:?}");
    gw.assert_no_containers();
    assert!(
        gw.log_text().contains("no containers left"),
        "{}",
        gw.log_text()
    );
}

#[test]
fn sigterm_disconnects_sessions_that_outlive_the_shutdown_timeout() {
    let mut gw = Gateway::start(json!({"ssh": {"shutdownTimeout": "1s"}}));
    let child = gw.spawn_ssh("sleep 300", true);
    gw.wait_for_container();
    let started = Instant::now();
    let status = gw.terminate();
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(60));
    let out = child.wait_with_output().expect("ssh output");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    gw.assert_no_containers();
}
