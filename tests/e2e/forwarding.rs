//! Forwarding into the container with the real OpenSSH client: `-L` and `-D` reach servers on
//! the container's own localhost (the editor pattern: an exec starts the server, the same
//! connection forwards to it), Unix sockets through direct-streamlocal, nothing outside with
//! `networkMode: none`, everything off unless the security policy turns it on, and no helper
//! left running once its forward closes.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::*;

/// The web page the container serves on its own localhost.
const PAGE: &str = "hello-from-the-container";
/// Starts busybox's web server on the container's 127.0.0.1:8080 (and keeps the session open).
const SERVE_PAGE: &str = "mkdir -p /tmp/www && echo hello-from-the-container > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www";

fn gateway(security_forwarding: Value, overrides: Value) -> Gateway {
    let mut config = json!({"security": {"forwarding": security_forwarding}});
    merge(&mut config, overrides);
    Gateway::start(config)
}

/// `ssh` with `forwards` (e.g. ["-L", "1234:127.0.0.1:8080"]) running `command`, in the
/// background; stderr is captured.
fn spawn_with_forwards(gw: &Gateway, forwards: &[String], command: &str) -> Child {
    gw.ssh()
        .args(forwards)
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh starts")
}

fn stop(mut child: Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().expect("ssh ends");
    text(&out.stderr)
}

/// One HTTP/1.0 GET through 127.0.0.1:`port`; the whole answer, or None if the connection
/// failed or closed without one.
fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    (!answer.is_empty()).then_some(answer)
}

/// Polls `f` until it gives Some, for up to 60 s (the container and the server start first).
fn eventually<T>(what: &str, gw: &Gateway, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} never happened:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SOCKS5 (as `ssh -D` speaks it): CONNECT to `host`:`port` by name, then one GET.
fn socks_get(socks_port: u16, host: &str, port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", socks_port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(&[5, 1, 0]).ok()?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).ok()?;
    let mut connect = vec![5, 1, 0, 3, host.len() as u8];
    connect.extend_from_slice(host.as_bytes());
    connect.extend_from_slice(&port.to_be_bytes());
    s.write_all(&connect).ok()?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).ok()?;
    if reply[1] != 0 {
        return None;
    }
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// Sends `len` random bytes through `stream` while reading what comes back (both directions
/// at once), half-closes, and returns (sha256 sent, sha256 received, bytes received).
fn echo_round_trip<S: Read + Write + Send + 'static>(
    stream: S,
    clone: S,
    len: usize,
) -> (String, String, usize) {
    let mut writer = stream;
    let sender = std::thread::spawn(move || {
        let mut hash = Sha256::new();
        let mut left = len;
        let mut chunk = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = left.min(chunk.len());
            for b in chunk[..n].iter_mut() {
                *b = rand::random();
            }
            writer.write_all(&chunk[..n]).expect("send");
            hash.update(&chunk[..n]);
            left -= n;
        }
        (hex::encode(hash.finalize()), writer)
    });
    let mut reader = clone;
    let mut hash = Sha256::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                got += n;
                if got == len {
                    break;
                }
            }
            Err(e) => panic!("read after {got} bytes: {e}"),
        }
    }
    // The writer stays open until everything came back (no half-close needed by the echo).
    let (sent, _writer) = sender.join().expect("sender");
    (sent, hex::encode(hash.finalize()), got)
}

