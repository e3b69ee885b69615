//! The audit trail: a JSON-lines log per connection without secrets, asciicast recordings of
//! terminal sessions that asciinema itself can play, and `containerssh audit replay`.
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::*;

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.retain(|p| p.extension().is_some_and(|e| e == extension));
    found
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn every_connection_gets_an_audit_log_without_secrets() {
    let audit = tempfile::tempdir().expect("tempdir");
    let gw =
        Gateway::start(json!({"audit": {"enable": true, "file": {"directory": audit.path()}}}));
    let mut bad = gw.ssh_password(USER, "wrong-secret-password");
    bad.arg("true");
    assert_eq!(run(bad, b"").status.code(), Some(255));
    let mut ok = gw.ssh_password(USER, PASSWORD);
    ok.args(["-o", "SetEnv=TOKEN=env-secret-value"])
        .arg("echo audited; exit 5");
    let out = run(ok, b"");
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    gw.assert_no_containers();
    drop(gw); // the disconnect events are written when the connections end

    let logs = files(audit.path(), "jsonl");
    assert_eq!(logs.len(), 2, "one log per connection: {logs:?}");
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("log");
        for secret in ["wrong-secret-password", PASSWORD, "env-secret-value"] {
            assert!(
                !text.contains(secret),
                "{} holds a secret:\n{text}",
                log.display()
            );
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(log).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", log.display());
    }
    let session = logs
        .iter()
        .map(|l| events(l))
        .find(|e| e.iter().any(|x| x["event"] == "exit"))
        .expect("the session's log");
    let kinds: Vec<&str> = session.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"connect"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"disconnect"), "{kinds:?}");
    let find = |pred: &dyn Fn(&Value) -> bool| session.iter().find(|e| pred(e)).cloned();
    let auth = find(&|e| e["event"] == "auth").expect("auth event");
    assert_eq!(auth["result"], "success");
    assert_eq!(auth["method"], "password");
    let exec = find(&|e| e["request"] == "exec").expect("exec request");
    assert_eq!(exec["command"], "echo audited; exit 5");
    assert_eq!(exec["verdict"], "allow");
    let env = find(&|e| e["request"] == "env" && e["name"] == "TOKEN").expect("env request");
    assert_eq!(env["verdict"], "allow");
    assert_eq!(find(&|e| e["event"] == "exit").expect("exit")["status"], 5);
    let ids: Vec<&str> = session
        .iter()
        .filter_map(|e| e["connectionId"].as_str())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]) && ids[0].len() == 32);

    // `audit replay` prints a log one event per line.
    let out = Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .args(["audit", "replay"])
        .arg(&logs[0])
        .output()
        .expect("replay runs");
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).lines().any(|l| l.contains(" connect ")),
        "{out:?}"
    );
}

#[test]
fn terminal_sessions_are_recorded_in_asciicast_v2() {
    let audit = tempfile::tempdir().expect("tempdir");
    let gw =
        Gateway::start(json!({"audit": {"enable": true, "file": {"directory": audit.path()}}}));
    let (code, screen) = crate::sessions::pty_run(
        &gw,
        (90, 30),
        None,
        "echo recorded-$((6*7)); exit 0\\n",
        None,
    );
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("recorded-42"), "{screen}");
    gw.assert_no_containers();
    drop(gw);

    let casts = files(audit.path(), "cast");
    assert_eq!(casts.len(), 1, "{casts:?}");
    let lines = events(&casts[0]);
    assert_eq!(lines[0]["version"], 2);
    assert_eq!(lines[0]["width"], 90);
    assert_eq!(lines[0]["height"], 30);
    let output: String = lines[1..]
        .iter()
        .filter(|e| e[1] == "o")
        .filter_map(|e| e[2].as_str())
        .collect();
    assert!(output.contains("recorded-42"), "{output}");
    // Keystrokes are not recorded unless asked for.
    assert!(lines[1..].iter().all(|e| e[1] != "i"));

    // asciinema itself reads the recording...
    let out = Command::new("python3")
        .args(["-m", "asciinema", "cat"])
        .arg(&casts[0])
        .output()
        .expect("asciinema runs (tests/run.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("recorded-42"), "{out:?}");
    // ...and so does the gateway's own player.
    let out = Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .args(["audit", "replay", "--speed", "100"])
        .arg(&casts[0])
        .output()
        .expect("replay runs");
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("recorded-42"), "{out:?}");
}

