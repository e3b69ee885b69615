//! Test harness: a real gateway process, real OpenSSH clients, the real Docker engine.
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const USER: &str = "demo";
pub const PASSWORD: &str = "correct horse battery staple";
pub const IMAGE: &str = "containerssh-test/guest:5";

/// Files shared by every test in this process: the client key pair and the password hash.
pub struct Shared {
    _dir: tempfile::TempDir,
    pub key: PathBuf,
    pub public_key: String,
    pub password_hash: String,
}

pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        ensure_image();
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e@test", "-f"])
            .arg(&key)
            .output()
            .expect("ssh-keygen runs");
        assert!(out.status.success(), "ssh-keygen failed: {out:?}");
        let public_key = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
        let password_hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        Shared {
            _dir: dir,
            key,
            public_key: public_key.trim().to_string(),
            password_hash,
        }
    })
}

/// Builds the guest image once if it is missing (no registry is needed).
fn ensure_image() {
    let present = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !present {
        let script = workspace().join("tests/images/build.sh");
        let status = Command::new("sh")
            .arg(script)
            .arg(IMAGE)
            .status()
            .expect("build.sh runs");
        assert!(status.success(), "building the guest image failed");
    }
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The default test configuration: static-users plugin, the guest image, no network.
pub fn base_config(port: u16, dir: &Path) -> Value {
    let s = shared();
    json!({
        "ssh": {
            "listen": format!("127.0.0.1:{port}"),
            "hostkeys": [dir.join("host_ed25519").to_string_lossy()],
            "shutdownTimeout": "20s"
        },
        "log": {"level": "debug"},
        "pluginCacheDir": workspace().join("target/e2e-plugin-cache").to_string_lossy(),
        "auth": {
            "plugin": "builtin:static-users",
            "config": {"users": {USER: {
                "password": s.password_hash,
                "authorizedKeys": [s.public_key],
                "environment": {"FROM_AUTH": "granted"}
            }}}
        },
        "docker": {"execution": {
            "container": {"image": IMAGE, "user": "1000:1000"},
            "host": {"networkMode": "none"},
            "imagePullPolicy": "Never"
        }}
    })
}

/// Deep-merges `over` into `base` (objects merge, everything else replaces).
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// A port nobody listens on, for a server a test starts. Taken from below the kernel's
/// ephemeral range (32768 and up), where the local ports of outgoing connections (ssh clients,
/// Docker, webhooks) come from: a port picked there could be taken by one of them before the
/// server binds it. Each call of a run gets another port; it must bind on every address.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 12_000;
    const COUNT: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries of one run start at different places.
    let offset = std::process::id() % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (offset + n) % COUNT) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT);
}

pub struct Gateway {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Gateway {
    pub fn start(overrides: Value) -> Gateway {
        Self::start_with(|_, _| {}, overrides)
    }

    /// Starts a gateway whose `auth` section is `auth` as given (not merged with the
    /// default static-users one).
    pub fn start_with_auth(auth: Value, overrides: Value) -> Gateway {
        Self::start_inner(|_, _| {}, overrides, Some(auth))
    }

    /// Starts a gateway; `prepare` may act before the process starts (e.g. plant an orphan).
    pub fn start_with(prepare: impl FnOnce(u16, &Path), overrides: Value) -> Gateway {
        Self::start_inner(prepare, overrides, None)
    }

    fn start_inner(
        prepare: impl FnOnce(u16, &Path),
        overrides: Value,
        auth: Option<Value>,
    ) -> Gateway {
        let gw = Self::launch_inner(prepare, overrides, auth);
        gw.wait_for_log("containerssh is listening", Duration::from_secs(120));
        gw
    }

    /// Starts a gateway without waiting for it to listen: for a log that goes somewhere other
    /// than standard error (`gw.log` then holds only what is written there), or a start that
    /// is meant to fail.
    pub fn launch(overrides: Value) -> Gateway {
        Self::launch_inner(|_, _| {}, overrides, None)
    }

