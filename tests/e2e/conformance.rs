//! One suite that every backend passes, as ContainerSSH runs its backend tests against each:
//! what an SSH user sees (exec, shell, terminal, signals, end of input, SFTP, subsystems, a
//! forced command, execution modes, forwarding both ways, the agent, cleanup) must not depend
//! on where the workload runs. Each scenario is a function of a [`Backend`]; `conformance!`
//! makes one test per scenario and backend (`conformance::docker::...`,
//! `conformance::kubernetes::...`, `conformance::sshproxy::...`). A new backend adds a `Backend`
//! variant and a module in the macro; a scenario a backend cannot pass is listed, with the
//! reason, in `Backend::skipped` (and the test says so). Backend-specific behaviour (hardening,
//! labels, engine errors) stays in the backend's own test file.
//!
//! The SSH proxy backend is tested against OpenSSH's sshd, started for each test on a free
//! port of this machine (the reference server), logging in as the user running the tests.
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use russh::Sig;
use serde_json::{json, Value};

use crate::harness::*;
use crate::kubernetes::Cluster;

/// A backend under test: how the gateway is configured for it and how its workloads are seen.
pub enum Backend {
    Docker,
    Kubernetes(&'static Cluster),
    SshProxy(Upstream),
}

impl Backend {
    /// Why this backend does not run `scenario`, if it does not.
    fn skipped(&self, scenario: &str) -> Option<&'static str> {
        let Backend::SshProxy(upstream) = self else {
            return None;
        };
        match scenario {
            "signals_reach_the_program_and_exit_signals_come_back" if !upstream.privsep => Some(
                "sshd signals only sessions with privilege separation: run as root with the \
                 containerssh-upstream user (tests/run.sh makes it)",
            ),
            "connection_mode_shares_a_workload_and_session_mode_does_not" => {
                Some("one backing connection per client connection: execution modes do not apply")
            }
            "unknown_subsystems_and_disable_command_are_refused" => {
                Some("the backing server decides which subsystems and commands it runs")
            }
            _ => None,
        }
    }

    /// The gateway's configuration: `workload` merged into the backend's workload settings
    /// (`docker.execution`, `kubernetes.pod`), `rest` into the whole.
    fn config(&self, workload: Value, rest: Value) -> Value {
        let mut config = match self {
            Backend::Docker => json!({"docker": {"execution": workload}}),
            Backend::Kubernetes(c) => crate::kubernetes::kubernetes(c, workload),
            Backend::SshProxy(upstream) => {
                // A backing SSH server has no workload settings: a scenario that needs some
                // must be listed in `skipped`.
                assert_eq!(
                    workload,
                    json!({}),
                    "the SSH proxy takes no workload settings"
                );
                upstream.config()
            }
        };
        merge(&mut config, rest);
        config
    }

    fn gateway(&self, workload: Value, rest: Value) -> Gateway {
        Gateway::start(self.config(workload, rest))
    }

    fn workloads(&self, gw: &Gateway) -> Vec<String> {
        match self {
            Backend::Docker => gw.containers(),
            Backend::Kubernetes(c) => crate::kubernetes::pods(c, gw),
            Backend::SshProxy(upstream) => upstream.connections(),
        }
    }

    fn wait_for_workload(&self, gw: &Gateway) -> String {
        match self {
            Backend::Docker => gw.wait_for_container(),
            Backend::Kubernetes(c) => crate::kubernetes::wait_for_pod(c, gw),
            Backend::SshProxy(upstream) => upstream.wait_for_connection(gw),
        }
    }

    fn assert_none_left(&self, gw: &Gateway) {
        match self {
            Backend::Docker => gw.assert_no_containers(),
            Backend::Kubernetes(c) => crate::kubernetes::assert_no_pods(c, gw),
            Backend::SshProxy(upstream) => upstream.assert_no_connections(gw),
        }
    }
}

