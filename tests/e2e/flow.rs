//! Data in both directions at once, programs that stop reading, and clients or gateways that go
//! away in the middle: a connection never stalls and always ends (flow control per channel).
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::*;

pub const GIB: u64 = 1 << 30;

/// Streams `len` pseudo-random bytes into `ssh ... cat` while reading its output, and
/// compares the SHA-256 of what went in and what came back.
pub fn round_trip_through_cat(mut ssh: Command, len: u64) {
    let mut child = ssh
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let mut hash = Sha256::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = len;
        while left > 0 {
            for chunk in buf.chunks_mut(8) {
                // xorshift64: fast, and no two chunks alike.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            let n = left.min(buf.len() as u64) as usize;
            hash.update(&buf[..n]);
            if stdin.write_all(&buf[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        drop(stdin);
        (hash.finalize(), len - left)
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut hash = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    hash.update(&buf[..n]);
                    total += n as u64;
                }
            }
        }
        (hash.finalize(), total)
    });
    let status = wait_timeout(&mut child, Duration::from_secs(600));
    if status.is_none() {
        let _ = child.kill();
    }
    let (sent_hash, sent) = writer.join().expect("writer");
    let (got_hash, got) = reader.join().expect("reader");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(sent, len, "the client could not send everything: {err}");
    assert_eq!(
        got, len,
        "bytes back through cat (status {status:?}): {err}"
    );
    assert_eq!(sent_hash, got_hash, "the data came back changed");
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{err}");
}

#[test]
fn a_gigabyte_round_trips_through_cat_in_connection_mode() {
    let gw = Gateway::start(json!({}));
    round_trip_through_cat(gw.ssh(), GIB);
    gw.assert_no_containers();
}

#[test]
fn a_gigabyte_round_trips_through_cat_in_session_mode() {
    let gw = Gateway::start(json!({"docker": {"execution": {"mode": "session"}}}));
    round_trip_through_cat(gw.ssh(), GIB);
    gw.assert_no_containers();
}

/// A tree of files goes in through `tar x` and comes back out through `tar c` in one pipeline:
/// both directions at once on one channel.
#[test]
fn a_tar_pipeline_carries_a_tree_both_ways() {
    let gw = Gateway::start(json!({}));
    let src = gw.dir.path().join("src");
    for d in 0..8 {
        let dir = src.join(format!("dir{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..25 {
            // Sizes from a few bytes to 2 MiB.
            random_file(
                &dir,
                &format!("f{f}"),
                (d * 25 + f) * (d * 25 + f) * 53 % (2 << 20),
            );
        }
    }
    let out_dir = gw.dir.path().join("back");
    std::fs::create_dir_all(&out_dir).unwrap();
    let script = format!(
        "tar c -C {src} . | ssh {opts} {user}@127.0.0.1 'mkdir -p /tmp/x && tar x -C /tmp/x && tar c -C /tmp/x .' | tar x -C {out}",
        src = src.display(),
        out = out_dir.display(),
        opts = ssh_option_words(&gw),
        user = USER,
    );
    let out = run_shell(&script);
    assert!(out.status.success(), "{out:?}\n{}", gw.log_text());
    assert_same_tree(&src, &out_dir);
    gw.assert_no_containers();
}

/// rsync over ssh in both directions (the image carries Debian's rsync), over one multiplexed
/// connection so both runs share the container.
#[test]
fn rsync_copies_a_tree_there_and_back() {
    let gw = Gateway::start(json!({}));
    let src = gw.dir.path().join("rsrc");
    for d in 0..4 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..60 {
            random_file(&dir, &format!("f{f}"), (d * 60 + f) * 4099 % (1 << 20));
        }
    }
    let back = gw.dir.path().join("rback");
    let control = gw.dir.path().join("rsync-cm.sock");
    let shell = format!(
        "ssh {} -o ControlMaster=auto -o ControlPath={} -o ControlPersist=30",
        ssh_option_words(&gw),
        control.display()
    );
    let there = format!(
        "rsync -a -e '{shell}' {}/ {USER}@127.0.0.1:/tmp/r/",
        src.display()
    );
    let out = run_shell(&there);
    assert!(
        out.status.success(),
        "rsync there: {out:?}\n{}",
        gw.log_text()
    );
    let again = format!(
        "rsync -a -e '{shell}' {USER}@127.0.0.1:/tmp/r/ {}/",
        back.display()
    );
    let out = run_shell(&again);
    assert!(
        out.status.success(),
        "rsync back: {out:?}\n{}",
        gw.log_text()
    );
    assert_same_tree(&src, &back);
    let exit = format!(
        "ssh {} -o ControlPath={} -O exit {USER}@127.0.0.1",
        ssh_option_words(&gw),
        control.display()
    );
    let _ = run_shell(&exit);
    gw.assert_no_containers();
}

