//! Password login through the webhook-auth plugin over mutual TLS, against a native reqwest
//! call to the same HTTPS server with the same TLS settings; then whole SSH logins per second
//! through the real gateway with that plugin, and the gateway's CPU time per login.
//!
//!   cargo bench -p containerssh --bench webhook_auth
//!
//! Target: plugin call / native call at most 1.3 (both reuse their TLS connections).
#[path = "../../tests/e2e/webhook_server.rs"]
#[allow(dead_code)]
mod webhook_server;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use containerssh::plugin::tls::TlsSettings;
use containerssh::plugin::{AuthOutcome, ConnectionInfo, PluginRuntime, PluginSettings};
use serde_json::{json, Value};
use webhook_server::{Answer, ClientAuth, Handler, Pki, WebhookServer};

const PASSWORD: &str = "open sesame";
const ROUNDS: usize = 5;
const CALLS_PER_ROUND: u32 = 400;

fn handler() -> Handler {
    let expected = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    Arc::new(move |_, body| Answer::ok(json!({"success": body["passwordBase64"] == expected})))
}

fn conn() -> ConnectionInfo {
    ConnectionInfo {
        connection_id: "0123456789abcdef0123456789abcdef".into(),
        remote_address: "127.0.0.1:40000".into(),
        client_version: "SSH-2.0-OpenSSH_9.2p1".into(),
        username: "alice".into(),
    }
}

fn tls(pki: &Pki) -> TlsSettings {
    TlsSettings {
        cacert: Some(pki.ca_cert.to_string_lossy().into_owned()),
        cert: Some(pki.client_cert.to_string_lossy().into_owned()),
        key: Some(pki.client_key.to_string_lossy().into_owned()),
        ..Default::default()
    }
}

/// The request the plugin sends, sent natively.
async fn native_login(client: &reqwest::Client, url: &str) -> bool {
    let c = conn();
    let body = json!({
        "username": c.username, "remoteAddress": c.remote_address,
        "connectionId": c.connection_id, "clientVersion": c.client_version,
        "passwordBase64": base64::engine::general_purpose::STANDARD.encode(PASSWORD),
    });
    let request = client
        .post(format!("{url}/password"))
        .header("content-type", "application/json")
        .body(body.to_string());
    let Ok(resp) = request.send().await else {
        return false;
    };
    if resp.status() != 200 {
        return false;
    }
    resp.bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v["success"] == true)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(dir.path());
    let server = WebhookServer::start(&pki, ClientAuth::Required, handler());

    let settings: PluginSettings = serde_json::from_value(json!({
        "plugin": "builtin:webhook-auth",
        "config": {"password": {"url": server.url, "authTimeout": "2s"}},
        "egress": {"allow": [format!("127.0.0.1:{}", server.port)], "tls": tls(&pki)},
    }))
    .expect("settings");
    let runtime = PluginRuntime::new(None).expect("runtime");
    let plugin = runtime
        .load_authenticator("auth", &settings)
        .expect("plugin");
    let native = reqwest::Client::builder()
        .use_preconfigured_tls(tls(&pki).client_config().expect("tls"))
        .build()
        .expect("client");

    let (mut plugin_us, mut native_us) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for _ in 0..50 {
            assert!(matches!(
                plugin.password(&conn(), PASSWORD.as_bytes()).await,
                AuthOutcome::Success(_)
            ));
            assert!(native_login(&native, &server.url).await);
        }
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for _ in 0..CALLS_PER_ROUND {
                let ok = matches!(
                    plugin.password(&conn(), PASSWORD.as_bytes()).await,
                    AuthOutcome::Success(_)
                );
                assert!(ok, "plugin login failed");
            }
            plugin_us.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS_PER_ROUND));
            let start = Instant::now();
            for _ in 0..CALLS_PER_ROUND {
                assert!(
                    native_login(&native, &server.url).await,
                    "native login failed"
                );
            }
            native_us.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS_PER_ROUND));
        }
    });
    let (p, n) = (median(plugin_us), median(native_us));
    println!("webhook password check, mutual TLS, reused connections ({ROUNDS} rounds x {CALLS_PER_ROUND} calls, median):");
    println!("  webhook-auth plugin: {p:8.1} us/call");
    println!("  native reqwest:      {n:8.1} us/call");
    println!("  ratio plugin/native: {:.2} (target <= 1.3)", p / n);
    println!(
        "  TLS connections opened by the server: {}",
        server.connections()
    );

    logins_per_second(&rt, &server, &pki);
}

/// Full SSH logins (key exchange + password via the webhook) against the real gateway.
fn logins_per_second(rt: &tokio::runtime::Runtime, server: &WebhookServer, pki: &Pki) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let config = json!({
        "ssh": {"listen": format!("127.0.0.1:{port}"), "hostkeys": [dir.path().join("hk")],
                "authRateLimit": {"maxFailuresPerIp": 0, "maxFailuresPerUser": 0}},
        "log": {"level": "warning"},
        "auth": {"url": server.url, "cacert": pki.ca_cert, "cert": pki.client_cert,
                 "key": pki.client_key, "authTimeout": "5s", "pubkey": false},
        "docker": {"execution": {"container": {"image": "unused:1"}, "imagePullPolicy": "Never"}}
    });
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway");
    let up = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "gateway did not start");
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or_default();
        let f: Vec<f64> = after
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // utime and stime are fields 14 and 15; after "pid (comm)" they are the 12th and 13th.
        (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
    };
    const PARALLEL: usize = 4;
    const PER_TASK: usize = 100;
    rt.block_on(login_burst(port, 2, 10)); // warm-up: plugin instances, TLS connection
    let cpu_before = cpu(child.id());
    let start = Instant::now();
    rt.block_on(login_burst(port, PARALLEL, PER_TASK));
    let wall = start.elapsed().as_secs_f64();
    let cpu_used = cpu(child.id()) - cpu_before;
    let logins = (PARALLEL * PER_TASK) as f64;
    println!(
        "SSH password logins through the gateway ({PARALLEL} clients in parallel, {} logins):",
        logins as usize
    );
    println!("  logins per second:        {:8.1}", logins / wall);
    println!(
        "  gateway CPU per login:    {:8.2} ms",
        cpu_used * 1000.0 / logins
    );
    let _ = child.kill();
    let _ = child.wait();
}

async fn login_burst(port: u16, parallel: usize, per_task: usize) {
    let tasks: Vec<_> = (0..parallel)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let config = Arc::new(russh::client::Config::default());
                    let mut h = russh::client::connect(config, ("127.0.0.1", port), AcceptAny)
                        .await
                        .expect("connect");
                    let r = h
                        .authenticate_password("alice", PASSWORD)
                        .await
                        .expect("auth");
                    assert!(
                        matches!(r, russh::client::AuthResult::Success),
                        "login refused"
                    );
                    let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
}

struct AcceptAny;

impl russh::client::Handler for AcceptAny {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}
