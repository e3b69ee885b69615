//! The built-in webhook-auth plugin against a real HTTPS server with real certificates
//! (mutual TLS), configured with ContainerSSH's own `auth:` keys.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::harness::*;
use crate::webhook_server::{Answer, ClientAuth, Handler, Pki, WebhookServer};

/// A ContainerSSH auth server: the demo user's password and key are good.
pub fn auth_handler() -> Handler {
    Arc::new(|path, body| {
        let user_ok = body["username"] == USER;
        let success = match path {
            "/password" => {
                let given = body["passwordBase64"]
                    .as_str()
                    .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok());
                user_ok && given.as_deref() == Some(PASSWORD.as_bytes())
            }
            "/pubkey" => {
                let offered = body["publicKey"].as_str().unwrap_or_default();
                let mine = shared()
                    .public_key
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>();
                user_ok && offered.split_whitespace().take(2).collect::<Vec<_>>() == mine
            }
            _ => false,
        };
        // Keys in another case and unknown fields, as servers in the wild send them.
        Answer::ok(json!({
            "Success": success,
            "somethingNew": {"ignored": true},
            "environment": {"FROM_WEBHOOK": {"value": "yes", "sensitive": false}},
            // Go encodes []byte as base64: "granted-file\n".
            "files": {"/tmp/granted.txt": {"value": "Z3JhbnRlZC1maWxlCg==", "sensitive": true}},
            "metadata": {"team": {"value": "blue"}}
        }))
    })
}

/// A fresh private CA with server and client certificates (the directory lives as long as
/// the returned guard).
pub fn test_pki() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(dir.path());
    (dir, pki)
}

/// A ContainerSSH auth server (`auth_handler`) over mutual TLS, alive as long as this is.
pub struct AuthServer {
    _dir: tempfile::TempDir,
    pub server: WebhookServer,
}

/// A gateway whose `auth:` is ContainerSSH's legacy form (plus `auth_extra`) for a fresh
/// mutual-TLS auth server, with `overrides` merged into its config.
pub fn gateway_with_auth_server(auth_extra: Value, overrides: Value) -> (AuthServer, Gateway) {
    let (dir, pki) = test_pki();
    let server = WebhookServer::start(&pki, ClientAuth::Required, auth_handler());
    let gw = Gateway::start_with_auth(legacy_auth(&server, &pki, auth_extra), overrides);
    (AuthServer { _dir: dir, server }, gw)
}

/// ContainerSSH's legacy `auth:` form, with the client certificate.
pub fn legacy_auth(server: &WebhookServer, pki: &Pki, extra: Value) -> Value {
    let mut auth = json!({
        "url": server.url,
        "timeout": "2s",
        "authTimeout": "5s",
        "cacert": pki.ca_cert,
        "cert": pki.client_cert,
        "key": pki.client_key,
    });
    merge(&mut auth, extra);
    auth
}

#[test]
fn password_and_key_logins_through_a_containerssh_auth_server_over_mutual_tls() {
    let (auth, gw) = gateway_with_auth_server(json!({}), json!({}));
    let server = &auth.server;

    assert_password_run(
        &gw,
        USER,
        PASSWORD,
        "echo $FROM_WEBHOOK; cat /tmp/granted.txt; stat -c '%u %a' /tmp/granted.txt",
        "yes\ngranted-file\n1000 600\n",
    );

    let mut key = gw.ssh();
    key.arg("echo key-ok");
    let out = run(key, b"");
    assert_eq!(text(&out.stdout), "key-ok\n", "{out:?}");

    let mut bad = gw.ssh_password(USER, "wrong");
    bad.arg("true");
    assert_eq!(run(bad, b"").status.code(), Some(255));

    let requests = server.requests();
    let first = requests
        .iter()
        .find(|r| r.path == "/password")
        .expect("a password request");
    let body = &first.body;
    assert_eq!(body["username"], USER);
    let id = body["connectionId"].as_str().expect("connectionId");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(body["remoteAddress"]
        .as_str()
        .expect("remoteAddress")
        .starts_with("127.0.0.1:"));
    assert!(body["clientVersion"]
        .as_str()
        .expect("clientVersion")
        .starts_with("SSH-2.0-OpenSSH"));
    assert!(requests.iter().any(|r| r.path == "/pubkey"));
    assert!(gw.log_text().contains("authentication succeeded"));
    gw.assert_no_containers();
}

#[test]
fn connections_to_the_auth_server_are_reused() {
    let (auth, gw) = gateway_with_auth_server(json!({}), json!({}));
    let server = &auth.server;
    // Wrong passwords: each costs a webhook request but no container.
    for _ in 0..5 {
        let mut bad = gw.ssh_password(USER, "wrong");
        bad.arg("true");
        assert_eq!(run(bad, b"").status.code(), Some(255));
    }
    let requests = server.requests().len();
    assert!(requests >= 5, "{requests}");
    // One pooled connection carries them all.
    assert_eq!(
        server.connections(),
        1,
        "{} TLS connections for {requests} requests",
        server.connections()
    );
}