/// Four sessions over one multiplexed OpenSSH connection; the first never reads its stdin
/// while the client pushes 12 MB into it. The other three finish promptly.
#[test]
fn a_session_that_does_not_read_stalls_only_itself() {
    let gw = Gateway::start(json!({}));
    let cp = control_master(&gw);

    let mut stalled = gw.ssh();
    stalled
        .args(["-o", &cp, "sleep 20; wc -c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut stalled = stalled.spawn().expect("ssh starts");
    let mut stdin = stalled.stdin.take().expect("stdin");
    let pusher = std::thread::spawn(move || {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..12 {
            if stdin.write_all(&zeros).is_err() {
                return;
            }
        }
    });
    // Let the pusher run into the window.
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..3 {
        let started = Instant::now();
        let mut other = gw.ssh();
        other.args(["-o", &cp, &format!("echo other-{i}")]);
        let out = run(other, b"");
        assert_eq!(text(&out.stdout), format!("other-{i}\n"), "{out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "session {i} took {:?} while another did not read",
            started.elapsed()
        );
    }
    assert!(
        stalled.try_wait().ok().flatten().is_none(),
        "the stalled session ended early"
    );
    // When it reads at last, everything arrives.
    let _ = pusher.join();
    let status = wait_timeout(&mut stalled, Duration::from_secs(60));
    let mut counted = String::new();
    stalled
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut counted)
        .unwrap();
    assert_eq!(counted.trim(), "12582912", "status {status:?}");
    let mut exit = gw.ssh();
    exit.args(["-o", &cp, "-O", "exit"]);
    let _ = run(exit, b"");
    gw.assert_no_containers();
}

/// A client pushing data into a program that never reads costs the gateway about one channel
/// window, not the stream.
#[test]
fn pushing_into_a_program_that_never_reads_keeps_gateway_memory_flat() {
    let gw = Gateway::start(json!({}));
    // Warm up: one login, so that lazily built state does not count.
    let out = run(
        {
            let mut c = gw.ssh();
            c.arg("true");
            c
        },
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    let idle = rss_kib(gw.pid());
    let mut pusher = push_forever(&gw, "sleep 60");
    std::thread::sleep(Duration::from_secs(6));
    let busy = rss_kib(gw.pid());
    assert!(
        pusher.try_wait().ok().flatten().is_none(),
        "the client stopped pushing"
    );
    let _ = pusher.kill();
    let _ = pusher.wait();
    // One 2 MiB window, its packets and the container's attach buffers: far below the stream.
    assert!(
        busy < idle + 16 * 1024,
        "gateway RSS grew from {idle} KiB to {busy} KiB while a client pushed into a program that does not read"
    );
    gw.assert_no_containers();
}

/// A client killed while its stream is stalled: the connection ends and the container goes.
#[test]
fn a_client_killed_during_a_stalled_stream_leaves_no_container() {
    let gw = Gateway::start(json!({}));
    let mut pusher = push_forever(&gw, "sleep 600");
    gw.wait_for_container();
    std::thread::sleep(Duration::from_secs(2));
    pusher.kill().expect("kill ssh");
    let _ = pusher.wait();
    gw.wait_for_log("connection closed", Duration::from_secs(20));
    gw.assert_no_containers();
}

/// SIGTERM while a stream is stalled: the gateway exits within shutdownTimeout plus its grace,
/// and leaves nothing behind.
#[test]
fn sigterm_during_a_stalled_stream_finishes_in_time() {
    let mut gw = Gateway::start(json!({"ssh": {"shutdownTimeout": "2s"}}));
    let mut pusher = push_forever(&gw, "sleep 600");
    gw.wait_for_container();
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let status = gw.terminate();
    let took = started.elapsed();
    let _ = pusher.kill();
    let _ = pusher.wait();
    assert!(status.success(), "gateway exit status {status:?}");
    assert!(
        took < Duration::from_secs(20),
        "shutdown took {took:?} with a stalled stream"
    );
    gw.assert_no_containers();
}

/// The same traffic from a second client implementation (asyncssh): both directions at once on
/// one channel, and one stalled channel beside a working one on the same connection.
#[test]
fn asyncssh_streams_both_ways_and_survives_a_stalled_channel() {
    let gw = Gateway::start(json!({}));
    let script = workspace().join("tests/e2e/flow_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(gw.port.to_string())
        .arg(&shared().key)
        .arg(USER)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        gw.log_text()
    );
    let printed = text(&out.stdout);
    assert!(printed.contains("round-trip ok"), "{printed}");
    assert!(printed.contains("stalled channel ok"), "{printed}");
    gw.assert_no_containers();
}

/// `ssh gw COMMAND` with /dev/zero on stdin, output thrown away.
fn push_forever(gw: &Gateway, command: &str) -> Child {
    let zero = std::fs::File::open("/dev/zero").expect("/dev/zero");
    gw.ssh()
        .arg(command)
        .stdin(zero)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh starts")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn ssh_option_words(gw: &Gateway) -> String {
    gw.ssh_key_options().join(" ")
}

fn run_shell(script: &str) -> std::process::Output {
    let mut sh = Command::new("sh");
    sh.args(["-c", script]);
    run(sh, b"")
}

fn assert_same_tree(a: &Path, b: &Path) {
    let list = |root: &Path| {
        let mut files = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path.strip_prefix(root).unwrap().to_path_buf());
                }
            }
        }
        files.sort();
        files
    };
    let (fa, fb) = (list(a), list(b));
    assert_eq!(fa, fb, "the trees list different files");
    assert!(fa.len() >= 200, "{} files", fa.len());
    for f in fa {
        assert_eq!(
            std::fs::read(a.join(&f)).unwrap(),
            std::fs::read(b.join(&f)).unwrap(),
            "{} differs",
            f.display()
        );
    }
}
