//! The Docker backend's warm pool (`docker.execution.pool`): logins whose settings match take a
//! started container, nothing of one connection reaches another, a config answer that differs
//! starts cold, and shutdown or a restart leaves no member behind.
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;
use crate::observe::{http_get, metric};
use crate::webhook::test_pki;
use crate::webhook_server::{Answer, ClientAuth, Handler, WebhookServer};

fn pool(size: usize) -> Value {
    json!({"docker": {"execution": {"pool": {"size": size, "refillConcurrency": 2}}}})
}

/// Waits until the pool has reported itself full and returns its members.
fn wait_for_full_pool(gw: &Gateway, n: usize) -> Vec<String> {
    gw.wait_for_log("warm pool full", Duration::from_secs(60));
    wait_for_containers(gw, n)
}

/// Waits until the gateway has exactly `n` containers.
fn wait_for_containers(gw: &Gateway, n: usize) -> Vec<String> {
    wait_for(gw, &gw.instance(), |ids| ids.len() == n)
}

/// Containers labelled with gateway instance `instance`.
fn containers_of(instance: &str) -> Vec<String> {
    docker_ids(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=containerssh.instance={instance}"),
    ])
}

/// Waits (up to 60 s) until the containers of `instance` satisfy `done`, and returns them.
fn wait_for(gw: &Gateway, instance: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let ids = containers_of(instance);
        if done(&ids) {
            return ids;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "containers now: {ids:?}\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `command` with the test key and returns its stdout.
fn ssh_out(gw: &Gateway, command: &str) -> String {
    let mut cmd = gw.ssh();
    cmd.arg(command);
    let out = run(cmd, b"");
    assert!(out.status.success(), "{out:?}\n{}", gw.log_text());
    text(&out.stdout)
}

/// Docker's default host name is the first 12 characters of the container id.
fn is_one_of(hostname: &str, ids: &[String]) -> bool {
    ids.iter().any(|id| id.starts_with(hostname.trim()))
}

#[test]
fn logins_take_pooled_containers_and_never_share_one() {
    let mport = free_port();
    let mut overrides = pool(2);
    merge(
        &mut overrides,
        json!({"metrics": {"enable": true, "listen": format!("127.0.0.1:{mport}")}}),
    );
    let gw = Gateway::start(overrides);
    let pooled = wait_for_full_pool(&gw, 2);

    // The first login leaves a file behind; the auth plugin's environment is applied.
    let first = ssh_out(&gw, "hostname; echo $FROM_AUTH; touch /tmp/left-by-first");
    let mut lines = first.lines();
    let first_host = lines.next().unwrap_or_default().to_string();
    assert!(
        is_one_of(&first_host, &pooled),
        "{first_host} not from {pooled:?}"
    );
    assert_eq!(lines.next(), Some("granted"));
    gw.wait_for_log("container taken from the warm pool", Duration::from_secs(5));

    // Every later login gets a container of its own: never the first one again, never its file.
    let mut seen = vec![first_host];
    for _ in 0..3 {
        let out = ssh_out(
            &gw,
            "hostname; ls /tmp/left-by-first 2>/dev/null || echo clean",
        );
        let mut lines = out.lines();
        let host = lines.next().unwrap_or_default().to_string();
        assert!(
            !seen.contains(&host),
            "container {host} served two connections"
        );
        assert_eq!(lines.next(), Some("clean"));
        seen.push(host);
    }
    // Used containers are removed and the pool is refilled to its size.
    wait_for(&gw, &gw.instance(), |ids| {
        ids.len() == 2 && ids.iter().all(|id| !seen.iter().any(|h| id.starts_with(h)))
    });

    let (_, page) = http_get(mport, "/metrics");
    let hits = metric(&page, r#"containerssh_pool_hits_total{backend="docker"}"#).unwrap_or(0.0);
    assert!(hits >= 2.0, "{page}");
    assert!(
        metric(&page, r#"containerssh_pool_ready{backend="docker"}"#).is_some(),
        "{page}"
    );
    assert!(
        page.contains("containerssh_pool_refill_seconds_count"),
        "{page}"
    );
}

#[test]
fn a_config_answer_that_differs_starts_cold_and_one_that_matches_is_served() {
    let (_dir, pki) = test_pki();
    let handler: Handler = Arc::new(|_, body| {
        if body["username"] == USER {
            Answer::ok(json!({"config": {
                "docker": {"execution": {"container": {"env": ["FROM_ANSWER=1"]}}}
            }}))
        } else {
            // Same settings as the file, plus a file for the container ("granted-file\n").
            Answer::ok(json!({
                "config": {},
                "files": {"/tmp/granted.txt": {"value": "Z3JhbnRlZC1maWxlCg=="}}
            }))
        }
    });
    let server = WebhookServer::start(&pki, ClientAuth::Required, handler);
    let s = shared();
    let mut overrides = pool(1);
    merge(
        &mut overrides,
        json!({
            "auth": {"config": {"users": {
                USER: {"password": s.password_hash, "authorizedKeys": [s.public_key]},
                "other": {"password": s.password_hash}
            }}},
            "configserver": {
                "url": format!("{}/config", server.url),
                "cacert": pki.ca_cert, "cert": pki.client_cert, "key": pki.client_key
            }
        }),
    );
    let gw = Gateway::start(overrides);
    let pooled = wait_for_full_pool(&gw, 1);

    // Changed settings: a container of its own, started cold, with the answer applied.
    let out = ssh_out(&gw, "hostname; echo $FROM_ANSWER");
    let mut lines = out.lines();
    assert!(
        !is_one_of(lines.next().unwrap_or_default(), &pooled),
        "{out}"
    );
    assert_eq!(lines.next(), Some("1"));
    assert!(
        gw.log_text().contains("settings_differ"),
        "{}",
        gw.log_text()
    );
    // The cold container goes with its connection; the pool member was left alone.
    wait_for(&gw, &gw.instance(), |ids| ids == pooled);

    // An answer that keeps the settings: the pooled container serves it, with the granted
    // file in place before the first program runs.
    let mut other = gw.ssh_password("other", PASSWORD);
    other.arg("hostname; cat /tmp/granted.txt");
    let out = run(other, b"");
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert!(
        is_one_of(lines.next().unwrap_or_default(), &pooled),
        "{out:?}"
    );
    assert_eq!(lines.next(), Some("granted-file"), "{out:?}");
}

#[test]
fn shutdown_and_restart_leave_no_pool_member() {
    let instance = format!("pool-test-{}", free_port());
    let mut overrides = pool(3);
    merge(&mut overrides, json!({"instanceId": instance}));
    let mut gw = Gateway::start(overrides.clone());
    gw.wait_for_log("warm pool full", Duration::from_secs(60));
    assert_eq!(containers_of(&instance).len(), 3);
    assert!(gw.terminate().success());
    let left = containers_of(&instance);
    assert!(left.is_empty(), "pool members left after SIGTERM: {left:?}");

    // A gateway killed outright leaves its members; the next start with the same instance id
    // removes them and fills a pool of its own, no more than its size.
    let gw = Gateway::start(overrides.clone());
    gw.wait_for_log("warm pool full", Duration::from_secs(60));
    let first = containers_of(&instance);
    assert_eq!(first.len(), 3);
    signal(gw.pid(), "KILL");
    let gw2 = Gateway::start(overrides);
    gw2.wait_for_log("removed orphaned container", Duration::from_secs(30));
    gw2.wait_for_log("warm pool full", Duration::from_secs(60));
    wait_for(&gw2, &instance, |now| {
        now.len() == 3 && now.iter().all(|id| !first.contains(id))
    });
    // Full means full: no fourth member appears.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(containers_of(&instance).len(), 3);
    drop(gw);
}

/// A pool whose image cannot start says why once and backs off instead of spinning.
#[test]
fn a_pool_that_cannot_start_says_why_and_backs_off() {
    let mut overrides = pool(2);
    merge(
        &mut overrides,
        json!({"docker": {"execution": {"container": {"image": "containerssh-test/absent:1"}}}}),
    );
    let gw = Gateway::start(overrides);
    gw.wait_for_log("retrying with backoff", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(4));
    let log = gw.log_text();
    let warnings = log.matches("retrying with backoff").count();
    let attempts = log.matches("warm pool member did not start").count();
    assert_eq!(warnings, 1, "{log}");
    assert!(log.contains("containerssh-test/absent:1"), "{log}");
    // Backoff from 0.5 s doubling: a handful of attempts in 4 s, never a busy loop.
    assert!(attempts <= 12, "{attempts} attempts\n{log}");
    assert!(gw.containers().is_empty(), "{:?}", gw.containers());
}
