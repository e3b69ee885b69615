//! The built-in webhook-config plugin against a real HTTPS config server (mutual TLS),
//! configured with ContainerSSH's `configserver:` keys.
use std::sync::Arc;

use serde_json::{json, Value};

use crate::harness::*;
use crate::webhook::test_pki;
use crate::webhook_server::{Answer, ClientAuth, Handler, WebhookServer};

/// Two users with the same password: the config server treats them differently.
fn two_users() -> Value {
    let s = shared();
    json!({"config": {"users": {
        USER: {"password": s.password_hash},
        "other": {"password": s.password_hash}
    }}})
}

#[test]
fn config_server_answer_applies_to_that_connection_only() {
    let (_dir, pki) = test_pki();
    let handler: Handler = Arc::new(|_, body| {
        if body["username"] == USER {
            // An explicit `false` turns off the file's read-only root file system, a
            // security section forces a command, and the grant gains a variable.
            Answer::ok(json!({
                "config": {
                    "docker": {"execution": {"host": {"readonlyRootfs": false}}},
                    "security": {"forceCommand": "touch /tmp/written && echo wrote:$SSH_ORIGINAL_COMMAND:$FROM_CONFIG"}
                },
                "environment": {"FROM_CONFIG": {"value": "cfg"}}
            }))
        } else {
            Answer::ok(json!({"config": {}}))
        }
    });
    let server = WebhookServer::start(&pki, ClientAuth::Required, handler);
    let gw = Gateway::start(json!({
        "auth": two_users(),
        "configserver": {
            "url": format!("{}/config", server.url),
            "timeout": "2s",
            "cacert": pki.ca_cert, "cert": pki.client_cert, "key": pki.client_key
        },
        "docker": {"execution": {"host": {"readonlyRootfs": true}}},
        // The answer's `false` must switch the setting off (the default skips zero values).
        "configMerge": "explicit"
    }));

    assert_password_run(&gw, USER, PASSWORD, "original", "wrote:original:cfg\n");

    let mut other = gw.ssh_password("other", PASSWORD);
    other.arg("touch /tmp/written || echo read-only");
    let out = run(other, b"");
    assert!(text(&out.stdout).contains("read-only"), "{out:?}");

    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one config request per connection");
    assert!(requests.iter().all(|r| r.path == "/config"));
    assert_eq!(requests[0].body["authenticatedUsername"], USER);
    assert!(requests[0].body["connectionId"]
        .as_str()
        .is_some_and(|c| c.len() == 32));
    gw.assert_no_containers();
}

#[test]
fn an_invalid_config_answer_refuses_the_connection_with_a_reason() {
    let (_dir, pki) = test_pki();
    for (answer, expected_log) in [
        (
            json!({"docker": {"execution": {"host": {"memroy": 5}}}}),
            "memroy",
        ),
        // A policy the filter cannot read is refused at login, not after it.
        (
            json!({"security": {"env": {"mode": "sometimes"}}}),
            "config server answer: security",
        ),
    ] {
        let handler: Handler = Arc::new(move |_, _| Answer::ok(json!({"config": answer.clone()})));
        let server = WebhookServer::start(&pki, ClientAuth::Required, handler);
        let gw = Gateway::start(json!({
            "configserver": {
                "url": server.url,
                "cacert": pki.ca_cert, "cert": pki.client_cert, "key": pki.client_key
            }
        }));
        assert_refused_with_reason(&gw, expected_log);
    }
}

#[test]
fn an_unreachable_config_server_refuses_the_connection_with_a_reason() {
    let (_dir, pki) = test_pki();
    // Nothing listens there.
    let port = free_port();
    let gw = Gateway::start(json!({
        "configserver": {
            "url": format!("https://127.0.0.1:{port}/config"),
            "timeout": "1s", "authTimeout": "2s",
            "cacert": pki.ca_cert, "cert": pki.client_cert, "key": pki.client_key
        }
    }));
    assert_refused_with_reason(&gw, "Connection refused");
}

fn assert_refused_with_reason(gw: &Gateway, expected_log: &str) {
    let mut c = gw.ssh();
    c.arg("echo should-not-run");
    let out = run(c, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        text(&out.stderr).contains("configuration for this connection is unavailable"),
        "{out:?}"
    );
    let log = gw.log_text();
    assert!(
        log.contains(expected_log),
        "the log says why ({expected_log}):\n{log}"
    );
    assert!(gw.containers().is_empty());
}

/// A config server built with ContainerSSH's Go library answers the whole AppConfig at zero
/// values plus what it set; with the default merge only that applies.
#[test]
fn a_zero_filled_answer_from_containerssh_go_library_applies_what_it_set() {
    let (_dir, pki) = test_pki();
    let fixture = workspace().join("tests/fixtures/go-zero-appconfig.json");
    let zero: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let handler: Handler = Arc::new(move |_, body| {
        let mut config = zero.clone();
        let container = &mut config["docker"]["execution"]["container"];
        container["Image"] = json!(IMAGE);
        if body["username"] == USER {
            container["Env"] = json!(["FROM_GO_SERVER=zero-filled"]);
            config["docker"]["timeouts"]["containerStart"] = json!(60_000_000_000u64);
        }
        Answer::ok(json!({"config": config}))
    });
    let server = WebhookServer::start(&pki, ClientAuth::Required, handler);
    let gw = Gateway::start(json!({
        "auth": two_users(),
        "configserver": {
            "url": format!("{}/config", server.url),
            "cacert": pki.ca_cert, "cert": pki.client_cert, "key": pki.client_key
        }
    }));
    assert_password_run(&gw, USER, PASSWORD, "echo $FROM_GO_SERVER", "zero-filled\n");
    // The file's settings stay where the answer has zero values: user 1000, no network.
    assert_password_run(
        &gw,
        "other",
        PASSWORD,
        "id -u; ls /sys/class/net",
        "1000\nlo\n",
    );
    assert_eq!(server.requests().len(), 2);
    gw.assert_no_containers();
}
