use std::process::Command;

use serde_json::json;

use crate::harness::*;

#[test]
fn exec_passes_stdin_until_eof_and_returns_the_exit_status() {
    let gw = Gateway::start(json!({}));
    let mut ssh = gw.ssh();
    ssh.arg("cat; echo done; exit 42");
    let out = run(ssh, b"line one\nline two\n");
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    assert_eq!(text(&out.stdout), "line one\nline two\ndone\n");
    gw.assert_no_containers();
}

#[test]
fn exec_uses_shell_semantics_and_keeps_stderr_apart() {
    let gw = Gateway::start(json!({}));
    let mut ssh = gw.ssh();
    ssh.arg("echo 'a  b' | wc -w; echo to-stderr >&2; x=5; echo $((x * 2))");
    let out = run(ssh, b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["2", "10"]
    );
    assert_eq!(text(&out.stderr), "to-stderr\n");
}

#[test]
fn environment_from_the_client_reaches_the_program() {
    let gw = Gateway::start(json!({}));
    let mut ssh = gw.ssh();
    ssh.args(["-o", "SetEnv=GREETING=hello-from-client", "echo $GREETING"]);
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "hello-from-client\n", "{out:?}");
}

/// Runs OpenSSH in a real terminal of `size` that demands a remote terminal (`-tt`); see
/// tests/e2e/pty_driver.py for `resize` and `typed`. Returns the exit code and the screen.
pub fn pty_run(
    gw: &Gateway,
    size: (u32, u32),
    resize: Option<(u32, u32, &str)>,
    typed: &str,
    remote: Option<&str>,
) -> (i32, String) {
    drive_terminal(gw, "-tt", size, resize, typed, remote)
}

/// An interactive login from a terminal that does not insist on a remote one (OpenSSH's
/// default: it asks, and goes on without one if refused).
pub fn pty_run_interactive(gw: &Gateway, typed: &str) -> (i32, String) {
    drive_terminal(gw, "-oRequestTTY=auto", (80, 24), None, typed, None)
}

fn drive_terminal(
    gw: &Gateway,
    tty_flag: &str,
    size: (u32, u32),
    resize: Option<(u32, u32, &str)>,
    typed: &str,
    remote: Option<&str>,
) -> (i32, String) {
    let mut ssh: Vec<String> = vec!["ssh".into(), tty_flag.into()];
    ssh.extend(gw.common_ssh_options());
    ssh.extend(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"].map(String::from));
    ssh.push(shared().key.to_string_lossy().into_owned());
    ssh.push(format!("{USER}@127.0.0.1"));
    if let Some(r) = remote {
        ssh.push(r.to_string());
    }
    let (rc, rr, after) = resize.unwrap_or((0, 0, "0"));
    let mut cmd = Command::new("python3");
    cmd.arg(workspace().join("tests/e2e/pty_driver.py"))
        .args([
            size.0.to_string(),
            size.1.to_string(),
            rc.to_string(),
            rr.to_string(),
            after.to_string(),
            typed.to_string(),
        ])
        .arg("--")
        .args(ssh);
    let out = run(cmd, b"");
    (out.status.code().unwrap_or(-1), text(&out.stdout))
}

#[test]
fn interactive_shell_gets_a_terminal_of_the_clients_size() {
    let gw = Gateway::start(json!({}));
    let (code, screen) = pty_run(
        &gw,
        (101, 33),
        None,
        "stty size; tty; echo TERM=$TERM; exit 3\\n",
        None,
    );
    assert_eq!(code, 3, "{screen}");
    assert!(screen.contains("33 101"), "{screen}");
    assert!(screen.contains("/dev/pts/"), "{screen}");
    assert!(
        screen.contains("TERM=xterm")
            || screen.contains("TERM=vt")
            || screen.contains("TERM=dumb")
            || screen.contains("TERM=linux")
            || screen.contains("TERM=screen"),
        "{screen}"
    );
    gw.assert_no_containers();
}

#[test]
fn window_change_reaches_the_terminal() {
    let gw = Gateway::start(json!({}));
    assert_window_change_reaches_the_terminal(&gw);
}

/// The terminal has the client's size, then the new one after the client's window changed.
/// Docker engines before API 1.42 and Kubernetes cannot size an exec's terminal before it
/// starts; the gateway resizes it right after, so the first look waits a moment. The resize
/// comes once the program has shown the first size.
pub fn assert_window_change_reaches_the_terminal(gw: &Gateway) {
    let (code, screen) = pty_run(
        gw,
        (80, 24),
        Some((132, 50, "on:resize-now")),
        "",
        Some("sleep 0.5; stty size; echo resize-now; sleep 3; stty size"),
    );
    assert_eq!(code, 0, "{screen}\n{}", gw.log_text());
    assert!(screen.contains("24 80"), "{screen}");
    assert!(screen.contains("50 132"), "{screen}");
}

/// Two sessions over one multiplexed OpenSSH connection: same container in connection mode,
/// different containers in session mode.
fn hostnames_of_two_sessions(gw: &Gateway) -> (String, String) {
    two_sessions(gw, "hostname", "hostname")
}

#[test]
fn connection_mode_shares_one_container_between_sessions() {
    let gw = Gateway::start(json!({}));
    let (a, b) = hostnames_of_two_sessions(&gw);
    assert!(!a.trim().is_empty());
    assert_eq!(a, b);
    gw.assert_no_containers();
}

#[test]
fn session_mode_gives_each_session_its_own_container() {
    let gw = Gateway::start(json!({"docker": {"execution": {"mode": "session"}}}));
    let (a, b) = hostnames_of_two_sessions(&gw);
    assert!(!a.trim().is_empty() && !b.trim().is_empty());
    assert_ne!(a, b);
    gw.assert_no_containers();
}
