//! The built-in security-policy plugin with ContainerSSH's `security:` keys: each denial is
//! refused with a one-line reason on the client's stderr, and allowed requests still work.
use serde_json::json;

use crate::harness::*;

#[test]
fn environment_filter_keeps_allowed_variables_and_explains_the_rest() {
    let gw = Gateway::start(json!({"security": {"env": {"mode": "filter", "allow": ["ALLOWED"]}}}));
    let mut c = gw.ssh();
    c.args(["-o", "SetEnv=ALLOWED=yes DENIED=no"])
        .arg("echo allowed=$ALLOWED denied=$DENIED");
    let out = run(c, b"");
    assert_eq!(text(&out.stdout), "allowed=yes denied=\n", "{out:?}");
    assert!(
        text(&out.stderr).contains("containerssh: ") && text(&out.stderr).contains("DENIED"),
        "{out:?}"
    );
    gw.assert_no_containers();
}

#[test]
fn disabled_commands_are_refused_with_a_reason_but_the_shell_works() {
    let gw = Gateway::start(json!({"security": {"command": {"mode": "disable"}}}));
    let mut c = gw.ssh();
    c.arg("echo should-not-run");
    let out = run(c, b"");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(!text(&out.stdout).contains("should-not-run"));
    let stderr = text(&out.stderr);
    let reason = stderr
        .lines()
        .find(|l| l.starts_with("containerssh: "))
        .unwrap_or_else(|| panic!("no reason line: {out:?}"));
    assert!(reason.contains("command"), "{reason}");

    let mut shell = gw.ssh();
    shell.arg("-T");
    let out = run(shell, b"echo from-shell\nexit\n");
    assert_eq!(text(&out.stdout), "from-shell\n", "{out:?}");
    gw.assert_no_containers();
}

#[test]
fn force_command_replaces_what_the_client_asked_for() {
    let gw =
        Gateway::start(json!({"security": {"forceCommand": "echo forced: $SSH_ORIGINAL_COMMAND"}}));
    let mut c = gw.ssh();
    c.arg("whoami");
    let out = run(c, b"");
    assert_eq!(text(&out.stdout), "forced: whoami\n", "{out:?}");
    gw.assert_no_containers();
}

#[test]
fn disabled_subsystem_stops_sftp() {
    let gw = Gateway::start(json!({"security": {"subsystem": {"mode": "disable"}}}));
    let mut sftp = std::process::Command::new("sftp");
    sftp.args(gw.transfer_options())
        .args(["-b", "-"])
        .arg(format!("{USER}@127.0.0.1"));
    let out = run(sftp, b"ls /\n");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(gw
        .log_text()
        .contains("request denied by the security policy"));
    gw.assert_no_containers();
}

/// maxSessions is a limit on sessions open at once: a closed session frees its place.
#[tokio::test]
async fn max_sessions_limits_concurrent_sessions_only() {
    let gw = Gateway::start(json!({"security": {"maxSessions": 1}}));
    let h = crate::client::login(gw.port, USER).await;
    let mut first = h.channel_open_session().await.expect("first session opens");
    assert!(
        h.channel_open_session().await.is_err(),
        "a second concurrent session must be refused"
    );
    first.exec(true, "exit 3").await.expect("exec");
    assert_eq!(crate::client::exit_status(&mut first).await, Some(3));
    drop(first);
    // The close reaches the server shortly after the exit; retry the open until it has.
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(ch) = h.channel_open_session().await {
            reopened = Some(ch);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut ch = reopened.expect("after the first closed, a new session opens");
    ch.exec(true, "exit 4").await.expect("exec");
    assert_eq!(crate::client::exit_status(&mut ch).await, Some(4));
    h.disconnect(russh::Disconnect::ByApplication, "", "")
        .await
        .expect("disconnect");
    drop((ch, h));
    assert!(
        gw.log_text().contains("too many sessions"),
        "{}",
        gw.log_text()
    );
    // Off the runtime thread, so the client's session task can finish closing meanwhile.
    tokio::task::spawn_blocking(move || gw.assert_no_containers())
        .await
        .expect("no containers left");
}

#[test]
fn disabled_terminals_and_shells_are_refused_with_a_reason() {
    // No terminal: OpenSSH goes on without one, and the shell still runs.
    let gw = Gateway::start(json!({"security": {"tty": {"mode": "disable"}}}));
    let (_, screen) = crate::sessions::pty_run_interactive(&gw, "tty || true; exit\\n");
    assert!(screen.contains("not a tty"), "{screen}");
    assert!(
        screen.contains("containerssh: terminal allocation is disabled"),
        "{screen}"
    );
    gw.assert_no_containers();
    // No shell.
    let gw = Gateway::start(json!({"security": {"shell": {"mode": "disable"}}}));
    let mut shell = gw.ssh();
    shell.arg("-T");
    let out = run(shell, b"echo from-shell\nexit\n");
    assert!(!text(&out.stdout).contains("from-shell"), "{out:?}");
    assert!(
        text(&out.stderr).contains("containerssh: ") && text(&out.stderr).contains("shell"),
        "{out:?}"
    );
    gw.assert_no_containers();
}

/// Signals follow the `signal` section (ContainerSSH read `shell.mode` instead).
#[tokio::test]
async fn signals_outside_the_allow_list_are_not_delivered() {
    let gw = Gateway::start(
        json!({"security": {"signal": {"mode": "filter", "allow": ["TERM"]}, "shell": {"mode": "disable"}}}),
    );
    let (out, status, _) = crate::client::exec_and_signal(
        gw.port,
        "trap 'echo got-USR1; exit 7' USR1; echo ready; sleep 3; echo not-signalled",
        std::time::Duration::from_secs(1),
        russh::Sig::USR1,
    )
    .await;
    assert!(
        out.contains("not-signalled") && !out.contains("got-USR1"),
        "{out}"
    );
    assert_eq!(status, Some(0));
    // TERM is on the list (and a disabled shell does not stop it).
    let (_, _, sig) = crate::client::exec_and_signal(
        gw.port,
        "sleep 30",
        std::time::Duration::from_secs(1),
        russh::Sig::TERM,
    )
    .await;
    assert_eq!(sig.as_deref(), Some("TERM"));
}
