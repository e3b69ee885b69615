//! Logins under load and under attack: 100 clients at once with bcrypt cost 10, per-source
//! caps, failures of a user from one address, an overloaded auth plugin, and what ssh-audit
//! says about the algorithms offered.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// A gateway whose one user has a bcrypt hash of cost `cost`.
fn gateway_with_cost(cost: u32, overrides: Value) -> Gateway {
    let hash = bcrypt::hash(PASSWORD, cost).expect("bcrypt");
    let mut config = json!({"auth": {"config": {"users": {USER: {"password": hash}}}}});
    merge(&mut config, overrides);
    Gateway::start(config)
}

/// `ssh` with the test key from `source` (a 127.0.0.0/8 address) running `command`.
fn ssh_from(gw: &Gateway, source: &str, command: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(gw.common_ssh_options())
        .args([
            "-b",
            source,
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
        ])
        .arg(&shared().key)
        .arg(format!("{USER}@127.0.0.1"))
        .arg(command);
    c
}

/// `sshpass ... ssh` with a password from `source`, running `command`.
fn ssh_password_from(gw: &Gateway, source: &str, password: &str, command: &str) -> Command {
    let mut c = Command::new("sshpass");
    c.args(["-p", password, "ssh"])
        .args(gw.common_ssh_options())
        .args([
            "-b",
            source,
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
        ])
        .arg(format!("{USER}@127.0.0.1"))
        .arg(command);
    c
}

/// Python with asyncssh (installed by tests/run.sh).
fn python_with_asyncssh() {
    let ok = Command::new("python3")
        .args(["-c", "import asyncssh"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 -m pip install asyncssh (tests/run.sh does) is needed"
    );
}

/// `count` clients log in with a password at the same moment (spread over `sources`
/// addresses), authenticate and close without opening a session. Returns how many got in
/// and how long it took, as the script measured.
fn concurrent_logins(gw: &Gateway, count: usize, sources: usize) -> (usize, f64, String) {
    python_with_asyncssh();
    let script = r#"
import asyncio, sys, time, asyncssh
port, count, sources, user, password = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
async def one(i):
    source = f"127.0.0.{2 + i % sources}"
    try:
        async with asyncssh.connect("127.0.0.1", port, local_addr=(source, 0), username=user,
                                    password=password, known_hosts=None, client_keys=None,
                                    preferred_auth="password", login_timeout=110) as conn:
            return None
    except Exception as e:
        return f"{source}: {type(e).__name__}: {e}"
async def main():
    start = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), 150)
    failed = [r for r in results if r]
    print(f"{count - len(failed)} {time.monotonic() - start:.1f}")
    for f in failed[:10]:
        print(f)
asyncio.run(main())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(gw.port.to_string())
        .arg(count.to_string())
        .arg(sources.to_string())
        .args([USER, PASSWORD])
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    let stdout = text(&out.stdout);
    let mut first = stdout.lines().next().unwrap_or_default().split(' ');
    let ok = first.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let secs = first.next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
    (ok, secs, format!("{stdout}{}", text(&out.stderr)))
}

/// With the default limits, 100 clients logging in at once with bcrypt cost 10 all get in:
/// the wait for the plugin's slots is not part of its 5 s call deadline.
#[test]
fn a_hundred_concurrent_bcrypt_password_logins_all_succeed() {
    let gw = gateway_with_cost(10, json!({"log": {"level": "info"}}));
    // 20 addresses, 5 clients each: within the default 10 per source.
    let (ok, secs, output) = concurrent_logins(&gw, 100, 20);
    eprintln!("100 concurrent bcrypt-10 password logins: {ok} succeeded in {secs} s");
    let log = gw.log_text();
    assert_eq!(ok, 100, "{output}\n{log}");
    assert_eq!(log.matches("authentication succeeded").count(), 100);
    assert!(!log.contains("overloaded"), "{log}");
    assert!(!log.contains("did not answer within"), "{log}");
}