/// A small file system just for this test's audit directory, gone when dropped.
struct TinyFs(tempfile::TempDir);

impl TinyFs {
    fn mount(bytes: usize) -> TinyFs {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root");
        TinyFs(dir)
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// When the recording cannot be written (the disk is full), the session ends: it must not go
/// on unrecorded.
#[test]
fn a_session_whose_recording_cannot_be_written_is_ended() {
    let disk = TinyFs::mount(256 * 1024);
    let gw =
        Gateway::start(json!({"audit": {"enable": true, "file": {"directory": disk.0.path()}}}));
    let mut ssh = gw.ssh();
    // Far more output than the disk holds, then a mark that must never arrive.
    ssh.args([
        "-tt",
        "head -c 4000000 /dev/zero | tr '\\0' x; sleep 2; echo; echo unrecorded-end",
    ]);
    let out = run(ssh, b"");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(!text(&out.stdout).contains("unrecorded-end"));
    assert!(
        text(&out.stderr).contains("audit log cannot be written"),
        "{}",
        text(&out.stderr)
    );
    gw.wait_for_log(
        "could not be written completely",
        std::time::Duration::from_secs(20),
    );
    gw.assert_no_containers();
}

/// A container that cannot start is in the audit log too, with the reason.
#[test]
fn a_container_that_cannot_start_is_audited() {
    let audit = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(json!({
        "audit": {"enable": true, "file": {"directory": audit.path()}},
        "docker": {"execution": {"container": {"image": "containerssh-test/absent:1"}}}
    }));
    let mut ssh = gw.ssh();
    ssh.arg("true");
    assert_eq!(run(ssh, b"").status.code(), Some(255));
    drop(gw);
    let logs = files(audit.path(), "jsonl");
    assert_eq!(logs.len(), 1, "{logs:?}");
    let all = events(&logs[0]);
    let failed = all
        .iter()
        .find(|e| e["event"] == "backend-error")
        .unwrap_or_else(|| panic!("no backend-error event: {all:?}"));
    assert_eq!(failed["stage"], "container_start");
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("absent"),
        "{failed}"
    );
}

/// ContainerSSH's `intercept.passwords: true` is accepted (a ContainerSSH file starts) with a
/// warning, and passwords are still never recorded, in either format.
#[test]
fn passwords_are_never_intercepted() {
    let out = Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("validate")
        .arg(write_config(
            json!({"audit": {"enable": true, "intercept": {"passwords": true}}}),
        ))
        .output()
        .expect("validate runs");
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("audit.intercept.passwords")
            && text(&out.stderr).contains("never recorded"),
        "{out:?}"
    );
    for format in ["asciinema", "binary"] {
        let audit = tempfile::tempdir().expect("tempdir");
        let gw = Gateway::start(json!({"audit": {
            "enable": true, "format": format, "file": {"directory": audit.path()},
            "intercept": {"passwords": true, "stdin": true}}}));
        assert_password_run(&gw, USER, PASSWORD, "echo in", "in\n");
        gw.assert_no_containers();
        drop(gw);
        for entry in std::fs::read_dir(audit.path()).expect("dir") {
            let path = entry.expect("entry").path();
            let bytes = std::fs::read(&path).expect("read");
            let decoded = if path.extension().is_none() {
                serde_json::to_string(&binary_messages(&path)).expect("json")
            } else {
                String::from_utf8_lossy(&bytes).into_owned()
            };
            assert!(
                !decoded.contains(PASSWORD),
                "{format}: the password is in {path:?}"
            );
        }
    }
}

fn write_config(over: Value) -> PathBuf {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let mut config = json!({"auth": {"plugin": "builtin:static-users", "config": {"users": {}}}});
    merge(&mut config, over);
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).expect("write");
    path
}