/// The editor pattern (VS Code Remote-SSH, JetBrains Gateway): an exec starts a server in the
/// container and `-L` / `-D` over the same connection reach it while the exec stays open;
/// many forwarded connections at once; no helper left once they close.
#[test]
fn an_exec_starts_a_server_and_dash_l_and_dash_d_reach_it_over_the_same_connection() {
    let gw = gateway(json!({"forwardingMode": "enable"}), json!({}));
    let (local, socks) = (free_port(), free_port());
    let ssh = spawn_with_forwards(
        &gw,
        &[
            "-o".into(),
            "ExitOnForwardFailure=yes".into(),
            "-L".into(),
            format!("{local}:127.0.0.1:8080"),
            "-D".into(),
            format!("127.0.0.1:{socks}"),
        ],
        SERVE_PAGE,
    );
    let answer = eventually("a page through -L", &gw, || {
        http_get(local).filter(|a| a.contains(PAGE))
    });
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    // Twelve at once through the one connection.
    let many: Vec<_> = (0..12)
        .map(|_| std::thread::spawn(move || http_get(local)))
        .collect();
    for t in many {
        let a = t.join().expect("thread").expect("an answer");
        assert!(a.contains(PAGE), "{a}");
    }
    // SOCKS by name: "localhost" is resolved inside the container.
    let via_socks = socks_get(socks, "localhost", 8080).expect("SOCKS answer");
    assert!(via_socks.contains(PAGE), "{via_socks}");
    // Each forward's helper ended with it: only the web server runs besides the main process
    // (the helper that starts programs, with direct start).
    let container = gw.wait_for_container();
    let ps = eventually("helpers to end", &gw, || {
        let out = std::process::Command::new("docker")
            .args(["exec", &container, "ps", "-o", "args"])
            .output()
            .ok()?;
        let listing = text(&out.stdout);
        let forward_helpers = listing
            .lines()
            .filter(|l| l.contains("/.containerssh/helper") && !l.contains("helper spawner"))
            .count();
        (forward_helpers == 0).then_some(listing)
    });
    assert!(ps.contains("httpd"), "{ps}");
    let log = gw.log_text();
    assert!(log.contains("forwarded connection open"), "{log}");
    assert!(log.contains("forwarded connection closed"), "{log}");
    let stderr = stop(ssh);
    assert!(!stderr.contains("open failed"), "{stderr}");
    gw.assert_no_containers();
}

/// Forwarding stays off unless the policy turns it on: absent modes, and the `""` a
/// zero-filled answer from ContainerSSH's Go library carries, refuse it even when defaultMode
/// is enable. The client is told "administratively prohibited"; the log names the request.
#[test]
fn forwarding_is_off_by_default_and_an_empty_mode_keeps_it_off() {
    for security in [
        json!({}),
        json!({"defaultMode": "enable", "forwarding": {"forwardingMode": "", "socketForwardingMode": ""}}),
    ] {
        let gw = Gateway::start(json!({ "security": security }));
        let local = free_port();
        let ssh = spawn_with_forwards(
            &gw,
            // -v: OpenSSH reports refused forwards at INFO, below the tests' LogLevel=ERROR.
            &["-v".into(), "-L".into(), format!("{local}:127.0.0.1:8080")],
            SERVE_PAGE,
        );
        // The listener is the client's; the forward itself is refused at once.
        gw.wait_for_log("program started", Duration::from_secs(60));
        let answer = eventually("a refused forward", &gw, || {
            TcpStream::connect(("127.0.0.1", local)).ok().map(|mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let mut got = String::new();
                let _ = s.read_to_string(&mut got);
                got
            })
        });
        assert!(answer.is_empty(), "{security}: {answer}");
        gw.wait_for_log(
            "request denied by the security policy",
            Duration::from_secs(10),
        );
        let log = gw.log_text();
        assert!(log.contains("direct-tcpip"), "{log}");
        assert!(!log.contains("forwarded connection open"), "{log}");
        let stderr = stop(ssh);
        assert!(
            stderr.contains("administratively prohibited"),
            "{security}: {stderr}"
        );
    }
}

/// With `networkMode: none` the container's localhost is its own: a server on the gateway
/// machine's 127.0.0.1 is not reachable through `-L`, and neither is anything by name.
#[test]
fn with_network_mode_none_nothing_outside_the_container_is_reachable() {
    let outside = TcpListener::bind("127.0.0.1:0").expect("listener");
    outside.set_nonblocking(true).expect("nonblocking");
    let outside_port = outside.local_addr().expect("addr").port();
    let gw = gateway(json!({"forwardingMode": "enable"}), json!({}));
    let (to_outside, to_name) = (free_port(), free_port());
    let ssh = spawn_with_forwards(
        &gw,
        &[
            "-v".into(),
            "-L".into(),
            format!("{to_outside}:127.0.0.1:{outside_port}"),
            "-L".into(),
            format!("{to_name}:example.com:80"),
        ],
        "sleep 60",
    );
    gw.wait_for_log("program started", Duration::from_secs(60));
    for port in [to_outside, to_name] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the client listens");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let _ = s.write_all(b"hello?");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.is_empty(), "{got:?}");
    }
    gw.wait_for_log("forwarded connection refused", Duration::from_secs(30));
    assert!(
        outside.accept().is_err(),
        "the gateway machine's listener was reached from the container"
    );
    let stderr = stop(ssh);
    assert!(stderr.contains("connect failed"), "{stderr}");
}

