use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::json;

use crate::harness::*;

fn http_get(port: u16, path: &str) -> (u16, String) {
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
    assert!(
        metrics.contains("containerssh_plugin_call_seconds_count"),
        "{metrics}"
    );
    let (status, _) = http_get(mport, "/nothing");
    assert_eq!(status, 404);
    gw.assert_no_containers();
}
