//! The SSH proxy backend's own behaviour (what every backend does is in the conformance suite,
//! which runs it against OpenSSH's sshd): logging in upstream with a password and the client's
//! own user name, and refusing a backing server whose host key is not listed. The backing
//! server here is a second gateway (Docker backend, static-users with a password).
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::*;

fn proxy_to(upstream: &Gateway, fingerprint: &str) -> Value {
    json!({
        "backend": "sshproxy",
        "sshproxy": {
            "server": "127.0.0.1",
            "port": upstream.port,
            "usernamePassThrough": true,
            "password": PASSWORD,
            "allowedHostKeyFingerprints": [fingerprint],
            "timeout": "20s"
        }
    })
}

#[test]
fn the_gateway_logs_in_upstream_with_a_password_and_the_clients_name() {
    let upstream = Gateway::start(json!({}));
    let proxy = Gateway::start(proxy_to(
        &upstream,
        &key_fingerprint(&upstream.dir.path().join("host_ed25519")),
    ));
    let mut ssh = proxy.ssh();
    // FROM_AUTH is what the upstream gateway's auth plugin grants its user demo.
    ssh.arg("echo $FROM_AUTH; id -u; cat; exit 5");
    let out = run(ssh, b"through two gateways\n");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{out:?}\n{}\n{}",
        proxy.log_text(),
        upstream.log_text()
    );
    assert_eq!(text(&out.stdout), "granted\n1000\nthrough two gateways\n");
    let upstream_log = upstream.log_text();
    assert!(
        upstream_log.contains("method=\"password\"") && upstream_log.contains("user=\"demo\""),
        "{upstream_log}"
    );
    assert!(proxy.log_text().contains("backing connection made"));
    // The client's disconnect closes the backing connection, which removes its container.
    upstream.assert_no_containers();
}

/// A backing server that goes away (killed outright) ends the client's connection with a
/// message, as ContainerSSH does, instead of leaving it open with nothing behind it: here an
/// OpenSSH ControlMaster connection whose session already ended (its own session's channel
/// just closes, with no exit status).
#[test]
fn the_client_is_disconnected_when_the_backing_server_goes_away() {
    let mut upstream = Gateway::start(json!({}));
    let proxy = Gateway::start(proxy_to(
        &upstream,
        &key_fingerprint(&upstream.dir.path().join("host_ed25519")),
    ));
    let control = proxy.dir.path().join("cm.sock");
    let cp = format!("ControlPath={}", control.display());
    let mut master = proxy.ssh();
    master
        .args(["-o", "ControlMaster=yes", "-o", &cp, "-N"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut master = master.spawn().expect("ssh starts");
    wait_until(
        "the control socket",
        std::time::Duration::from_secs(20),
        || control.exists(),
    );
    // A session through the master makes the backing connection.
    let mut session = proxy.ssh();
    session.args(["-o", &cp]).arg("echo through");
    let out = run(session, b"");
    assert_eq!(
        text(&out.stdout),
        "through\n",
        "{out:?}\n{}",
        proxy.log_text()
    );
    let container = upstream.wait_for_container();
    signal(upstream.pid(), "KILL");
    let _ = upstream.wait_exit(std::time::Duration::from_secs(10));
    let status = wait_timeout(&mut master, std::time::Duration::from_secs(30));
    // What the killed gateway left: its container and its direct-start directory.
    let _ = Command::new("docker")
        .args(["rm", "-f", &container])
        .output();
    let _ = std::fs::remove_dir_all(
        std::path::Path::new("/run/containerssh").join(upstream.instance().replace(':', "_")),
    );
    let Some(status) = status else {
        let _ = master.kill();
        panic!("the client stayed connected:\n{}", proxy.log_text());
    };
    assert!(!status.success());
    let mut stderr = String::new();
    if let Some(mut e) = master.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(
        stderr.contains("the backing server closed the connection"),
        "{stderr}\n{}",
        proxy.log_text()
    );
    assert!(
        proxy.log_text().contains("the backing connection ended"),
        "{}",
        proxy.log_text()
    );
}

#[test]
fn a_backing_server_with_an_unlisted_host_key_is_refused() {
    let upstream = Gateway::start(json!({}));
    let proxy = Gateway::start(proxy_to(
        &upstream,
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ));
    let mut ssh = proxy.ssh();
    ssh.arg("echo should-not-run");
    let out = run(ssh, b"");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(!text(&out.stdout).contains("should-not-run"));
    let log = proxy.log_text();
    assert!(
        log.contains("not in sshproxy.allowedHostKeyFingerprints"),
        "{log}"
    );
    // Nothing logged in upstream.
    assert!(!upstream.log_text().contains("authentication succeeded"));
    upstream.assert_no_containers();
}

#[test]
fn validate_names_every_missing_sshproxy_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "auth:\n  plugin: builtin:static-users\nbackend: sshproxy\nsshproxy:\n  port: 0\n  allowedHostKeyFingerprints: [\"MD5:00\"]\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("validate")
        .arg(&path)
        .output()
        .expect("validate runs");
    assert!(!out.status.success());
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for key in [
        "sshproxy.server",
        "sshproxy.port",
        "sshproxy.username",
        "password or privateKey",
        "MD5:00",
    ] {
        assert!(printed.contains(key), "{key} missing:\n{printed}");
    }
}
