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
    assert_eq!(answered, 6, "the server must answer exactly 6 attempts, then disconnect");
    let log = gw.log_text();
    assert_eq!(log.matches("authentication failed").count(), 6, "{log}");
}
