//! Remote Docker over TCP with TLS client certificates, against the local engine: stunnel
//! terminates TLS on a loopback port (requiring a client certificate from our test CA) and
//! forwards to the engine's unix socket.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

/// A new P-256 key in `key`, and either a self-signed certificate or a CSR in `out`.
fn new_key(dir: &Path, key: &str, out: &str, subject: &str, self_signed: bool) {
    let mut args = vec!["req"];
    if self_signed {
        args.extend(["-x509", "-days", "2"]);
    }
    args.extend([
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ]);
    args.extend(["-keyout", key, "-out", out, "-subj", subject]);
    openssl(dir, &args);
}

/// Signs `csr` with the test CA into `out`, with the extensions in `ext`.
fn sign(dir: &Path, csr: &str, out: &str, ext: &str) {
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            out,
            "-days",
            "2",
            "-extfile",
            ext,
        ],
    );
}

/// CA, server certificate for 127.0.0.1, a client certificate from the CA, and a rogue one.
fn make_pki(dir: &Path) {
    new_key(dir, "ca.key", "ca.pem", "/CN=containerssh test CA", true);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    new_key(dir, "server.key", "server.csr", "/CN=127.0.0.1", false);
    sign(dir, "server.csr", "server.pem", "server.ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    new_key(dir, "client.key", "client.csr", "/CN=containerssh", false);
    sign(dir, "client.csr", "client.pem", "client.ext");
    new_key(dir, "rogue.key", "rogue.pem", "/CN=rogue", true);
}

struct Stunnel(Child);

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tls_proxy(dir: &Path, port: u16) -> Stunnel {
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(String::from))
        .unwrap_or_else(|| "/var/run/docker.sock".into());
    let conf = format!(
        "foreground = yes\npid =\n[docker]\naccept = 127.0.0.1:{port}\nconnect = {socket}\n\
         cert = {d}/server.pem\nkey = {d}/server.key\nCAfile = {d}/ca.pem\n\
         requireCert = yes\nverifyChain = yes\nsslVersionMin = TLSv1.2\n",
        d = dir.display()
    );
    std::fs::write(dir.join("stunnel.conf"), conf).unwrap();
    let child = Command::new("stunnel4")
        .arg(dir.join("stunnel.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stunnel4 starts");
    wait_for_port("stunnel", port, Duration::from_secs(10));
    Stunnel(child)
}

#[test]
fn remote_docker_over_tls_with_client_certificates() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let port = free_port();
    let _proxy = start_tls_proxy(pki.path(), port);
    let d = pki.path();
    // Paths for the CA and certificate, PEM text for the key: both forms are accepted.
    let key_pem = std::fs::read_to_string(d.join("client.key")).unwrap();
    let gw = Gateway::start(json!({"docker": {"connection": {
        "host": format!("tcp://127.0.0.1:{port}"),
        "cacert": d.join("ca.pem").to_string_lossy(),
        "cert": d.join("client.pem").to_string_lossy(),
        "key": key_pem,
    }}}));
    let mut ssh = gw.ssh();
    ssh.arg("echo over-tls; cat");
    let out = run(ssh, b"stdin-over-tls\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "over-tls\nstdin-over-tls\n");
    gw.assert_no_containers();
}

#[test]
fn remote_docker_refuses_a_certificate_from_another_ca() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let port = free_port();
    let _proxy = start_tls_proxy(pki.path(), port);
    let d = pki.path();
    let config_dir = tempfile::tempdir().unwrap();
    let mut config = base_config(free_port(), config_dir.path());
    merge(
        &mut config,
        json!({"docker": {"connection": {
            "host": format!("tcp://127.0.0.1:{port}"),
            "cacert": d.join("ca.pem").to_string_lossy(),
            "cert": d.join("rogue.pem").to_string_lossy(),
            "key": d.join("rogue.key").to_string_lossy(),
        }}}),
    );
    let path = config_dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_containerssh"));
    cmd.arg("--config").arg(&path);
    let out = run(cmd, b"");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot reach the engine"),
        "{}",
        text(&out.stderr)
    );
}
