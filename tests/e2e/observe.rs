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

/// Writes a MaxMind Country database (Python's `mmdb-writer`, as MaxMind's own tools write
/// them) that places 127.0.0.0/8 in New Zealand.
fn write_country_database(path: &std::path::Path) {
    let script = r#"
import sys
from netaddr import IPSet
from mmdb_writer import MMDBWriter
w = MMDBWriter(ip_version=6, database_type="GeoIP2-Country", ipv4_compatible=True)
w.insert_network(IPSet(["127.0.0.0/8"]), {"country": {"iso_code": "NZ", "names": {"en": "New Zealand"}}})
w.insert_network(IPSet(["2001:db8::/32"]), {"country": {"iso_code": "IS"}})
w.to_db_file(sys.argv[1])
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "mmdb-writer: {out:?}");
}

/// GeoIP as ContainerSSH configures it (`geoip.provider: maxmind`): the client's country
/// reaches the audit log's connect record, the log line and the metrics; a database that does
/// not read whole stops the start with a message naming it.
#[test]
fn geoip_places_clients_from_a_maxmind_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("GeoIP2-Country.mmdb");
    write_country_database(&db);
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).expect("mkdir");
    let mport = free_port();
    let gw = Gateway::start(json!({
        "geoip": {"provider": "maxmind", "maxmind-geoip2-file": db},
        "metrics": {"enable": true, "listen": format!("127.0.0.1:{mport}")},
        "audit": {"enable": true, "file": {"directory": audit}}
    }));
    let mut ssh = gw.ssh();
    ssh.arg("echo placed");
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "placed\n", "{out:?}");
    let (_, page) = http_get(mport, "/metrics");
    assert_eq!(
        metric(
            &page,
            r#"containerssh_connections_by_country_total{country="NZ"}"#
        ),
        Some(1.0),
        "{page}"
    );
    assert!(gw.log_text().contains("country=NZ"), "{}", gw.log_text());
    let logs: Vec<_> = std::fs::read_dir(&audit)
        .expect("audit dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = std::fs::read_to_string(&logs[0]).expect("audit log");
    let connect: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "connect")
        .expect("a connect record");
    assert_eq!(connect["country"], "NZ", "{connect}");
    drop(gw);

    // A cut-off database: refused at start, with its name; no panic.
    let bytes = std::fs::read(&db).expect("read");
    let bad = dir.path().join("cut.mmdb");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).expect("write");
    let mut gw = Gateway::launch(json!({
        "geoip": {"provider": "maxmind", "maxmind-geoip2-file": bad}
    }));
    let status = gw
        .wait_exit(std::time::Duration::from_secs(30))
        .expect("the gateway stops");
    assert!(!status.success());
    let log = gw.log_text();
    assert!(
        log.contains("cut.mmdb") && log.contains("not a usable MaxMind database"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// A metrics port already in use stops the start with the address in the log, before the
/// backends set anything up: no runtime directory is left behind.
#[test]
fn a_metrics_port_in_use_stops_the_start_and_leaves_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let mut gw = Gateway::launch(json!({
        "metrics": {"enable": true, "listen": format!("127.0.0.1:{port}")}
    }));
    let status = gw
        .wait_exit(std::time::Duration::from_secs(60))
        .expect("the gateway stops");
    assert!(!status.success());
    let log = gw.log_text();
    assert!(
        log.contains(&format!(
            "cannot listen on 127.0.0.1:{port} for metrics/health"
        )),
        "{log}"
    );
    let runtime_dir =
        std::path::Path::new("/run/containerssh").join(gw.instance().replace(':', "_"));
    assert!(
        !runtime_dir.exists(),
        "{} left behind",
        runtime_dir.display()
    );
    drop(taken);
}
