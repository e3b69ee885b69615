use serde_json::json;

use crate::harness::*;

#[test]
fn public_key_login_runs_a_command_in_a_container() {
    let gw = Gateway::start(json!({}));
    let mut ssh = gw.ssh();
    ssh.arg("id -u; echo $FROM_AUTH; cat /etc/motd");
    let out = run(ssh, b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "1000\ngranted\ncontainerssh guest\n");
    assert!(gw.log_text().contains("authentication succeeded"));
    gw.assert_no_containers();
}

#[test]
fn password_login_works_and_a_wrong_password_is_denied() {
    let gw = Gateway::start(json!({}));
    let mut ok = gw.ssh_password(USER, PASSWORD);
    ok.arg("echo password-ok");
    let out = run(ok, b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "password-ok\n");

    let mut bad = gw.ssh_password(USER, "wrong");
    bad.arg("echo should-not-run");
    let out = run(bad, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(text(&out.stderr).contains("Permission denied"), "{out:?}");

    let mut unknown = gw.ssh_password("mallory", PASSWORD);
    unknown.arg("true");
    assert_eq!(run(unknown, b"").status.code(), Some(255));
    gw.assert_no_containers();
}

#[tokio::test]
async fn at_most_six_attempts_per_connection() {
    let gw = Gateway::start(json!({}));
    let answered = crate::client::count_password_attempts(gw.port, USER, 10).await;
    // The server's log is the truth: six checked attempts, then the disconnect. (russh's
    // client may report an attempt cut short by that disconnect as one more failure.)
    let log = gw.log_text();
    assert_eq!(log.matches("authentication failed").count(), 6, "{log}");
    assert!(
        log.contains("too many authentication failures; disconnecting"),
        "{log}"
    );
    assert!(
        (6..=7).contains(&answered),
        "the client saw {answered} answers; the connection must end after the sixth"
    );
}

#[test]
fn repeated_failures_for_a_user_are_rate_limited() {
    let gw = Gateway::start(
        json!({"ssh": {"authRateLimit": {"maxFailuresPerUser": 3, "maxFailuresPerIp": 0, "window": "5m"}}}),
    );
    assert_locked_out_after_wrong_guesses(&gw, &[USER, USER, USER]);
    // Other users are not affected.
    let mut other = gw.ssh_password("someone-else", "x");
    other.arg("true");
    let _ = run(other, b"");
    assert_eq!(gw.log_text().matches("authentication failed").count(), 4);
}

#[test]
fn repeated_failures_from_one_address_are_rate_limited() {
    let gw = Gateway::start(
        json!({"ssh": {"authRateLimit": {"maxFailuresPerUser": 0, "maxFailuresPerIp": 3, "window": "5m"}}}),
    );
    // Each guess for another user name: the address is what is limited.
    assert_locked_out_after_wrong_guesses(&gw, &["a", "b", "c"]);
}

/// One wrong password for each of `users`; then even the right one is refused, without
/// asking the plugin.
fn assert_locked_out_after_wrong_guesses(gw: &Gateway, users: &[&str]) {
    for user in users {
        let mut bad = gw.ssh_password(user, "wrong");
        bad.arg("true");
        assert_eq!(run(bad, b"").status.code(), Some(255));
    }
    let mut good = gw.ssh_password(USER, PASSWORD);
    good.arg("echo should-not-run");
    let out = run(good, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let log = gw.log_text();
    assert!(log.contains("too many recent failures"), "{log}");
    assert_eq!(
        log.matches("authentication failed").count(),
        users.len(),
        "{log}"
    );
}

/// A key the auth server does not judge (it takes passwords only) is no failed guess: users
/// whose client offers keys first are not locked out.
#[test]
fn keys_the_auth_server_does_not_take_do_not_count_against_the_rate_limit() {
    let (_auth, gw) = crate::webhook::gateway_with_auth_server(
        json!({"pubkey": false}),
        json!({"ssh": {"authRateLimit": {"maxFailuresPerUser": 2, "maxFailuresPerIp": 2, "window": "5m"}}}),
    );
    for _ in 0..4 {
        // Offers the key first, then the password.
        let mut ssh = std::process::Command::new("sshpass");
        ssh.args(["-p", PASSWORD, "ssh"])
            .args(gw.common_ssh_options())
            .args([
                "-o",
                "PreferredAuthentications=publickey,password",
                "-o",
                "IdentitiesOnly=yes",
                "-i",
            ])
            .arg(&shared().key)
            .arg(format!("{USER}@127.0.0.1"))
            .arg("echo in");
        let out = run(ssh, b"");
        assert_eq!(text(&out.stdout), "in\n", "{out:?}\n{}", gw.log_text());
    }
    let log = gw.log_text();
    assert_eq!(
        log.matches("not supported by the auth plugin").count(),
        4,
        "{log}"
    );
    assert!(!log.contains("too many recent failures"), "{log}");
}

#[test]
fn unauthenticated_connections_are_capped() {
    let gw = Gateway::start(json!({"ssh": {"maxUnauthenticated": 1}}));
    // One idle TCP connection that never authenticates takes the only slot.
    let idle = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    gw.wait_for_log("connection accepted", std::time::Duration::from_secs(10));
    let mut ssh = gw.ssh();
    ssh.arg("true");
    let out = run(ssh, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(gw
        .log_text()
        .contains("too many unauthenticated connections"));
    drop(idle);
    // The slot comes back when the idle connection closes.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut ssh = gw.ssh();
    ssh.arg("echo admitted");
    assert_eq!(text(&run(ssh, b"").stdout), "admitted\n");
}

#[test]
fn login_grace_time_disconnects_idle_clients() {
    let gw = Gateway::start(json!({"ssh": {"loginGraceTime": "1s"}}));
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    use std::io::{Read, Write};
    idle.write_all(b"SSH-2.0-OpenSSH_9.2p1 e2e\r\n").unwrap();
    idle.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    let started = std::time::Instant::now();
    let _ = idle.read_to_end(&mut buf); // returns when the server closes the connection
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    gw.wait_for_log("login grace time over", std::time::Duration::from_secs(5));
}

/// The hostile test plugin misbehaves in `mode` for user "bad": that login is denied, and
/// meanwhile a well-behaved user gets in.
fn misbehaving_login_is_contained(mode: &str, expected_log: &[&str]) {
    // The endless loop gets long enough that the good login happens while it runs.
    let timeout = if mode == "loop" { "6s" } else { "1s" };
    let plugin = workspace().join("target/test-plugins/misbehave.wasm");
    let gw = Gateway::start(json!({"auth": {
        "plugin": plugin.to_string_lossy(),
        "timeout": timeout,
        "memoryLimit": 33554432,
        "config": {"mode": "allow", "modes": {"bad": mode}}
    }}));
    let mut hostile = gw.ssh_password("bad", "x");
    hostile.arg("echo should-not-run");
    hostile
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut hostile = hostile.spawn().expect("ssh");
    if mode == "loop" {
        // Logged in and spinning (the plugin is called within milliseconds of the accept).
        gw.wait_for_log("connection accepted", std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    let mut good = gw.ssh_password("alice", "anything");
    good.arg("echo welcome");
    let out = run(good, b"");
    assert_eq!(text(&out.stdout), "welcome\n", "{mode}: {out:?}");
    if mode == "loop" {
        // The good user got in while the hostile plugin was still spinning.
        assert!(
            hostile.try_wait().expect("ssh").is_none(),
            "the hostile login ended before the good one:\n{}",
            gw.log_text()
        );
    }
    let out = hostile.wait_with_output().expect("ssh");
    assert_eq!(out.status.code(), Some(255), "{mode}: {out:?}");
    assert!(!text(&out.stdout).contains("should-not-run"), "{mode}");
    let log = gw.log_text();
    assert!(log.contains("auth plugin failed; denying"), "{mode}: {log}");
    assert!(
        expected_log.iter().any(|e| log.contains(e)),
        "{mode}: log lacks {expected_log:?}:\n{log}"
    );
    gw.assert_no_containers();
}

#[test]
fn plugin_in_an_endless_loop_is_stopped_at_its_deadline() {
    // Its CPU budget or the wall-clock deadline, whichever notices first.
    misbehaving_login_is_contained(
        "loop",
        &[
            "computed past its deadline of 6s",
            "did not answer within 6s",
        ],
    );
}

#[test]
fn plugin_memory_bomb_hits_its_memory_limit() {
    misbehaving_login_is_contained("memory", &["growing memory"]);
}

#[test]
fn plugin_trap_denies_the_login() {
    misbehaving_login_is_contained("trap", &["wasm trap: wasm `unreachable`"]);
}

#[test]
fn plugin_huge_answer_is_refused() {
    misbehaving_login_is_contained("huge", &["more than 1048576"]);
}

/// A plugin reaching for a destination outside its allow-list: the request never leaves the
/// gateway, the login is denied, and others still get in.
#[test]
fn plugin_reaching_a_forbidden_destination_is_contained() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let plugin = workspace().join("target/test-plugins/misbehave.wasm");
    let gw = Gateway::start(json!({"auth": {
        "plugin": plugin.to_string_lossy(),
        "egress": {"allow": ["127.0.0.1:1"]},
        "config": {"mode": "allow", "modes": {"leaker": format!("fetch:http://127.0.0.1:{port}/steal")}}
    }}));
    let mut leak = gw.ssh_password("leaker", "x");
    leak.arg("echo should-not-run");
    let out = run(leak, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let mut good = gw.ssh_password("alice", "anything");
    good.arg("echo welcome");
    assert_eq!(text(&run(good, b"").stdout), "welcome\n");
    assert!(
        listener.accept().is_err(),
        "the forbidden destination was contacted"
    );
    let log = gw.log_text();
    assert!(log.contains("destination not in egress.allow"), "{log}");
    gw.assert_no_containers();
}