/// Runs `scenario` against `backend` unless it is listed as skipped there.
fn check(backend: Backend, name: &str, scenario: fn(&Backend)) {
    match backend.skipped(name) {
        Some(why) => eprintln!("skipped: {why}"),
        None => scenario(&backend),
    }
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod docker {
            $(
                #[test]
                fn $scenario() {
                    super::check(super::Backend::Docker, stringify!($scenario), super::$scenario);
                }
            )*
        }
        mod sshproxy {
            $(
                #[test]
                fn $scenario() {
                    let upstream = super::Upstream::start();
                    super::check(super::Backend::SshProxy(upstream), stringify!($scenario), super::$scenario);
                }
            )*
        }
        mod kubernetes {
            $(
                #[test]
                fn $scenario() {
                    match crate::kubernetes::cluster() {
                        Some(c) => super::check(super::Backend::Kubernetes(c), stringify!($scenario), super::$scenario),
                        None => eprintln!(
                            "skipped: CONTAINERSSH_K8S_ENV is not set (tests/run.sh starts a cluster)"
                        ),
                    }
                }
            )*
        }
    };
}

conformance!(
    exec_reports_output_stderr_environment_and_exit_status,
    a_shell_without_a_terminal_runs_what_it_reads,
    end_of_input_and_late_output_are_exact,
    streams_pass_whole_in_both_directions_at_once,
    terminal_sessions_get_their_size_and_follow_resizes,
    signals_reach_the_program_and_exit_signals_come_back,
    sftp_and_scp_carry_files,
    unknown_subsystems_and_disable_command_are_refused,
    a_forced_command_runs_with_the_original_command,
    connection_mode_shares_a_workload_and_session_mode_does_not,
    dash_l_reaches_a_server_the_exec_started,
    dash_r_and_unix_sockets_come_back_to_the_client,
    the_agent_is_forwarded,
    a_client_that_vanishes_leaves_no_workload,
);

fn exec_reports_output_stderr_environment_and_exit_status(b: &Backend) {
    let gw = b.gateway(json!({}), json!({}));
    let mut ssh = gw.ssh();
    ssh.args([
        "-o",
        "SetEnv=GREETING=hello",
        "echo $GREETING $FROM_AUTH; echo to-stderr >&2; echo 'a  b' | wc -w; exit 3",
    ]);
    let out = run(ssh, b"");
    assert_eq!(out.status.code(), Some(3), "{out:?}\n{}", gw.log_text());
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["hello", "granted", "2"]
    );
    assert_eq!(text(&out.stderr), "to-stderr\n");
    b.assert_none_left(&gw);
}

/// `ssh -T gw < script`: a shell request without a terminal; the shell reads its commands
/// from the input and its exit status comes back.
fn a_shell_without_a_terminal_runs_what_it_reads(b: &Backend) {
    let gw = b.gateway(json!({}), json!({}));
    let mut ssh = gw.ssh();
    ssh.arg("-T");
    let out = run(ssh, b"echo in-the-shell; tty || true; exit 4\n");
    assert_eq!(out.status.code(), Some(4), "{out:?}\n{}", gw.log_text());
    let printed = text(&out.stdout);
    assert!(printed.contains("in-the-shell"), "{printed}");
    assert!(printed.contains("not a tty"), "{printed}");
    b.assert_none_left(&gw);
}

/// `printf 'b\na\n' | ssh gw sort` (sort answers only after end of input) and
/// `ssh -n gw 'sleep 2; echo late; exit 7'` (output long after the empty input ended).
fn end_of_input_and_late_output_are_exact(b: &Backend) {
    let gw = b.gateway(json!({}), json!({}));
    let mut ssh = gw.ssh();
    ssh.arg("sort");
    let out = run(ssh, b"b\na\n");
    assert_eq!(text(&out.stdout), "a\nb\n", "{out:?}\n{}", gw.log_text());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut ssh = gw.ssh();
    ssh.args(["-n", "sleep 2; echo late; exit 7"]);
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "late\n", "{out:?}\n{}", gw.log_text());
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    b.assert_none_left(&gw);
}

