//! Listeners inside the container whose connections come back to the client, with the real
//! OpenSSH client and asyncssh: `ssh -R` (TCP, and a Unix socket through
//! streamlocal-forward), port 0 chosen by the gateway, cancel, X11, all off unless the
//! security policy turns them on. Agent forwarding is in the conformance suite.
use std::process::{Command, Stdio};

use serde_json::json;

use crate::harness::*;

/// The script run inside: a random file through the forwarded socket (`socat` address) and
/// back; prints the file's digest, then what came back's.
fn round_trip_inside(socat_address: &str) -> String {
    format!(
        "head -c 8388608 /dev/urandom > /tmp/d && sha256sum < /tmp/d && \
         socat -t30 {socat_address},retry=100,interval=0.2 - < /tmp/d | sha256sum"
    )
}

fn digests(out: &str) -> Vec<String> {
    out.split_whitespace()
        .filter(|w| w.len() == 64)
        .map(str::to_string)
        .collect()
}

#[test]
fn dash_r_brings_tcp_and_unix_socket_connections_from_the_container_back_to_the_client() {
    let gw = Gateway::start(json!({"security": {"forwarding": {
        "reverseForwardingMode": "enable", "socketListenMode": "enable"}}}));
    let echo_port = echo_tcp();
    let dir = tempfile::tempdir().expect("tempdir");
    let local_socket = dir.path().join("echo.sock");
    echo_unix(&local_socket);
    let script = format!(
        "{} && {}",
        round_trip_inside("TCP:127.0.0.1:9100"),
        round_trip_inside("UNIX-CONNECT:/tmp/app.sock")
    );
    let out = gw
        .ssh()
        .args(["-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("9100:127.0.0.1:{echo_port}"))
        .arg("-R")
        .arg(format!("/tmp/app.sock:{}", local_socket.display()))
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs");
    let printed = text(&out.stdout);
    let sums = digests(&printed);
    assert!(
        out.status.success() && sums.len() == 4,
        "{printed}\n{}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    assert_eq!(sums[0], sums[1], "TCP through -R differs");
    assert_eq!(sums[2], sums[3], "Unix socket through -R differs");
    let log = gw.log_text();
    assert!(log.contains("forwarded-tcpip"), "{log}");
    assert!(log.contains("forwarded-streamlocal"), "{log}");
    gw.assert_no_containers();
}

#[test]
fn asyncssh_gets_a_port_for_port_zero_many_connections_at_once_and_cancels() {
    let gw =
        Gateway::start(json!({"security": {"forwarding": {"reverseForwardingMode": "enable"}}}));
    let script = workspace().join("tests/e2e/remote_forward_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(gw.port.to_string())
        .arg(&shared().key)
        .arg(USER)
        .output()
        .expect("python3 runs");
    let printed = text(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}\n{}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    assert!(printed.contains("four connections ok"), "{printed}");
    assert!(printed.contains("cancel ok"), "{printed}");
    gw.assert_no_containers();
}

#[test]
fn listeners_and_the_agent_are_off_by_default() {
    let gw = Gateway::start(json!({}));
    let out = gw
        .ssh()
        .args(["-o", "ExitOnForwardFailure=yes", "-R", "9100:127.0.0.1:9"])
        .arg("echo should-not-run")
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("remote port forwarding failed"),
        "{}",
        text(&out.stderr)
    );
    let out = gw
        .ssh()
        .args([
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "/tmp/x.sock:/tmp/y.sock",
        ])
        .arg("echo should-not-run")
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut agent, agent_socket, _) = start_agent(dir.path());
    let out = gw
        .ssh()
        .arg("-A")
        .arg("echo \"agent=[$SSH_AUTH_SOCK]\"")
        .env("SSH_AUTH_SOCK", &agent_socket)
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs");
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        text(&out.stdout).contains("agent=[]"),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let log = gw.log_text();
    assert!(
        log.contains("request denied by the security policy"),
        "{log}"
    );
    assert!(log.contains("auth-agent") || log.contains("agent"), "{log}");
    gw.assert_no_containers();
}

/// `ssh -X` and `ssh -Y`: the session's DISPLAY reaches an X server on the client's side (Xvfb),
/// through the cookie the client's ssh checks (written to XAUTHORITY by the gateway).
#[test]
fn x11_forwarding_reaches_the_clients_x_server() {
    let gw = Gateway::start(json!({"security": {"forwarding": {"x11ForwardingMode": "enable"}}}));
    let dir = tempfile::tempdir().expect("tempdir");
    let display = 90 + (std::process::id() % 9) as u16;
    let xauthority = dir.path().join("Xauthority");
    // The client's X server, with a real cookie (MIT-MAGIC-COOKIE-1) known to xauth.
    let cookie: String = (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let add = Command::new("xauth")
        .args(["-f"])
        .arg(&xauthority)
        .args(["add", &format!(":{display}"), "MIT-MAGIC-COOKIE-1", &cookie])
        .output()
        .expect("xauth");
    assert!(add.status.success(), "{}", text(&add.stderr));
    let mut xvfb = Command::new("Xvfb")
        .arg(format!(":{display}"))
        .arg("-auth")
        .arg(&xauthority)
        .args(["-nolisten", "tcp", "-screen", "0", "640x480x24"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb");
    let socket = std::path::PathBuf::from(format!("/tmp/.X11-unix/X{display}"));
    let start = std::time::Instant::now();
    // Listening, not merely there: an earlier run's Xvfb may have left a stale socket file.
    while std::os::unix::net::UnixStream::connect(&socket).is_err()
        && start.elapsed() < std::time::Duration::from_secs(20)
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for flag in ["-Y", "-X"] {
        let out = gw
            .ssh()
            .arg(flag)
            .arg("echo display=$DISPLAY; xdpyinfo | grep -E 'name of display|dimensions'")
            .env("DISPLAY", format!(":{display}"))
            .env("XAUTHORITY", &xauthority)
            .stdin(Stdio::null())
            .output()
            .expect("ssh runs");
        let printed = text(&out.stdout);
        assert!(
            out.status.success()
                && printed.contains("display=localhost:10.0")
                && printed.contains("640x480"),
            "{flag}: {printed}\n{}\n{}",
            text(&out.stderr),
            gw.log_text()
        );
    }
    let _ = xvfb.kill();
    let _ = xvfb.wait();
    assert!(gw.log_text().contains("kind=\"x11\""), "{}", gw.log_text());
    gw.assert_no_containers();
}
