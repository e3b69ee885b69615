use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::json;

use crate::harness::*;

pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// The value of the sample `name` (with its labels, as printed) in a metrics page.
pub(crate) fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_and_health_endpoints_report_what_happened() {
    let mport = free_port();
    let hport = free_port();
    let gw = Gateway::start(json!({
        "metrics": {"enable": true, "listen": format!("127.0.0.1:{mport}"), "path": "/metrics"},
        "health": {"enable": true, "listen": format!("127.0.0.1:{hport}")}
    }));
    let (status, body) = http_get(hport, "/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("ok\n"));

    let mut ok = gw.ssh();
    ok.arg("echo hi");
    assert!(run(ok, b"").status.success());
    let mut bad = gw.ssh_password(USER, "wrong");
    bad.arg("true");
    let _ = run(bad, b"");

    let (status, metrics) = http_get(mport, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("containerssh_connections_total 2"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"containerssh_auth_attempts_total{method="publickey",result="Success"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"containerssh_auth_attempts_total{method="password",result="Failure"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("containerssh_container_start_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("containerssh_time_to_first_byte_seconds_count 1"),
        "{metrics}"
    );
    // One auth plugin call per login.
    assert_eq!(
        metric(&metrics, "containerssh_plugin_call_seconds_count"),
        Some(2.0),
        "{metrics}"
    );
    let (status, _) = http_get(mport, "/nothing");
    assert_eq!(status, 404);
    gw.assert_no_containers();
}

/// Each webhook request is timed on its own; failures of the backend are counted; and the
/// health check turns 503 as soon as shutdown begins.
#[test]
fn webhook_requests_backend_errors_and_shutdown_show_in_metrics_and_health() {
    let port = free_port();
    let (_auth, mut gw) = crate::webhook::gateway_with_auth_server(
        json!({"pubkey": false}),
        json!({
            "metrics": {"enable": true, "listen": format!("127.0.0.1:{port}")},
            "health": {"enable": true, "listen": format!("127.0.0.1:{port}")},
            "ssh": {"shutdownTimeout": "10s"},
            // A shell in a container that cannot start: a backend error.
            "docker": {"execution": {"imagePullPolicy": "Never", "container": {"image": "containerssh-test/absent:1"}}}
        }),
    );
    let mut ssh = gw.ssh_password(USER, PASSWORD);
    ssh.arg("true");
    assert_eq!(run(ssh, b"").status.code(), Some(255));
    let (_, page) = http_get(port, "/metrics");
    assert_eq!(
        metric(
            &page,
            r#"containerssh_plugin_http_request_seconds_count{plugin="auth",outcome="answered"}"#
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric(
            &page,
            r#"containerssh_backend_errors_total{stage="container_start"}"#
        ),
        Some(1.0),
        "{page}"
    );
    // Shutdown with an unauthenticated connection still open: health says 503 meanwhile.
    let idle = std::net::TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    gw.wait_for_log("connection accepted", std::time::Duration::from_secs(10));
    let pid = gw.pid();
    signal(pid, "TERM");
    gw.wait_for_log("shutting down", std::time::Duration::from_secs(10));
    let (status, body) = http_get(port, "/health");
    assert_eq!(status, 503, "{body}");
    drop(idle);
    let status = gw.terminate();
    assert!(status.success(), "{status:?}");
}
