//! `audit.storage: s3` against a real S3-compatible server (moto's server mode, from PyPI;
//! `tests/run.sh` installs it): each connection's files are staged in `s3.local`, uploaded when
//! the connection ends (big ones in parts) with ContainerSSH's object metadata, and removed;
//! files staged while the server is down are uploaded by the next start.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

const BUCKET: &str = "containerssh-audit";
const SECRET_KEY: &str = "s3-secret-key-never-logged";

/// A moto S3 server on 127.0.0.1, stopped when dropped.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start(port: u16) -> S3Server {
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto's server starts (tests/run.sh installs moto[server])");
        let server = S3Server { child, port };
        let start = Instant::now();
        while curl(&["-sf", "-o", "/dev/null", &server.url("/")]).is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        curl(&["-sf", "-X", "PUT", &server.url(&format!("/{BUCKET}"))]).expect("bucket created");
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The keys in the bucket.
    fn keys(&self) -> Vec<String> {
        let xml = curl(&["-sf", &self.url(&format!("/{BUCKET}?list-type=2"))]).unwrap_or_default();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(String::from)
            .collect()
    }

    fn object(&self, key: &str) -> String {
        curl(&["-sf", &self.url(&format!("/{BUCKET}/{key}"))]).expect("object")
    }

    /// The object's response headers, names lowercase.
    fn head(&self, key: &str) -> Vec<(String, String)> {
        curl(&["-sfI", &self.url(&format!("/{BUCKET}/{key}"))])
            .expect("head")
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    }

    /// Waits until the bucket holds `count` objects.
    fn wait_for_objects(&self, count: usize, gw: &Gateway) -> Vec<String> {
        let start = Instant::now();
        loop {
            let keys = self.keys();
            if keys.len() >= count {
                return keys;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{count} objects expected, found {keys:?}\n{}",
                gw.log_text()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl, signing its requests (moto serves private objects only to signed requests; it does
/// not check the signatures).
fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            "AKIDTEST:test",
        ])
        .args(args)
        .output()
        .ok()?;
    out.status.success().then(|| text(&out.stdout))
}

fn s3_audit(local: &Path, port: u16) -> Value {
    json!({"audit": {
        "enable": true,
        "format": "asciinema",
        "storage": "s3",
        "s3": {
            "local": local,
            "accessKey": "AKIDCONTAINERSSH",
            "secretKey": SECRET_KEY,
            "bucket": BUCKET,
            "region": "us-east-1",
            "endpoint": format!("http://127.0.0.1:{port}"),
            "pathStyleAccess": true,
            "uploadPartSize": 5242880,
            "parallelUploads": 4,
            "metadata": {"username": true, "ip": true}
        }
    }})
}

fn staged(local: &Path) -> Vec<String> {
    std::fs::read_dir(local)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_until_empty(local: &Path, gw: &Gateway) {
    let start = Instant::now();
    while !staged(local).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still staged: {:?}\n{}",
            staged(local),
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn each_connections_audit_files_are_uploaded_to_s3_and_unstaged() {
    let s3 = S3Server::start(free_port());
    let local = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(s3_audit(local.path(), s3.port));

    // A command, and a terminal session with more output than one part (a multipart upload).
    let mut ssh = gw.ssh_password(USER, PASSWORD);
    ssh.arg("echo s3-audited");
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "s3-audited\n", "{out:?}");
    let mut ssh = gw.ssh();
    ssh.args([
        "-tt",
        "head -c 6000000 /dev/zero | tr '\\0' x; echo; echo recorded-end",
    ]);
    let out = run(ssh, b"");
    assert_eq!(out.status.code(), Some(0), "{}", gw.log_text());

    let keys = s3.wait_for_objects(3, &gw);
    wait_until_empty(local.path(), &gw);
    let logs: Vec<&String> = keys.iter().filter(|k| k.ends_with(".jsonl")).collect();
    let casts: Vec<&String> = keys.iter().filter(|k| k.ends_with(".cast")).collect();
    assert_eq!((logs.len(), casts.len()), (2, 1), "{keys:?}");

    // The audit log names the command, and the object carries ContainerSSH's metadata.
    let exec_log = logs
        .iter()
        .find(|k| s3.object(k).contains("echo s3-audited"))
        .unwrap_or_else(|| panic!("no uploaded log names the command: {keys:?}"));
    let events: Vec<Value> = s3
        .object(exec_log)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(events.first().map(|e| &e["event"]), Some(&json!("connect")));
    assert_eq!(
        events.last().map(|e| &e["event"]),
        Some(&json!("disconnect"))
    );
    let head = s3.head(exec_log);
    assert_eq!(header(&head, "x-amz-meta-username"), Some(USER), "{head:?}");
    assert_eq!(
        header(&head, "x-amz-meta-ip"),
        Some("127.0.0.1"),
        "{head:?}"
    );
    assert_eq!(header(&head, "x-amz-meta-authenticated"), Some("true"));
    assert_eq!(header(&head, "x-amz-meta-country"), Some("XX"));
    let started: u64 = header(&head, "x-amz-meta-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("timestamp");
    assert!(started > 1_600_000_000, "{head:?}");

    // The recording went up in parts (an S3 multipart ETag ends in -<parts>) and is whole.
    let head = s3.head(casts[0]);
    assert!(
        header(&head, "etag").is_some_and(|e| e.trim_matches('"').ends_with("-2")),
        "{head:?}"
    );
    assert_eq!(header(&head, "x-amz-meta-username"), Some(USER));
    let cast = s3.object(casts[0]);
    assert!(cast.len() > 6_000_000, "{}", cast.len());
    let first: Value =
        serde_json::from_str(cast.lines().next().unwrap_or_default()).expect("an asciicast header");
    assert_eq!(first["version"], 2, "{first}");
    assert!(cast.contains("recorded-end"));
    assert!(gw.log_text().contains("audit file uploaded"));
    assert!(
        !gw.log_text().contains(SECRET_KEY),
        "the secret key was logged"
    );
}

/// S3 down during the session: the files stay staged (retries, then shutdown), and the next
/// start uploads them once the server is back.
#[test]
fn files_staged_while_s3_is_down_are_uploaded_at_the_next_start() {
    let port = free_port();
    let local = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::start(s3_audit(local.path(), port));
    let mut ssh = gw.ssh_password(USER, PASSWORD);
    ssh.arg("echo while-s3-was-down");
    let out = run(ssh, b"");
    assert_eq!(text(&out.stdout), "while-s3-was-down\n", "{out:?}");
    gw.wait_for_log("audit upload failed; retrying", Duration::from_secs(60));
    assert!(gw.terminate().success(), "{}", gw.log_text());
    let left = staged(local.path());
    assert!(
        left.len() == 1 && left[0].ends_with(".jsonl"),
        "{left:?}\n{}",
        gw.log_text()
    );
    assert!(
        gw.log_text().contains("stays in audit.s3.local"),
        "{}",
        gw.log_text()
    );
    let log = left[0].clone();
    drop(gw);

    let s3 = S3Server::start(port);
    let gw = Gateway::start(s3_audit(local.path(), port));
    assert_eq!(s3.wait_for_objects(1, &gw), vec![log.clone()]);
    wait_until_empty(local.path(), &gw);
    assert!(s3.object(&log).contains("echo while-s3-was-down"));
    let head = s3.head(&log);
    assert_eq!(header(&head, "x-amz-meta-username"), Some(USER), "{head:?}");
    assert!(
        gw.log_text().contains("left in audit.s3.local"),
        "{}",
        gw.log_text()
    );
}

/// `--dump-config` shows the S3 settings with the secrets redacted; missing ones are errors
/// naming the key.
#[test]
fn s3_settings_are_validated_and_their_secrets_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    let mut config = base_config(free_port(), dir.path());
    merge(&mut config, s3_audit(&dir.path().join("staging"), 9));
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("--config")
        .arg(&path)
        .arg("--dump-config")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let yaml = text(&out.stdout);
    assert!(!yaml.contains(SECRET_KEY), "{yaml}");
    assert!(yaml.contains("secretKey: <redacted>"), "{yaml}");
    assert!(yaml.contains(&format!("bucket: {BUCKET}")), "{yaml}");

    config["audit"]["s3"]["bucket"] = json!("");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("validate")
        .arg(&path)
        .output()
        .expect("runs");
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("audit.s3.bucket"), "{out:?}");
}