#[test]
fn failing_auth_server_is_retried_with_backoff_until_it_answers() {
    let (_dir, pki) = test_pki();
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = auth_handler();
    let counter = calls.clone();
    let handler: Handler =
        Arc::new(
            move |path, body| match counter.fetch_add(1, Ordering::SeqCst) {
                0 => Answer::json(500, json!({"error": "database down"})),
                1 => Answer::json(503, json!({})),
                _ => inner(path, body),
            },
        );
    let server = WebhookServer::start(&pki, ClientAuth::Required, handler);
    let gw = Gateway::start_with_auth(
        legacy_auth(&server, &pki, json!({"pubkey": false})),
        json!({}),
    );
    assert_password_run(&gw, USER, PASSWORD, "echo after-retries", "after-retries\n");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let log = gw.log_text();
    assert!(
        log.contains("answered HTTP 500") && log.contains("retrying in"),
        "{log}"
    );
}

#[test]
fn auth_server_that_never_answers_200_denies_after_auth_timeout() {
    let (_dir, pki) = test_pki();
    let handler: Handler = Arc::new(|_, _| Answer::json(502, json!({})));
    let server = WebhookServer::start(&pki, ClientAuth::Required, handler);
    let auth = legacy_auth(&server, &pki, json!({"authTimeout": "1s", "pubkey": false}));
    let gw = Gateway::start_with_auth(auth, json!({}));
    let started = std::time::Instant::now();
    let mut c = gw.ssh_password(USER, PASSWORD);
    c.arg("echo should-not-run");
    let out = run(c, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(server.requests().len() >= 2, "retried at least once");
    assert!(gw.log_text().contains("gave up after"), "{}", gw.log_text());
}

/// Each TLS mistake denies the login and says why in the gateway's log.
#[test]
fn tls_failures_deny_the_login_with_a_clear_log_line() {
    let (_dir, pki) = test_pki();
    let server = WebhookServer::start(&pki, ClientAuth::Required, auth_handler());
    let cases = [
        (
            "wrong CA",
            json!({"cacert": pki.other_ca_cert}),
            "UnknownIssuer",
        ),
        (
            "no client certificate",
            json!({"cert": null, "key": null}),
            "CertificateRequired",
        ),
        (
            "a client certificate the server does not trust",
            json!({"cert": pki.other_client_cert, "key": pki.other_client_key}),
            "alert",
        ),
    ];
    for (case, change, expected) in cases {
        let mut auth = legacy_auth(&server, &pki, json!({"pubkey": false}));
        merge(&mut auth, change);
        if auth["cert"].is_null() {
            let map = auth.as_object_mut().expect("map");
            map.remove("cert");
            map.remove("key");
        }
        let gw = Gateway::start_with_auth(auth, json!({}));
        let started = std::time::Instant::now();
        let mut c = gw.ssh_password(USER, PASSWORD);
        c.arg("echo should-not-run");
        let out = run(c, b"");
        assert_eq!(out.status.code(), Some(255), "{case}: {out:?}");
        // TLS errors are not retried: the answer comes long before authTimeout.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{case}: took {:?}",
            started.elapsed()
        );
        let log = gw.log_text();
        assert!(
            log.contains("plugin HTTP request failed") && log.contains(expected),
            "{case}: log lacks {expected:?}:\n{log}"
        );
        // Exactly one attempt: a TLS mistake does not heal by itself.
        assert_eq!(
            log.matches("plugin HTTP request failed").count(),
            1,
            "{case}: retried:\n{log}"
        );
    }
    assert!(
        server.failed_handshakes() >= 2,
        "the server refused the two connections without a trusted client certificate"
    );
    assert!(
        server.requests().iter().all(|r| r.client_cert_cn.is_some()),
        "no request got through without a trusted client certificate"
    );
}

/// Plain server-authenticated TLS (no client certificate) works too.
#[test]
fn server_only_tls_works_without_a_client_certificate() {
    let (_dir, pki) = test_pki();
    let server = WebhookServer::start(&pki, ClientAuth::Optional, auth_handler());
    let auth =
        json!({"url": server.url, "cacert": pki.ca_cert, "authTimeout": "5s", "tlsVersion": "1.2"});
    let gw = Gateway::start_with_auth(auth, json!({}));
    let mut ok = gw.ssh_password(USER, PASSWORD);
    ok.arg("echo tls-ok");
    assert_eq!(text(&run(ok, b"").stdout), "tls-ok\n", "{}", gw.log_text());
    assert!(server.requests().iter().all(|r| r.client_cert_cn.is_none()));
    gw.assert_no_containers();
}

