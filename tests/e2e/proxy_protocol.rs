//! `ssh.proxyProtocol` behind a real HAProxy (`send-proxy` and `send-proxy-v2`): the client's
//! address, not the proxy's, reaches the auth server and the per-address limits; a PROXY header
//! from anyone else is refused; direct clients still connect.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;
use crate::webhook::gateway_with_auth_server;

/// HAProxy in TCP mode on a free port, forwarding to the gateway with a PROXY header.
struct Haproxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(gateway_port: u16, send_proxy: &str) -> Haproxy {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend ssh\n  bind 127.0.0.1:{port}\n  default_backend gateway\n\
                 backend gateway\n  server gw 127.0.0.1:{gateway_port} {send_proxy}\n"
            ),
        )
        .unwrap();
        // Debian installs it in /usr/sbin, which may not be on a test runner's PATH.
        let binary = if std::path::Path::new("/usr/sbin/haproxy").exists() {
            "/usr/sbin/haproxy"
        } else {
            "haproxy"
        };
        let child = Command::new(binary)
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts (tests/run.sh installs it)");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "haproxy did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Haproxy {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn behind_proxy(extra_ssh: Value) -> Value {
    let mut ssh = json!({"proxyProtocol": {"trustedProxies": ["127.0.0.1/32"]}});
    merge(&mut ssh, extra_ssh);
    json!({"ssh": ssh})
}

/// `ssh` with the password, through `port`, from source address `from`.
fn ssh_from(gw: &Gateway, port: u16, from: &str, command: &str) -> std::process::Output {
    let base = gw.ssh_password(USER, PASSWORD);
    let mut cmd = Command::new(base.get_program());
    // sshpass -p PASSWORD ssh ... -p PORT ...: the port flag is the one after "ssh".
    let mut in_ssh = false;
    let mut after_port_flag = false;
    for arg in base.get_args() {
        // The harness points at the gateway's own port; this goes through `port` instead.
        if after_port_flag {
            cmd.arg(port.to_string());
        } else {
            cmd.arg(arg);
        }
        after_port_flag = in_ssh && arg == "-p" && !after_port_flag;
        in_ssh |= arg == "ssh";
    }
    // Options must come before the destination, which `ssh_password` put last.
    let mut args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
    let destination = args.pop().expect("destination");
    let mut cmd = Command::new(base.get_program());
    cmd.args(args)
        .args(["-o", &format!("BindAddress={from}")])
        .arg(destination)
        .arg(command);
    run(cmd, b"")
}

#[test]
fn the_client_address_reaches_the_auth_server_through_haproxy_v1_and_v2() {
    let (auth, gw) = gateway_with_auth_server(json!({}), behind_proxy(json!({})));
    for send_proxy in ["send-proxy", "send-proxy-v2"] {
        let proxy = Haproxy::start(gw.port, send_proxy);
        let out = ssh_from(&gw, proxy.port, "127.0.0.2", "echo through-$FROM_WEBHOOK");
        assert_eq!(
            text(&out.stdout),
            "through-yes\n",
            "{send_proxy}: {out:?}\n{}",
            gw.log_text()
        );
    }
    let requests = auth.server.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        let remote = r.body["remoteAddress"].as_str().unwrap_or_default();
        assert!(remote.starts_with("127.0.0.2:"), "{remote} in {:?}", r.body);
    }
    assert!(gw.log_text().contains("127.0.0.2"), "{}", gw.log_text());
}

#[test]
fn per_address_limits_apply_to_the_client_behind_the_proxy() {
    let (_auth, gw) = gateway_with_auth_server(
        json!({}),
        behind_proxy(json!({"maxUnauthenticatedPerSource": 1})),
    );
    let proxy = Haproxy::start(gw.port, "send-proxy-v2");
    // 127.0.0.2 holds its one unauthenticated slot with a connection that says nothing.
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.2',0))\ns.connect(('127.0.0.1',{}))\ntime.sleep(30)",
            proxy.port
        ))
        .spawn()
        .expect("python3");
    gw.wait_for_log("127.0.0.2", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let refused = ssh_from(&gw, proxy.port, "127.0.0.2", "true");
    assert!(!refused.status.success(), "{refused:?}");
    // The proxy's other clients are not counted with it.
    let out = ssh_from(&gw, proxy.port, "127.0.0.3", "echo other-client");
    assert_eq!(
        text(&out.stdout),
        "other-client\n",
        "{out:?}\n{}",
        gw.log_text()
    );
    assert!(
        gw.log_text().contains("maxUnauthenticatedPerSource")
            || gw.log_text().contains("too many unauthenticated"),
        "{}",
        gw.log_text()
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn a_forged_header_from_an_untrusted_address_is_refused_and_direct_clients_connect() {
    // Only 192.0.2.1 (nobody here) is trusted: every local client is direct.
    let (_auth, gw) = gateway_with_auth_server(
        json!({}),
        json!({"ssh": {"proxyProtocol": {"trustedProxies": ["192.0.2.1/32"]}}}),
    );
    let mut forged = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    forged
        .write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 4444 22\r\nSSH-2.0-forger\r\n")
        .unwrap();
    forged
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = forged.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("SSH-2.0"),
        "{answer:?}"
    );
    gw.wait_for_log(
        "PROXY header from an address not in",
        Duration::from_secs(5),
    );
    assert!(!gw.log_text().contains("203.0.113.9"), "{}", gw.log_text());

    let out = ssh_from(&gw, gw.port, "127.0.0.1", "echo direct");
    assert_eq!(text(&out.stdout), "direct\n", "{out:?}\n{}", gw.log_text());
}

#[test]
fn a_trusted_proxy_must_send_the_header() {
    let (_auth, gw) = gateway_with_auth_server(json!({}), behind_proxy(json!({})));
    // 127.0.0.1 is trusted: a plain SSH client from there is refused with a reason.
    let mut plain = gw.ssh_password(USER, PASSWORD);
    plain.arg("true");
    let out = run(plain, b"");
    assert!(!out.status.success(), "{out:?}");
    gw.wait_for_log(
        "a trusted proxy sent no valid PROXY header",
        Duration::from_secs(10),
    );
}