/// One address holding its ten unauthenticated connections does not keep another out.
#[test]
fn one_address_cannot_hold_every_unauthenticated_slot() {
    let gw = Gateway::start(json!({"ssh": {"maxUnauthenticated": 12}}));
    let idle: Vec<std::net::TcpStream> = (0..10)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", gw.port)).expect("connect"))
        .collect();
    let start = Instant::now();
    while gw.log_text().matches("connection accepted").count() < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // An eleventh connection from the same address is refused...
    let out = run(ssh_from(&gw, "127.0.0.1", "true"), b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(gw
        .log_text()
        .contains("too many unauthenticated connections from this source"));
    // ...while another address logs in, though only two places are left in all.
    let out = run(ssh_from(&gw, "127.0.0.2", "echo admitted"), b"");
    assert_eq!(
        text(&out.stdout),
        "admitted\n",
        "{out:?}\n{}",
        gw.log_text()
    );
    drop(idle);
    gw.assert_no_containers();
}

/// Wrong passwords for a user from one address lock that user out from there only.
#[test]
fn a_user_attacked_from_one_address_logs_in_from_another() {
    let gw = Gateway::start(json!({"ssh": {"authRateLimit": {
        "maxFailuresPerUser": 3, "maxFailuresPerIp": 0, "window": "5m"
    }}}));
    for _ in 0..3 {
        let out = run(ssh_password_from(&gw, "127.0.0.1", "guess", "true"), b"");
        assert_eq!(out.status.code(), Some(255), "{out:?}");
    }
    // The attacker's address is now refused even the right password...
    let out = run(
        ssh_password_from(&gw, "127.0.0.1", PASSWORD, "echo no"),
        b"",
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(gw.log_text().contains("too many recent failures"));
    // ...but the user, elsewhere, gets in.
    let out = run(
        ssh_password_from(&gw, "127.0.0.3", PASSWORD, "echo welcome"),
        b"",
    );
    assert_eq!(text(&out.stdout), "welcome\n", "{out:?}\n{}", gw.log_text());
    gw.assert_no_containers();
}

/// An auth plugin with no free slot fails the attempt at once, says so, counts it in
/// `plugin_overload_total`, and does not count it as a failed login.
#[test]
fn an_overloaded_auth_plugin_is_no_failed_login() {
    let mport = free_port();
    let plugin = workspace().join("target/test-plugins/misbehave.wasm");
    let gw = Gateway::start(json!({
        "auth": {
            "plugin": plugin.to_string_lossy(),
            "timeout": "3s",
            "maxConcurrency": 1,
            "maxQueued": 0,
            "config": {"mode": "allow", "modes": {"spinner": "loop"}}
        },
        "ssh": {"authRateLimit": {"maxFailuresPerUser": 1, "maxFailuresPerIp": 1, "window": "5m"}},
        "metrics": {"enable": true, "listen": format!("127.0.0.1:{mport}")}
    }));
    // "spinner" holds the only slot for 3 s.
    let mut spinner = gw.ssh_password("spinner", "x");
    spinner
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut spinner = spinner.spawn().expect("ssh");
    gw.wait_for_log("connection accepted", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1000));
    let out = run(gw.ssh_password("alice", "anything"), b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let log = gw.log_text();
    assert!(log.contains("the auth plugin is overloaded"), "{log}");
    let _ = spinner.wait();
    // Not counted: with a limit of one failure, alice still gets in.
    let mut again = gw.ssh_password("alice", "anything");
    again.arg("echo in");
    let out = run(again, b"");
    assert_eq!(text(&out.stdout), "in\n", "{out:?}\n{}", gw.log_text());
    let metrics = http_get(mport, "/metrics");
    assert!(
        metrics
            .contains(r#"containerssh_plugin_overload_total{plugin="auth",reason="queue_full"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"containerssh_auth_attempts_total{method="password",result="Overloaded"} 1"#
        ),
        "{metrics}"
    );
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("response");
    response
}

/// ssh-audit's JSON report of the gateway: (level, algorithm) for every fail and warn.
fn audit(gw: &Gateway) -> (Vec<(String, String)>, Value) {
    let out = Command::new("ssh-audit")
        .args(["-j", "-p"])
        .arg(gw.port.to_string())
        .arg("127.0.0.1")
        .output()
        .expect("ssh-audit runs (python3 -m pip install ssh-audit; tests/run.sh does)");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ssh-audit JSON: {e}: {out:?}"));
    let mut findings = Vec::new();
    for section in ["kex", "key", "enc", "mac"] {
        for entry in report[section].as_array().into_iter().flatten() {
            let name = entry["algorithm"].as_str().unwrap_or_default().to_string();
            for level in ["fail", "warn"] {
                for note in entry["notes"][level].as_array().into_iter().flatten() {
                    findings.push((
                        level.to_string(),
                        format!("{name}: {}", note.as_str().unwrap_or_default()),
                    ));
                }
            }
        }
    }
    (findings, report)
}

/// The default algorithms: nothing ssh-audit fails, and no warning but the post-quantum
/// notes on the classic key exchanges kept for older clients.
#[test]
fn ssh_audit_finds_nothing_to_fail_in_the_defaults() {
    let gw = Gateway::start(json!({}));
    let (findings, report) = audit(&gw);
    eprintln!("ssh-audit, defaults: {findings:?}");
    assert!(
        findings.iter().all(|(level, _)| level == "warn"),
        "{findings:?}\n{report:#}"
    );
    for (_, finding) in &findings {
        assert!(
            finding.contains("quantum"),
            "a warning other than post-quantum: {finding}\n{report:#}"
        );
    }
    let macs: Vec<&str> = report["mac"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["algorithm"].as_str())
        .collect();
    assert!(macs.iter().all(|m| m.contains("-etm@")), "{macs:?}");
}

/// `kex: [mlkem768x25519-sha256]`: nothing to fail or warn about.
#[test]
fn ssh_audit_is_clean_for_post_quantum_only_key_exchange() {
    let gw = Gateway::start(json!({"ssh": {"kex": ["mlkem768x25519-sha256"]}}));
    let (findings, report) = audit(&gw);
    assert!(findings.is_empty(), "{findings:?}\n{report:#}");
    let kex: Vec<&str> = report["kex"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["algorithm"].as_str())
        .collect();
    assert_eq!(kex[0], "mlkem768x25519-sha256", "{kex:?}");
    assert!(!kex.iter().any(|k| k.starts_with("curve25519")), "{kex:?}");
    // An OpenSSH client older than 9.9 has no ML-KEM: it cannot connect.
    let version = text(
        &Command::new("ssh")
            .arg("-V")
            .output()
            .expect("ssh -V")
            .stderr,
    );
    if version.contains("OpenSSH_9.2") || version.contains("OpenSSH_8.") {
        let mut ssh = gw.ssh();
        ssh.arg("true");
        let out = run(ssh, b"");
        assert_eq!(out.status.code(), Some(255), "{out:?}");
        gw.wait_for_log("No common Kex algorithm", Duration::from_secs(5));
    }
}