#[test]
fn destination_outside_the_allow_list_is_never_contacted() {
    let (_dir, pki) = test_pki();
    let server = WebhookServer::start(&pki, ClientAuth::Required, auth_handler());
    // Our own form: the allow-list names a different port than the URL's.
    let auth = json!({
        "plugin": "builtin:webhook-auth",
        "config": {"password": {"url": server.url, "authTimeout": "5s"}},
        "egress": {
            "allow": ["127.0.0.1:1"],
            "tls": {"cacert": pki.ca_cert, "cert": pki.client_cert, "key": pki.client_key}
        }
    });
    let gw = Gateway::start_with_auth(auth, json!({}));
    let mut c = gw.ssh_password(USER, PASSWORD);
    c.arg("echo should-not-run");
    assert_eq!(run(c, b"").status.code(), Some(255));
    assert_eq!(server.connections(), 0, "the server was contacted");
    let log = gw.log_text();
    assert!(log.contains("destination not in egress.allow"), "{log}");
}

#[test]
fn authz_runs_after_login_and_can_refuse_or_rename() {
    let (_dir, pki) = test_pki();
    let inner = auth_handler();
    let authz_calls = Arc::new(AtomicUsize::new(0));
    let counter = authz_calls.clone();
    let handler: Handler = Arc::new(move |path, body| {
        if path == "/authz" {
            // The login's metadata comes back; only the blue team gets in, and only once:
            // the first time under another name, the second time not at all.
            let blue = body["metadata"]["team"]["value"] == "blue";
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            Answer::ok(json!({
                "success": blue && first,
                "authenticatedUsername": "demo-renamed",
                "environment": {"AUTHZ": {"value": "checked"}}
            }))
        } else {
            inner(path, body)
        }
    });
    let server = WebhookServer::start(&pki, ClientAuth::Required, handler);
    let hook = json!({
        "url": server.url, "authTimeout": "5s",
        "cacert": pki.ca_cert, "cert": pki.client_cert, "key": pki.client_key
    });
    let auth = json!({
        "password": {"method": "webhook", "webhook": hook},
        "authz": {"method": "webhook", "webhook": hook},
    });
    let gw = Gateway::start_with_auth(auth, json!({}));
    assert_password_run(
        &gw,
        USER,
        PASSWORD,
        "echo $FROM_WEBHOOK $AUTHZ",
        "yes checked\n",
    );
    let authz = server
        .requests()
        .into_iter()
        .find(|r| r.path == "/authz")
        .expect("an authz request");
    assert_eq!(authz.body["authenticatedUsername"], USER);
    assert!(
        gw.log_text().contains("as_user=demo-renamed"),
        "{}",
        gw.log_text()
    );
    // The same password again: authentication says yes, authorization says no.
    let mut refused = gw.ssh_password(USER, PASSWORD);
    refused.arg("echo should-not-run");
    let out = run(refused, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(!text(&out.stdout).contains("should-not-run"));
    assert_eq!(authz_calls.load(Ordering::SeqCst), 2);
    gw.assert_no_containers();
}

/// An auth server outage is no wrong password: 40 logins at once while it answers 503 are all
/// denied, the log says the auth service is unavailable, nothing counts toward the rate limits,
/// and once it is back the user logs in from the same address at once.
#[test]
fn an_auth_outage_denies_as_unavailable_and_locks_no_one_out() {
    let (_dir, pki) = test_pki();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let inner = auth_handler();
    let flag = down.clone();
    let handler: Handler = Arc::new(move |path, body| {
        if flag.load(Ordering::SeqCst) {
            Answer::json(503, json!({"error": "maintenance"}))
        } else {
            inner(path, body)
        }
    });
    let server = WebhookServer::start(&pki, ClientAuth::Required, handler);
    // A tight failure limit: were outage denials counted, 40 of them would lock the user out.
    let gw = Gateway::start_with_auth(
        legacy_auth(&server, &pki, json!({"authTimeout": "1s", "pubkey": false})),
        json!({"ssh": {"authRateLimit": {"maxFailuresPerIp": 3, "maxFailuresPerUser": 3}}}),
    );
    let clients: Vec<_> = (0..40)
        .map(|i| {
            let mut c = gw.ssh_password(USER, PASSWORD);
            c.arg(format!("echo in-{i}"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().expect("ssh starts")
        })
        .collect();
    for client in clients {
        let out = client.wait_with_output().expect("ssh ends");
        assert_eq!(out.status.code(), Some(255), "{out:?}");
        assert!(!text(&out.stdout).contains("in-"), "{out:?}");
    }
    let log = gw.log_text();
    let unavailable = log.matches("the auth service is unavailable").count();
    assert!(unavailable >= 10, "{unavailable} unavailable lines:\n{log}");
    assert!(!log.contains("too many recent failures"), "{log}");
    assert!(!log.contains("\"authentication failed\""), "{log}");

    down.store(false, Ordering::SeqCst);
    let started = std::time::Instant::now();
    assert_password_run(&gw, USER, PASSWORD, "echo back-in", "back-in\n");
    eprintln!("first login after the outage: {:?}", started.elapsed());
    assert!(
        !gw.log_text().contains("too many recent failures"),
        "{}",
        gw.log_text()
    );
}
