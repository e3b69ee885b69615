use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

#[test]
fn container_is_removed_when_the_client_vanishes() {
    let gw = Gateway::start(json!({}));
    let mut child = gw.spawn_ssh("sleep 300", false);
    gw.wait_for_container();
    // SIGKILL: the client sends nothing more, the TCP connection just closes.
    child.kill().expect("kill ssh");
    let _ = child.wait();
    gw.assert_no_containers();
    assert!(gw.log_text().contains("container removed"));
}

#[test]
fn orphans_of_an_earlier_run_are_reaped_at_start() {
    let host = hostname::get().unwrap().to_string_lossy().into_owned();
    assert_orphan_is_reaped(|port| format!("{host}_127.0.0.1:{port}"), json!({}));
}

/// A set `instanceId` replaces the host-name default, so a gateway that moves to another host
/// (or a pod that gets a new name) still finds what it left.
#[test]
fn orphans_are_found_by_a_configured_instance_id() {
    assert_orphan_is_reaped(
        |_| "gateway-west-1".into(),
        json!({"instanceId": "gateway-west-1"}),
    );
}

/// Plants a container labelled as the gateway's (instance id from its port) before it
/// starts; the gateway must remove it.
fn assert_orphan_is_reaped(instance: impl Fn(u16) -> String, overrides: serde_json::Value) {
    let mut orphan = String::new();
    let gw = Gateway::start_with(
        |port, _| {
            let out = Command::new("docker")
                .args(["run", "-d", "--network", "none"])
                .args(["--label", "containerssh.managed=true", "--label"])
                .arg(format!("containerssh.instance={}", instance(port)))
                .args([IMAGE, "sleep", "600"])
                .output()
                .expect("docker run");
            assert!(out.status.success(), "{out:?}");
            orphan = text(&out.stdout).trim().to_string();
        },
        overrides,
    );
    assert!(!orphan.is_empty());
    gw.wait_for_log("removed orphaned container", Duration::from_secs(30));
    let left = docker_ids(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("id={orphan}"),
    ]);
    assert!(left.is_empty(), "orphan still there");
}

#[test]
fn sigterm_lets_running_sessions_finish_then_removes_everything() {
    let mut gw = Gateway::start(json!({"ssh": {"shutdownTimeout": "30s"}}));
    let child = gw.spawn_ssh("sleep 3; echo finished-after-sigterm", true);
    gw.wait_for_container();
    let status = gw.terminate();
    let out = child.wait_with_output().expect("ssh output");
    assert_eq!(text(&out.stdout), "finished-after-sigterm\n", "{out:?}");
    assert!(status.success(), "gateway exit status {status:?}");
    gw.assert_no_containers();
    assert!(
        gw.log_text().contains("no containers left"),
        "{}",
        gw.log_text()
    );
}

#[test]
fn sigterm_disconnects_sessions_that_outlive_the_shutdown_timeout() {
    let mut gw = Gateway::start(json!({"ssh": {"shutdownTimeout": "1s"}}));
    let child = gw.spawn_ssh("sleep 300", true);
    gw.wait_for_container();
    let started = Instant::now();
    let status = gw.terminate();
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(60));
    let out = child.wait_with_output().expect("ssh output");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    gw.assert_no_containers();
}

/// A registry that accepts connections and never answers: pulling from it takes as long as
/// the engine is willing to wait. Its connections stay open until it is dropped.
struct SilentRegistry {
    port: u16,
    _accepting: std::thread::JoinHandle<()>,
}

impl SilentRegistry {
    fn start() -> SilentRegistry {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let accepting = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        SilentRegistry {
            port,
            _accepting: accepting,
        }
    }
}

/// How often `needle` occurs in the gateway's log.
fn log_count(gw: &Gateway, needle: &str) -> usize {
    gw.log_text().matches(needle).count()
}