/// The hardened container (read-only root file system, a non-root user, every capability
/// dropped) forwards too: the helper comes in its own volume. 8 MiB both ways at once through
/// `-L` to a TCP echo server, and through direct-streamlocal to a Unix-socket echo server.
#[test]
fn a_read_only_non_root_container_forwards_tcp_and_unix_sockets_both_ways() {
    let gw = gateway(
        json!({"forwardingMode": "enable", "socketForwardingMode": "enable"}),
        json!({"docker": {"execution": {"host": {
            "readonlyRootfs": true,
            "tmpfs": {"/tmp": "rw,size=16m"}
        }}}}),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let local_socket = dir.path().join("echo.sock");
    let (local, count) = (free_port(), free_port());
    let ssh = spawn_with_forwards(
        &gw,
        &[
            "-o".into(),
            "StreamLocalBindUnlink=yes".into(),
            "-L".into(),
            format!("{local}:127.0.0.1:9000"),
            "-L".into(),
            format!("{}:/tmp/echo.sock", local_socket.display()),
            "-L".into(),
            format!("{count}:127.0.0.1:9001"),
        ],
        "socat UNIX-LISTEN:/tmp/echo.sock,fork EXEC:cat & socat TCP-LISTEN:9001,bind=127.0.0.1,reuseaddr,fork 'EXEC:wc -c' & exec socat TCP-LISTEN:9000,bind=127.0.0.1,reuseaddr,fork EXEC:cat",
    );
    let len = 8 << 20;
    eventually("the TCP echo server", &gw, || {
        let mut s = TcpStream::connect(("127.0.0.1", local)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"ping").ok()?;
        let mut pong = [0u8; 4];
        s.read_exact(&mut pong).ok()?;
        (&pong == b"ping").then_some(())
    });
    let s = TcpStream::connect(("127.0.0.1", local)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let clone = s.try_clone().expect("clone");
    let (sent, received, got) = echo_round_trip(s, clone, len);
    assert_eq!(got, len);
    assert_eq!(sent, received, "TCP echo differs");

    let s = eventually("the Unix-socket echo server", &gw, || {
        UnixStream::connect(&local_socket).ok()
    });
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let clone = s.try_clone().expect("clone");
    let (sent, received, got) = echo_round_trip(s, clone, len);
    assert_eq!(got, len);
    assert_eq!(sent, received, "Unix-socket echo differs");
    // The client's EOF reaches the program exactly: `wc -c` answers only once its input ends.
    let mut s = TcpStream::connect(("127.0.0.1", count)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(&vec![b'x'; 300_000]).expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("the count");
    assert_eq!(answer.trim(), "300000");
    let log = gw.log_text();
    assert!(log.contains("direct-streamlocal"), "{log}");
    stop(ssh);
    gw.assert_no_containers();
}

/// A server that speaks first (an SSH or SMTP banner): its greeting may reach the gateway
/// before the helper's word that it connected, and must still arrive, first and whole.
#[test]
fn dash_l_to_a_server_that_speaks_first_gets_its_greeting() {
    let gw = gateway(json!({"forwardingMode": "enable"}), json!({}));
    let local = free_port();
    let ssh = spawn_with_forwards(
        &gw,
        &["-L".into(), format!("{local}:127.0.0.1:9002")],
        "exec socat TCP-LISTEN:9002,bind=127.0.0.1,reuseaddr,fork SYSTEM:'echo SSH-2.0-greeting-first; cat'",
    );
    for round in 0..5 {
        let greeting = eventually("the greeting", &gw, || {
            let mut s = TcpStream::connect(("127.0.0.1", local)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            let mut line = [0u8; 23];
            s.read_exact(&mut line).ok()?;
            s.write_all(b"after\n").ok()?;
            let mut echoed = [0u8; 6];
            s.read_exact(&mut echoed).ok()?;
            Some((String::from_utf8_lossy(&line).into_owned(), echoed))
        });
        assert_eq!(greeting.0, "SSH-2.0-greeting-first\n", "round {round}");
        assert_eq!(&greeting.1, b"after\n", "round {round}");
    }
    stop(ssh);
    gw.assert_no_containers();
}
