//! ContainerSSH's `log.destination`: `file` (appended to) and `syslog` (one datagram per event
//! to a Unix socket such as `/dev/log`, with the configured facility and tag).
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// A gateway whose `log` section is `log`, not waited for (its log is not on standard error).
fn launch(log: Value) -> Gateway {
    Gateway::launch(json!({ "log": log }))
}

/// `ssh gw command` with the test key; its output.
fn ssh(gw: &Gateway, command: &str) -> std::process::Output {
    let mut cmd = gw.ssh();
    cmd.arg(command);
    run(cmd, b"")
}

#[test]
fn logs_go_to_a_file_as_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("containerssh.log");
    std::fs::write(&file, "an earlier line\n").expect("write");
    let gw = launch(json!({"destination": "file", "file": file, "format": "json"}));
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    wait_until("the file log", Duration::from_secs(120), || {
        read().contains("containerssh is listening")
    });
    let out = ssh(&gw, "echo to-file");
    assert!(out.status.success(), "{out:?}");
    wait_until("the login in the file log", Duration::from_secs(20), || {
        read().contains("connection accepted")
    });
    let text = read();
    // Appended, never truncated; every line after that is one JSON object.
    assert!(text.starts_with("an earlier line\n"), "{text}");
    for line in text.lines().skip(1) {
        let event: Value = serde_json::from_str(line).expect("a JSON line");
        assert!(event["level"].is_string(), "{line}");
    }
    let stderr = gw.log_text();
    assert!(!stderr.contains("containerssh is listening"), "{stderr}");
}

#[test]
fn logs_go_to_syslog_with_facility_tag_and_severity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("log");
    let receiver = UnixDatagram::bind(&socket).expect("bind a syslog socket");
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let gw = launch(json!({"destination": "syslog", "syslog": {
        "destination": socket, "facility": "local3", "tag": "cssh-test", "pid": true
    }}));
    let pid = gw.pid();
    let mut seen: Vec<String> = Vec::new();
    let receive_until = |needle: &str, seen: &mut Vec<String>| {
        let start = Instant::now();
        let mut buf = vec![0u8; 65536];
        while !seen.iter().any(|m| m.contains(needle)) {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no {needle:?} in {seen:?}"
            );
            if let Ok(n) = receiver.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    receive_until("containerssh is listening", &mut seen);
    let listening = seen
        .iter()
        .find(|m| m.contains("containerssh is listening"))
        .expect("seen");
    // local3 (19) * 8 + informational (6) = 158.
    assert!(
        listening.starts_with(&format!("<158>cssh-test[{pid}]: ")),
        "{listening}"
    );
    assert!(!listening.ends_with('\n'), "{listening:?}");

    let out = ssh(&gw, "echo to-syslog");
    assert!(out.status.success(), "{out:?}");
    receive_until("connection accepted", &mut seen);
    // The test configuration logs at debug: severity 7, so 159.
    receive_until("connection cleaned up", &mut seen);
    let cleaned = seen
        .iter()
        .find(|m| m.contains("connection cleaned up"))
        .expect("seen");
    assert!(cleaned.starts_with("<159>"), "{cleaned}");
    let stderr = gw.log_text();
    assert!(!stderr.contains("containerssh is listening"), "{stderr}");
}

#[test]
fn a_log_destination_that_cannot_be_opened_stops_the_start_with_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing: &Path = &dir.path().join("no-such-dir/containerssh.log");
    let mut gw = launch(json!({"destination": "file", "file": missing}));
    let status = gw.wait_exit(Duration::from_secs(60)).expect("exits");
    assert!(!status.success());
    let stderr = gw.log_text();
    assert!(stderr.contains("log.file: cannot open"), "{stderr}");

    let mut gw = launch(json!({"destination": "syslog", "syslog": {
        "destination": dir.path().join("no-socket")
    }}));
    let status = gw.wait_exit(Duration::from_secs(60)).expect("exits");
    assert!(!status.success());
    let stderr = gw.log_text();
    assert!(
        stderr.contains("log.syslog.destination: cannot connect"),
        "{stderr}"
    );
}