/// A connection's log is complete (its `disconnect` event last) by the time the gateway says
/// the connection is cleaned up, without waiting for shutdown; events of a busy connection
/// (many requests in a burst) are all there, in order.
#[test]
fn the_log_is_complete_when_the_connection_is_cleaned_up() {
    let audit = tempfile::tempdir().expect("tempdir");
    let gw =
        Gateway::start(json!({"audit": {"enable": true, "file": {"directory": audit.path()}}}));
    let mut ssh = gw.ssh();
    let vars: Vec<String> = (0..50).map(|i| format!("VAR{i}=x")).collect();
    ssh.args(["-o", &format!("SetEnv={}", vars.join(" "))]);
    ssh.arg("echo done");
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "done\n", "{out:?}");
    gw.wait_for_log("connection cleaned up", std::time::Duration::from_secs(30));
    let logs = files(audit.path(), "jsonl");
    assert_eq!(logs.len(), 1, "{logs:?}");
    let all = events(&logs[0]);
    let kinds: Vec<&str> = all.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"connect"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"disconnect"), "{kinds:?}");
    let envs: Vec<String> = all
        .iter()
        .filter(|e| e["request"] == "env")
        .filter_map(|e| e["name"].as_str().map(String::from))
        // ssh_config may send more (LANG): only ours are counted.
        .filter(|name| name.starts_with("VAR"))
        .collect();
    let expected: Vec<String> = (0..50).map(|i| format!("VAR{i}")).collect();
    assert_eq!(envs, expected);
    let times: Vec<&str> = all.iter().filter_map(|e| e["time"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

/// The messages of a binary audit log (`audit.format: binary`), decoded by
/// tests/e2e/audit_binary_decode.py with ContainerSSH's decoder rules.
fn binary_messages(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(workspace().join("tests/e2e/audit_binary_decode.py"))
        .arg(path)
        .output()
        .expect("python3 runs (tests/run.sh installs cbor2)");
    assert!(out.status.success(), "{out:?}");
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// The bytes of the I/O messages of `stream` (0 stdin, 1 stdout, 2 stderr).
fn io_bytes(messages: &[Value], stream: u64) -> String {
    messages
        .iter()
        .filter(|m| m["type"] == 500 && m["payload"]["stream"] == stream)
        .filter_map(|m| m["payload"]["data"]["bytes"].as_str())
        .collect()
}

/// ContainerSSH's binary format: one file per connection named after its ID, readable with
/// ContainerSSH's decoder rules, holding the login (never the password), the channel and its
/// requests, the session's stdin/stdout/stderr, the exit status and the disconnect; no
/// asciicast files, and the JSON log as before.
#[test]
fn the_binary_format_is_containerssh_s() {
    let audit = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(json!({"audit": {
        "enable": true, "format": "binary", "file": {"directory": audit.path()},
        "intercept": {"stdin": true, "stdout": true, "stderr": true},
    }}));
    let mut exec = gw.ssh_password(USER, PASSWORD);
    exec.arg("cat; echo to-stderr >&2; exit 3");
    let out = run(exec, b"binary-stdin-line\n");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stdout), "binary-stdin-line\n", "{out:?}");
    let (code, screen) =
        crate::sessions::pty_run(&gw, (90, 30), None, "echo pty-$((6*7)); exit 0\\n", None);
    assert_eq!(code, 0, "{screen}");
    gw.assert_no_containers();
    drop(gw);

    assert!(files(audit.path(), "cast").is_empty(), "no asciicast files");
    let logs = files(audit.path(), "jsonl");
    assert_eq!(logs.len(), 2, "{logs:?}");
    let mut binaries: Vec<PathBuf> = std::fs::read_dir(audit.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_none())
        .collect();
    binaries.sort();
    assert_eq!(
        binaries.len(),
        2,
        "one binary log per connection: {binaries:?}"
    );
    for log in &logs {
        // `<id>.jsonl` and `<id>`: ContainerSSH's name, the connection ID.
        assert!(binaries.contains(&log.with_extension("")), "{log:?}");
    }
    let decoded: Vec<Vec<Value>> = binaries.iter().map(|b| binary_messages(b)).collect();
    for (file, messages) in binaries.iter().zip(&decoded) {
        let id = file.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(messages.iter().all(|m| m["connectionId"] == id));
        // Nanoseconds since the epoch, in order.
        let times: Vec<u64> = messages
            .iter()
            .filter_map(|m| m["timestamp"].as_u64())
            .collect();
        assert_eq!(times.len(), messages.len());
        assert!(times[0] > 1_600_000_000_000_000_000, "{times:?}");
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        let all = serde_json::to_string(messages).expect("json");
        assert!(!all.contains(PASSWORD), "a password in {all}");
    }
    let exec = decoded
        .iter()
        .find(|m| m.iter().any(|x| x["type"] == 403))
        .expect("the exec connection");
    let types: Vec<u64> = exec
        .iter()
        .filter_map(|m| m["type"].as_u64())
        .filter(|t| *t != 500 && *t != 402) // I/O and the client's environment vary
        .collect();
    assert_eq!(
        types,
        vec![0, 100, 101, 199, 301, 403, 499, 497, 1],
        "{exec:?}"
    );
    assert_eq!(exec[0]["payload"]["remoteAddr"], "127.0.0.1");
    assert_eq!(exec[0]["payload"]["country"], "XX");
    let login = exec.iter().find(|m| m["type"] == 101).expect("login");
    assert_eq!(login["payload"]["username"], USER);
    assert!(login["payload"]["password"].is_null());
    let request = exec.iter().find(|m| m["type"] == 403).expect("exec");
    assert_eq!(
        request["payload"]["program"],
        "cat; echo to-stderr >&2; exit 3"
    );
    assert_eq!(request["channelId"], 0);
    assert_eq!(io_bytes(exec, 0), "binary-stdin-line\n");
    assert_eq!(io_bytes(exec, 1), "binary-stdin-line\n");
    assert_eq!(io_bytes(exec, 2), "to-stderr\n");
    let exit = exec.iter().find(|m| m["type"] == 499).expect("exit");
    assert_eq!(exit["payload"]["exitStatus"], 3);
    assert_eq!(exit["channelId"], 0);
    assert!(exec.last().expect("messages")["channelId"].is_null());

    let pty = decoded
        .iter()
        .find(|m| m.iter().any(|x| x["type"] == 404))
        .expect("the terminal connection");
    let types: Vec<u64> = pty
        .iter()
        .filter_map(|m| m["type"].as_u64())
        .filter(|t| ![500, 402, 408].contains(t))
        .collect();
    assert_eq!(
        types,
        vec![0, 104, 105, 199, 301, 404, 405, 499, 497, 1],
        "{pty:?}"
    );
    let request = pty.iter().find(|m| m["type"] == 404).expect("pty");
    assert_eq!(request["payload"]["columns"], 90);
    assert_eq!(request["payload"]["rows"], 30);
    assert_eq!(request["payload"]["requestId"], 0);
    assert!(io_bytes(pty, 1).contains("pty-42"), "{pty:?}");
    assert!(io_bytes(pty, 0).contains("exit 0"), "{pty:?}");
    assert_eq!(
        pty.iter().find(|m| m["type"] == 499).expect("exit")["payload"]["exitStatus"],
        0
    );
}

/// `intercept` decides which streams the binary log keeps: by default not what users type.
#[test]
fn the_binary_format_leaves_out_stdin_unless_intercepted() {
    let audit = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(json!({"audit": {
        "enable": true, "format": "binary", "file": {"directory": audit.path()},
    }}));
    let mut exec = gw.ssh();
    exec.arg("cat");
    let out = run(exec, b"typed-secret\n");
    assert_eq!(text(&out.stdout), "typed-secret\n", "{out:?}");
    drop(gw);
    let log = files(audit.path(), "jsonl").pop().expect("log");
    let messages = binary_messages(&log.with_extension(""));
    assert_eq!(io_bytes(&messages, 0), "");
    assert_eq!(io_bytes(&messages, 1), "typed-secret\n");
}

/// `intercept.forwarding` with the binary format: the bytes of a forwarded connection (here
/// `-R` to an echo server on the client's side) are in the log, both ways, on a channel of
/// their own (IDs from 2^32: sessions count from 0).
#[test]
fn the_binary_format_records_forwarded_connections_when_asked() {
    let audit = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(json!({
        "audit": {"enable": true, "format": "binary", "file": {"directory": audit.path()},
                  "intercept": {"forwarding": true}},
        "security": {"forwarding": {"reverseForwardingMode": "enable"}},
    }));
    let echo_port = crate::harness::echo_tcp();
    let out = gw
        .ssh()
        .args(["-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("9100:127.0.0.1:{echo_port}"))
        .arg("printf forwarded-bytes-1234 | socat -t5 - TCP:127.0.0.1:9100,retry=100,interval=0.2")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ssh runs");
    assert_eq!(
        text(&out.stdout),
        "forwarded-bytes-1234",
        "{}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    gw.assert_no_containers();
    drop(gw);
    let binary: Vec<PathBuf> = std::fs::read_dir(audit.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_none())
        .collect();
    assert_eq!(binary.len(), 1, "{binary:?}");
    let messages = binary_messages(&binary[0]);
    let forwarded: Vec<Value> = messages
        .into_iter()
        .filter(|m| m["channelId"].as_u64().is_some_and(|c| c >= 1 << 32))
        .collect();
    // The container's side sent the bytes (stdout), the echo server sent them back (stdin).
    assert_eq!(
        io_bytes(&forwarded, 1),
        "forwarded-bytes-1234",
        "{forwarded:?}"
    );
    assert_eq!(
        io_bytes(&forwarded, 0),
        "forwarded-bytes-1234",
        "{forwarded:?}"
    );
    assert_eq!(
        forwarded.last().map(|m| m["type"].clone()),
        Some(json!(497)),
        "closed: {forwarded:?}"
    );
}

/// With `intercept.forwarding`, a forwarded connection's bytes stop when the log cannot take
/// them (the disk is full), and the connection ends: nothing passes unrecorded.
#[test]
fn forwarded_bytes_stop_when_the_audit_log_cannot_be_written() {
    use std::io::{Read, Write};
    let disk = TinyFs::mount(256 * 1024);
    let gw = Gateway::start(json!({
        "audit": {"enable": true, "format": "binary", "file": {"directory": disk.0.path()},
                  "intercept": {"forwarding": true}},
        "security": {"forwarding": {"forwardingMode": "enable"}},
    }));
    let local = free_port();
    let mut ssh = gw
        .ssh()
        .args(["-L", &format!("{local}:127.0.0.1:9000")])
        .arg("exec socat TCP-LISTEN:9000,bind=127.0.0.1,reuseaddr,fork EXEC:cat")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ssh starts");
    let mut stream = None;
    wait_until(
        "the echo server through -L",
        std::time::Duration::from_secs(60),
        || {
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", local)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut pong = [0u8; 4];
            let ok = s.write_all(b"ping").is_ok() && s.read_exact(&mut pong).is_ok();
            if ok && &pong == b"ping" {
                stream = Some(s);
            }
            stream.is_some()
        },
    );
    let stream = stream.expect("connected");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    // Incompressible bytes, far more than the disk holds.
    let len: usize = 8 << 20;
    let mut writer = stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let mut sent = 0usize;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        while sent < len {
            for b in chunk.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut received = 0usize;
    let mut reader = stream;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        received += n;
    }
    let _ = sender.join();
    assert!(
        received < len,
        "all {received} bytes came back through a forward the log could not record"
    );
    let status = wait_timeout(&mut ssh, std::time::Duration::from_secs(30));
    assert!(status.is_some(), "the connection was not ended");
    let out = ssh.wait_with_output().expect("ssh ends");
    assert!(
        text(&out.stderr).contains("audit log cannot be written"),
        "{}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    gw.assert_no_containers();
}