    fn launch_inner(
        prepare: impl FnOnce(u16, &Path),
        overrides: Value,
        auth: Option<Value>,
    ) -> Gateway {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = base_config(port, dir.path());
        merge(&mut config, overrides);
        if let Some(auth) = auth {
            config["auth"] = auth;
        }
        let config_path = dir.path().join("config.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).expect("json"),
        )
        .expect("write config");
        prepare(port, dir.path());
        let log = dir.path().join("gateway.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_containerssh"))
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("gateway starts");
        Gateway {
            child: Some(child),
            port,
            dir,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let log = self.log_text();
            if log.contains(needle) {
                return;
            }
            // Gone: no use waiting.
            assert!(
                !log.contains("containerssh stopped"),
                "the gateway stopped before its log said {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway log never said {needle:?}:\n{}", self.log_text());
    }

    pub fn instance(&self) -> String {
        let host = hostname::get()
            .expect("hostname")
            .to_string_lossy()
            .into_owned();
        format!("{host}_127.0.0.1:{}", self.port)
    }

    /// An `ssh` command with public-key auth, ready for arguments.
    pub fn ssh(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.common_ssh_options())
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "PreferredAuthentications=publickey",
                "-o",
                "IdentitiesOnly=yes",
                "-i",
            ])
            .arg(&shared().key)
            .arg(format!("{USER}@127.0.0.1"));
        c
    }

    /// Starts `ssh ... command` in the background, stdin closed; its output is captured when
    /// `capture` (read it with `wait_with_output`), thrown away otherwise.
    pub fn spawn_ssh(&self, command: &str, capture: bool) -> Child {
        let out = || {
            if capture {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        self.ssh()
            .arg(command)
            .stdin(Stdio::null())
            .stdout(out())
            .stderr(out())
            .spawn()
            .expect("ssh starts")
    }

    /// `sshpass -p PASSWORD ssh ...` with password auth only.
    pub fn ssh_password(&self, user: &str, password: &str) -> Command {
        let mut c = Command::new("sshpass");
        c.args(["-p", password, "ssh"])
            .args(self.common_ssh_options())
            .args([
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "NumberOfPasswordPrompts=1",
            ])
            .arg(format!("{user}@127.0.0.1"));
        c
    }

    pub fn common_ssh_options(&self) -> Vec<String> {
        self.client_options("-p", &["-o", "ConnectTimeout=60"])
    }

    /// The options `sftp` and `scp` need for public-key auth (their port flag is `-P`).
    pub fn transfer_options(&self) -> Vec<String> {
        self.key_options("-P")
    }

    /// The same for `ssh` itself, e.g. inside an `rsync -e` or a shell pipeline.
    pub fn ssh_key_options(&self) -> Vec<String> {
        self.key_options("-p")
    }

    fn key_options(&self, port_flag: &str) -> Vec<String> {
        let key = shared().key.to_string_lossy().into_owned();
        self.client_options(
            port_flag,
            &[
                "-o",
                "ConnectTimeout=60",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-i",
                &key,
            ],
        )
    }

    fn client_options(&self, port_flag: &str, extra: &[&str]) -> Vec<String> {
        let port = self.port.to_string();
        let base = [
            port_flag,
            &port,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ];
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    }

    /// Containers of this gateway instance (running or not).
    pub fn containers(&self) -> Vec<String> {
        docker_ids(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=containerssh.instance={}", self.instance()),
        ])
    }

    /// Waits (up to 60 s) for this gateway's first container and returns its id.
    pub fn wait_for_container(&self) -> String {
        let start = Instant::now();
        loop {
            if let Some(id) = self.containers().into_iter().next() {
                return id;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no container appeared:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (up to 20 s) until this gateway has no containers left; panics otherwise.
    pub fn assert_no_containers(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if self.containers().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "containers leaked: {:?}\n{}",
            self.containers(),
            self.log_text()
        );
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("gateway still running")
    }

    /// Waits (up to `timeout`) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().expect("gateway still running");
        let status = wait_timeout(&mut child, timeout);
        if status.is_none() {
            self.child = Some(child);
        }
        status
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("gateway still running");
        signal(child.id(), "TERM");
        wait_timeout(&mut child, Duration::from_secs(90)).expect("gateway exits after SIGTERM")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            if wait_timeout(&mut child, Duration::from_secs(60)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("---- gateway log ----\n{}", self.log_text());
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Waits (polling) until `done`, at most `timeout`; panics naming `what` otherwise.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(what: &str, port: u16, timeout: Duration) {
    wait_until(what, timeout, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub fn docker_ids(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Runs a command with `input` on stdin and returns its output (bounded by a timeout).
pub fn run(mut cmd: Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("command starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = match wait_timeout(&mut child, Duration::from_secs(120)) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            panic!("command timed out: {cmd:?}");
        }
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Logs in with a password, runs `command`, and checks what it printed (with the gateway's
/// log in the failure message).
pub fn assert_password_run(
    gw: &Gateway,
    user: &str,
    password: &str,
    command: &str,
    expected: &str,
) {
    let mut ssh = gw.ssh_password(user, password);
    ssh.arg(command);
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), expected, "{out:?}\n{}", gw.log_text());
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts an OpenSSH master connection in the background and returns the `ControlPath=...`
/// option that multiplexes sessions over it (end it with `-O exit`).
pub fn control_master(gw: &Gateway) -> String {
    let control = gw.dir.path().join("cm.sock");
    let cp = format!("ControlPath={}", control.display());
    let mut master = gw.ssh();
    master.args(["-o", "ControlMaster=yes", "-o", &cp, "-N", "-f"]);
    assert!(run(master, b"").status.success());
    cp
}

/// Runs two commands, one after the other, over one multiplexed OpenSSH connection.
pub fn two_sessions(gw: &Gateway, first: &str, second: &str) -> (String, String) {
    let cp = control_master(gw);
    let mut one = gw.ssh();
    one.args(["-o", &cp, first]);
    let mut two = gw.ssh();
    two.args(["-o", &cp, second]);
    let a = text(&run(one, b"").stdout);
    let b = text(&run(two, b"").stdout);
    let mut exit = gw.ssh();
    exit.args(["-o", &cp, "-O", "exit"]);
    let _ = run(exit, b"");
    (a, b)
}

/// A file of `len` bytes of a repeating non-trivial pattern, in `dir`.
pub fn random_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let data: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write");
    path
}

/// An echo server on the test machine: every connection gets back what it sent, then EOF.
pub fn echo_tcp() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || echo(s.try_clone().expect("clone"), s));
        }
    });
    port
}

/// An echo server on a Unix socket at `path`.
pub fn echo_unix(path: &Path) {
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind");
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || echo(s.try_clone().expect("clone"), s));
        }
    });
}

fn echo(mut reader: impl Read, mut writer: impl Write) {
    let _ = std::io::copy(&mut reader, &mut writer);
    // Dropping both ends closes the connection: the program inside sees EOF.
}

/// An ssh-agent on the test machine holding one new key: (the agent, its socket, the key's
/// fingerprint).
pub fn start_agent(dir: &Path) -> (Child, PathBuf, String) {
    let agent_socket = dir.join("agent.sock");
    let key = dir.join("agent_key");
    let keygen = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "forwarded-agent-key",
            "-f",
        ])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    let agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&agent_socket)
        .stdout(Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&agent_socket).is_err()
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let add = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &agent_socket)
        .output()
        .expect("ssh-add");
    assert!(add.status.success(), "{}", text(&add.stderr));
    let fingerprint = key_fingerprint(&key.with_extension("pub"));
    (agent, agent_socket, fingerprint)
}

/// The SHA-256 fingerprint (`SHA256:...`) of the key in `path` (public or private).
pub fn key_fingerprint(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path)
        .output()
        .expect("ssh-keygen -l");
    let fingerprint = text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{out:?}");
    fingerprint
}