/// 32 MiB up through `cat` and back down at the same time, compared by digest.
fn streams_pass_whole_in_both_directions_at_once(b: &Backend) {
    let gw = b.gateway(json!({}), json!({}));
    crate::flow::round_trip_through_cat(gw.ssh(), 32 << 20);
    b.assert_none_left(&gw);
}

fn terminal_sessions_get_their_size_and_follow_resizes(b: &Backend) {
    let gw = b.gateway(json!({}), json!({}));
    // Some engines size an exec's terminal only right after the program starts (as kubectl
    // does): the first look waits a moment.
    let (code, screen) = crate::sessions::pty_run(
        &gw,
        (101, 33),
        None,
        "sleep 0.5; stty size; tty; echo TERM=$TERM; exit 3\\n",
        None,
    );
    assert_eq!(code, 3, "{screen}\n{}", gw.log_text());
    assert!(screen.contains("33 101"), "{screen}");
    assert!(screen.contains("/dev/pts/"), "{screen}");
    assert!(screen.contains("TERM=xterm"), "{screen}");
    crate::sessions::assert_window_change_reaches_the_terminal(&gw);
    b.assert_none_left(&gw);
}

fn signals_reach_the_program_and_exit_signals_come_back(b: &Backend) {
    let gw = b.gateway(json!({}), json!({}));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (out, status, _) = runtime.block_on(crate::client::exec_and_signal(
        gw.port,
        "trap 'echo got-USR1; exit 7' USR1; echo ready; while :; do sleep 0.1; done",
        Duration::from_secs(3),
        Sig::USR1,
    ));
    assert!(
        out.contains("ready") && out.contains("got-USR1"),
        "{out}\n{}",
        gw.log_text()
    );
    assert_eq!(status, Some(7));
    let (_, status, signal) = runtime.block_on(crate::client::exec_and_signal(
        gw.port,
        "sleep 30",
        Duration::from_secs(3),
        Sig::TERM,
    ));
    assert_eq!(
        signal.as_deref(),
        Some("TERM"),
        "status {status:?}\n{}",
        gw.log_text()
    );
    // A program that kills itself: OpenSSH hears exit-signal (and exits 255).
    let mut ssh = gw.ssh();
    ssh.arg("-v").arg("kill -TERM $$");
    let out = run(ssh, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(text(&out.stderr).contains("exit-signal"), "{out:?}");
    b.assert_none_left(&gw);
}

fn sftp_and_scp_carry_files(b: &Backend) {
    let gw = b.gateway(json!({}), json!({}));
    crate::transfer::assert_sftp_round_trip(&gw);
    // scp judges by the exit status: every file arrives whole and the status is exact.
    for (name, upload, download) in crate::transfer::scp_round_trips(&gw) {
        for (what, out) in [("upload", &upload), ("download", &download)] {
            assert!(
                out.status.success(),
                "scp {name} {what}: {out:?}\n{}",
                gw.log_text()
            );
        }
    }
    // The copies are in the home directory (of this machine's user, behind the SSH proxy).
    let mut ssh = gw.ssh();
    ssh.arg("rm -f sftp-protocol.bin legacy-protocol.bin");
    assert!(run(ssh, b"").status.success());
    b.assert_none_left(&gw);
}

fn sftp_batch(gw: &Gateway, commands: &[u8]) -> std::process::Output {
    let mut sftp = Command::new("sftp");
    sftp.args(gw.transfer_options())
        .args(["-b", "-"])
        .arg(format!("{USER}@127.0.0.1"));
    run(sftp, commands)
}

/// A subsystem the settings do not name is refused; `disableCommand` refuses exec and
/// subsystems but lets a shell in.
fn unknown_subsystems_and_disable_command_are_refused(b: &Backend) {
    let gw = b.gateway(json!({}), json!({}));
    let mut ssh = gw.ssh();
    ssh.args(["-s", "no-such-subsystem"]);
    let out = run(ssh, b"");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(gw.log_text().contains("unknown subsystem refused"));
    b.assert_none_left(&gw);

    let gw = b.gateway(json!({"disableCommand": true}), json!({}));
    let mut ssh = gw.ssh();
    ssh.arg("echo should-not-run");
    let out = run(ssh, b"");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(!text(&out.stdout).contains("should-not-run"));
    assert_ne!(sftp_batch(&gw, b"pwd\n").status.code(), Some(0));
    let (code, screen) =
        crate::sessions::pty_run(&gw, (80, 24), None, "echo shell-$((40+2)); exit\\n", None);
    assert_eq!(code, 0, "{screen}\n{}", gw.log_text());
    assert!(screen.contains("shell-42"), "{screen}");
    b.assert_none_left(&gw);
}

/// The security policy's `forceCommand` runs instead of an exec, a shell or a subsystem, and
/// the program sees what the client asked for in `SSH_ORIGINAL_COMMAND`, as with sshd.
fn a_forced_command_runs_with_the_original_command(b: &Backend) {
    let gw = b.gateway(
        json!({}),
        json!({"security": {"forceCommand": "echo forced: ${SSH_ORIGINAL_COMMAND:-none}"}}),
    );
    let mut ssh = gw.ssh();
    ssh.arg("whoami");
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "forced: whoami\n", "{out:?}");
    let mut ssh = gw.ssh();
    ssh.arg("-T");
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "forced: none\n", "{out:?}");
    let mut ssh = gw.ssh();
    ssh.args(["-s", "sftp"]);
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "forced: sftp\n", "{out:?}");
    b.assert_none_left(&gw);
}