fn wait_for_log_count(gw: &Gateway, needle: &str, count: usize, timeout: Duration) {
    let start = Instant::now();
    while log_count(gw, needle) < count {
        assert!(
            start.elapsed() < timeout,
            "the gateway log never said {needle:?} {count} times:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A client killed while its image is being pulled: the pull is abandoned, no container is
/// created, and the connection is cleaned up at once (not when the pull would have ended).
#[test]
fn a_client_killed_during_the_image_pull_leaves_no_container() {
    let registry = SilentRegistry::start();
    let image = format!("127.0.0.1:{}/containerssh/slow:1", registry.port);
    let gw = Gateway::start(json!({"docker": {"execution": {
        "container": {"image": image},
        "imagePullPolicy": "IfNotPresent"
    }}}));
    let mut child = gw.spawn_ssh("sleep 300", false);
    gw.wait_for_log("pulling image", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    child.kill().expect("kill ssh");
    let _ = child.wait();
    gw.wait_for_log(
        "container creation abandoned: the connection ended",
        Duration::from_secs(20),
    );
    gw.wait_for_log("connection cleaned up", Duration::from_secs(20));
    let cleaned = killed.elapsed();
    eprintln!("client killed during the pull: connection cleaned up after {cleaned:?}");
    assert!(
        cleaned < Duration::from_secs(10),
        "cleanup took {cleaned:?}:\n{}",
        gw.log_text()
    );
    assert!(gw.containers().is_empty(), "{:?}", gw.containers());
    assert!(!gw.log_text().contains("container started"));
}

/// Clients killed at every moment of their container's creation (right after the login,
/// then later and later): none leaves a container behind, none makes a removal fail.
#[test]
fn clients_killed_while_their_container_is_created_leave_nothing() {
    let gw = Gateway::start(json!({}));
    let delays_ms = [0u64, 10, 30, 60, 100, 150, 250, 400];
    for (i, delay) in delays_ms.iter().enumerate() {
        let mut child = gw.spawn_ssh("sleep 300", false);
        wait_for_log_count(
            &gw,
            "authentication succeeded",
            i + 1,
            Duration::from_secs(60),
        );
        std::thread::sleep(Duration::from_millis(*delay));
        child.kill().expect("kill ssh");
        let _ = child.wait();
    }
    wait_for_log_count(
        &gw,
        "connection cleaned up",
        delays_ms.len(),
        Duration::from_secs(60),
    );
    gw.assert_no_containers();
    let log = gw.log_text();
    for bad in [
        "cannot remove container",
        "status code 409",
        "already in progress",
        "removing the container timed out",
    ] {
        assert!(!log.contains(bad), "{bad:?} in the log:\n{log}");
    }
}

/// SIGTERM while a session runs for a client that has stopped reading (its output fills
/// every buffer, so the connection's russh loop is parked in a write) and another client sits
/// in its handshake: the gateway still exits within shutdownTimeout plus the documented grace,
/// and leaves no container.
#[test]
fn sigterm_finishes_in_bounded_time_whatever_clients_do() {
    let mut gw = Gateway::start(json!({"ssh": {"shutdownTimeout": "2s"}}));
    let mut stalled = gw.ssh();
    stalled
        .arg("yes containerssh-stalled-output")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut stalled = stalled.spawn().expect("ssh starts");
    gw.wait_for_container();
    gw.wait_for_log("program started", Duration::from_secs(30));
    // The client stops reading anything: its socket and then the gateway's fill up.
    signal(stalled.id(), "STOP");
    // A second client that never even sends its version line.
    let silent = std::net::TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let status = gw.terminate();
    let took = started.elapsed();
    eprintln!("gateway exited {took:?} after SIGTERM (shutdownTimeout 2s)");
    signal(stalled.id(), "CONT");
    let _ = stalled.kill();
    let _ = stalled.wait();
    drop(silent);
    assert!(status.success(), "{status:?}\n{}", gw.log_text());
    // 2 s shutdownTimeout + at most 3 s for the disconnect + 2 s after cutting connections
    // off + 10 s for cleanups + 10 s for the final sweep (README, "Running it").
    assert!(
        took < Duration::from_secs(2 + 25),
        "took {took:?}:\n{}",
        gw.log_text()
    );
    assert!(gw.containers().is_empty(), "{:?}", gw.containers());
    assert!(
        gw.log_text().contains("no containers left"),
        "{}",
        gw.log_text()
    );
}

/// Sends `count` window changes as fast as possible on a terminal session, the last one
/// COLUMNSxROWS, then asks the terminal its size. Prints `size: ROWS COLUMNS` and `alive`.
const RESIZE_STORM: &str = r#"
import asyncio, sys, time
import asyncssh

async def main(port, user, key, count, columns, rows):
    async with asyncssh.connect("127.0.0.1", port=port, username=user, client_keys=[key],
                                known_hosts=None, agent_path=None) as conn:
        process = await conn.create_process(term_type="xterm", term_size=(80, 24))
        process.stdin.write("stty -echo; echo ready\n")
        await asyncio.wait_for(process.stdout.readuntil("ready\r\n"), 240)
        started = time.monotonic()
        for i in range(count - 1):
            process.change_terminal_size(40 + i % 200, 10 + i % 90)
        process.change_terminal_size(columns, rows)
        process.stdin.write("echo size: $(stty size)\n")
        line = await asyncio.wait_for(process.stdout.readuntil("\r\n"), 240)
        # Window changes may be applied after the echo above ran: ask until the last size shows.
        deadline = time.monotonic() + 30
        while line.strip() != "size: %d %d" % (rows, columns) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            process.stdin.write("echo size: $(stty size)\n")
            line = await asyncio.wait_for(process.stdout.readuntil("\r\n"), 240)
        print(line.strip(), flush=True)
        print("storm took %.2f s" % (time.monotonic() - started), file=sys.stderr)
        process.stdin.write("echo alive; exit\n")
        print((await asyncio.wait_for(process.stdout.read(), 240)).strip(), flush=True)

port, user, key, count, columns, rows = sys.argv[1:7]
asyncio.run(main(int(port), user, key, int(count), int(columns), int(rows)))
"#;

/// The gateway's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// 2000 window changes in a burst: they collapse into a few resizes, memory stays flat, the
/// session keeps answering, and the terminal ends up with the last size.
#[test]
fn a_storm_of_window_changes_ends_at_the_last_size() {
    let gw = Gateway::start(json!({}));
    // Warm up (plugin instances, Docker client) so the comparison measures the storm.
    let mut warm = gw.ssh();
    warm.arg("true");
    assert!(run(warm, b"").status.success());
    let before = rss_kib(gw.pid());
    let mut storm = Command::new("python3");
    storm.args(["-c", RESIZE_STORM]).args([
        gw.port.to_string(),
        USER.to_string(),
        shared().key.to_string_lossy().into_owned(),
        "2000".into(),
        "123".into(),
        "45".into(),
    ]);
    let started = Instant::now();
    let mut child = storm
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (tests/run.sh installs asyncssh)");
    // Every window change passes the request filter, one by one: allow for a slow machine.
    if wait_timeout(&mut child, Duration::from_secs(300)).is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("storm output");
    let took = started.elapsed();
    let after = rss_kib(gw.pid());
    eprintln!(
        "resize storm: {took:?}, gateway RSS {before} KiB -> {after} KiB; {}",
        text(&out.stderr).trim()
    );
    assert!(out.status.success(), "{out:?}\n{}", gw.log_text());
    let printed = text(&out.stdout);
    assert!(printed.contains("size: 45 123"), "{printed}");
    assert!(printed.contains("alive"), "{printed}");
    assert!(took < Duration::from_secs(300), "the storm took {took:?}");
    assert!(
        after < before + 32 * 1024,
        "gateway memory grew from {before} KiB to {after} KiB"
    );
    gw.assert_no_containers();
}

/// Normal disconnects, in both execution modes, remove every container exactly once: no
/// removal collides with another ("409 ... removal already in progress").
#[test]
fn every_container_is_removed_once_in_both_modes() {
    for mode in ["connection", "session"] {
        let mut gw = Gateway::start(json!({"docker": {"execution": {"mode": mode}}}));
        for i in 0..4 {
            let mut ssh = gw.ssh();
            ssh.arg(format!("echo run-{i}"));
            let out = run(ssh, b"");
            assert_eq!(text(&out.stdout), format!("run-{i}\n"), "{out:?}");
        }
        let (a, b) = two_sessions(&gw, "echo one", "echo two");
        assert_eq!((a.as_str(), b.as_str()), ("one\n", "two\n"));
        let mut vanishing = gw.spawn_ssh("sleep 300", false);
        gw.wait_for_container();
        vanishing.kill().expect("kill ssh");
        let _ = vanishing.wait();
        gw.assert_no_containers();
        // One still running at shutdown, removed by the shutdown path.
        let mut running = gw.spawn_ssh("sleep 300", false);
        gw.wait_for_container();
        let status = gw.terminate();
        let _ = running.wait();
        assert!(status.success());
        gw.assert_no_containers();
        let log = gw.log_text();
        // bollard's words for a conflict: "Docker responded with status code 409: ...".
        for bad in [
            "status code 409",
            "removal already in progress",
            "cannot remove container",
        ] {
            assert!(
                !log.contains(bad),
                "{mode} mode: {bad:?} in the log:\n{log}"
            );
        }
        assert!(log.contains("no containers left"), "{log}");
    }
}