/// Two sessions over one multiplexed OpenSSH connection: a mark the first leaves is seen by
/// the second in connection mode, and not in session mode (another workload).
fn connection_mode_shares_a_workload_and_session_mode_does_not(b: &Backend) {
    let gw = b.gateway(json!({"mode": "session"}), json!({}));
    let (first, second) = two_sessions(&gw, "touch /tmp/mark && echo made", "ls /tmp/mark 2>&1");
    assert_eq!(first, "made\n", "{}", gw.log_text());
    assert!(
        second.contains("No such file"),
        "{second}\n{}",
        gw.log_text()
    );
    b.assert_none_left(&gw);
    let gw = b.gateway(json!({}), json!({}));
    let (_, second) = two_sessions(&gw, "touch /tmp/mark", "ls /tmp/mark");
    assert_eq!(second, "/tmp/mark\n", "connection mode shares the workload");
    b.assert_none_left(&gw);
}

/// A page fetched over a forwarded port.
fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    (!answer.is_empty()).then_some(answer)
}

fn stop(mut ssh: Child) -> String {
    let _ = ssh.kill();
    let out = ssh.wait_with_output().expect("ssh ends");
    text(&out.stderr)
}

/// The editor pattern: an exec starts a server on the workload's localhost and `-L` over the
/// same connection reaches it while the exec stays open; a destination that does not resolve
/// inside is "connect failed", as from sshd.
fn dash_l_reaches_a_server_the_exec_started(b: &Backend) {
    let gw = b.gateway(
        json!({}),
        json!({"security": {"forwarding": {"forwardingMode": "enable"}}}),
    );
    // Kubernetes test pods share this machine's network: a port free here.
    let (inside, local, elsewhere) = (free_port(), free_port(), free_port());
    let ssh = gw
        .ssh()
        .args([
            "-v".to_string(),
            "-L".to_string(),
            format!("{local}:127.0.0.1:{inside}"),
            "-L".to_string(),
            format!("{elsewhere}:no-such-host.invalid:80"),
        ])
        .arg(format!(
            "mkdir -p /tmp/www.$$ && echo page-from-inside > /tmp/www.$$/index.html && \
             exec httpd -f -p 127.0.0.1:{inside} -h /tmp/www.$$"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh starts");
    let started = Instant::now();
    let answer = loop {
        if let Some(a) = http_get(local).filter(|a| a.contains("page-from-inside")) {
            break a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no page through -L:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    assert_eq!(http_get(elsewhere), None);
    gw.wait_for_log("forwarded connection refused", Duration::from_secs(30));
    let stderr = stop(ssh);
    assert!(stderr.contains("connect failed"), "{stderr}");
    b.assert_none_left(&gw);
}

/// `ssh -R` (TCP) and streamlocal-forward (a Unix socket): a program inside connects to the
/// listener and 8 MiB go to an echo server on the client's side and back, compared by digest.
fn dash_r_and_unix_sockets_come_back_to_the_client(b: &Backend) {
    let gw = b.gateway(
        json!({}),
        json!({"security": {"forwarding": {
            "reverseForwardingMode": "enable", "socketListenMode": "enable"}}}),
    );
    let echo_port = echo_tcp();
    let dir = tempfile::tempdir().expect("tempdir");
    let local_socket = dir.path().join("echo.sock");
    echo_unix(&local_socket);
    let inside = free_port();
    // Unique: behind the SSH proxy, this machine's /tmp is the one inside.
    let socket = format!("/tmp/forwarded-{inside}.sock");
    let through = |socat_address: &str| {
        format!(
            "head -c 8388608 /dev/urandom > /tmp/d.$$ && sha256sum < /tmp/d.$$ && \
             socat -t30 {socat_address},retry=150,interval=0.2 - < /tmp/d.$$ | sha256sum"
        )
    };
    let script = format!(
        "{} && {}",
        through(&format!("TCP:127.0.0.1:{inside}")),
        through(&format!("UNIX-CONNECT:{socket}"))
    );
    let out = gw
        .ssh()
        .args(["-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("{inside}:127.0.0.1:{echo_port}"))
        .arg("-R")
        .arg(format!("{socket}:{}", local_socket.display()))
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs");
    let printed = text(&out.stdout);
    let sums: Vec<&str> = printed
        .split_whitespace()
        .filter(|w| w.len() == 64)
        .collect();
    assert_eq!(
        sums.len(),
        4,
        "{printed}\n{}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    assert_eq!(sums[0], sums[1], "TCP through -R differs");
    assert_eq!(sums[2], sums[3], "Unix socket through -R differs");
    // The listener's socket file stays behind on a backing SSH server.
    let mut ssh = gw.ssh();
    ssh.arg(format!("rm -f {socket}"));
    assert!(run(ssh, b"").status.success());
    b.assert_none_left(&gw);
}

/// `ssh -A`: `ssh-add -l` inside lists the key the client's agent holds; the socket is in a
/// directory of the user's own (0700).
fn the_agent_is_forwarded(b: &Backend) {
    let gw = b.gateway(
        json!({}),
        json!({"security": {"forwarding": {"socketListenMode": "enable"}}}),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut agent, agent_socket, fingerprint) = start_agent(dir.path());
    let out = gw
        .ssh()
        .arg("-A")
        .arg("ls -ld $(dirname $SSH_AUTH_SOCK); ssh-add -l")
        .env("SSH_AUTH_SOCK", &agent_socket)
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs");
    let _ = agent.kill();
    let _ = agent.wait();
    let printed = text(&out.stdout);
    assert!(
        out.status.success() && printed.contains(&fingerprint),
        "{printed}\n{}\n{}",
        text(&out.stderr),
        gw.log_text()
    );
    assert!(printed.contains("forwarded-agent-key"), "{printed}");
    // The socket's directory is the user's alone, as sshd makes it.
    assert!(printed.contains("drwx------"), "{printed}");
    b.assert_none_left(&gw);
}

/// SIGKILL of the client during a session: the TCP connection just closes, and the workload
/// goes all the same.
fn a_client_that_vanishes_leaves_no_workload(b: &Backend) {
    let gw = b.gateway(json!({}), json!({}));
    let mut child = gw.spawn_ssh("sleep 300", false);
    let name = b.wait_for_workload(&gw);
    assert!(b.workloads(&gw).contains(&name));
    child.kill().expect("kill ssh");
    let _ = child.wait();
    b.assert_none_left(&gw);
}

/// OpenSSH's sshd as the backing server of the SSH proxy backend: its own host key, the test
/// client's key authorised, every environment variable accepted, sftp, and a PATH that has
/// busybox's httpd (as the test image has).
pub struct Upstream {
    child: Child,
    port: u16,
    fingerprint: String,
    user: String,
    /// Whether sshd runs the sessions with privilege separation (as root, for another user).
    privsep: bool,
    _dir: tempfile::TempDir,
}

impl Upstream {
    fn start() -> Upstream {
        let dir = tempfile::tempdir().expect("tempdir");
        // The session user reads the authorised keys and the PATH directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let host_key = dir.path().join("host_ed25519");
        let keygen = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .output()
            .expect("ssh-keygen");
        assert!(keygen.status.success(), "{keygen:?}");
        let fingerprint = key_fingerprint(&host_key.with_extension("pub"));
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, &shared().public_key).expect("authorized_keys");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        std::os::unix::fs::symlink("/bin/busybox", bin.join("httpd")).expect("httpd link");
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile none\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nAcceptEnv *\nAllowTcpForwarding yes\n\
                 StreamLocalBindUnlink yes\n\
                 SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\nLogLevel VERBOSE\n",
                host_key.display(),
                authorized.display(),
                bin.display(),
            ),
        )
        .expect("sshd_config");
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("sshd.log")).expect("sshd log"),
            ))
            .spawn()
            .expect("sshd starts (openssh-server)");
        wait_for_port("sshd", port, Duration::from_secs(20));
        let id = |args: &[&str]| {
            let out = Command::new("id").args(args).output().expect("id");
            out.status
                .success()
                .then(|| text(&out.stdout).trim().to_string())
        };
        let root = id(&["-u"]).as_deref() == Some("0");
        let privsep = root && id(&["-u", "containerssh-upstream"]).is_some();
        let user = match privsep {
            true => "containerssh-upstream".to_string(),
            false => id(&["-un"]).unwrap_or_default(),
        };
        Upstream {
            child,
            port,
            fingerprint,
            user,
            privsep,
            _dir: dir,
        }
    }

    fn config(&self) -> Value {
        json!({
            "backend": "sshproxy",
            "sshproxy": {
                "server": "127.0.0.1",
                "port": self.port,
                "username": self.user,
                "privateKey": shared().key.to_string_lossy(),
                "allowedHostKeyFingerprints": [self.fingerprint],
                "timeout": "20s"
            }
        })
    }

    /// The gateway's connections to this sshd (established TCP connections to its port).
    fn connections(&self) -> Vec<String> {
        let out = Command::new("ss")
            .args(["-Htn", "state", "established"])
            .arg(format!("( dport = :{} )", self.port))
            .output()
            .expect("ss");
        assert!(out.status.success(), "ss failed: {out:?}");
        text(&out.stdout)
            .lines()
            .filter_map(|l| {
                // Recv-Q Send-Q Local Peer: the addresses name the connection.
                let fields: Vec<&str> = l.split_whitespace().collect();
                (fields.len() >= 4).then(|| format!("{} {}", fields[2], fields[3]))
            })
            .collect()
    }

    fn wait_for_connection(&self, gw: &Gateway) -> String {
        let started = Instant::now();
        loop {
            if let Some(c) = self.connections().into_iter().next() {
                return c;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no backing connection:\n{}",
                gw.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn assert_no_connections(&self, gw: &Gateway) {
        let started = Instant::now();
        while !self.connections().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "backing connections left: {:?}\n{}",
                self.connections(),
                gw.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self._dir.path().join("sshd.log"));
            eprintln!("the backing sshd's log:\n{}", log.unwrap_or_default());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
