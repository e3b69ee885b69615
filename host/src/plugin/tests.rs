//! The plugin runtime against the real static-users component (built by build.rs).
use std::sync::Arc;

use serde_json::json;

use super::*;

fn runtime() -> Arc<PluginRuntime> {
    PluginRuntime::new(None).expect("runtime")
}

fn settings(config: serde_json::Value) -> PluginSettings {
    serde_json::from_value(json!({"plugin": "builtin:static-users", "config": config}))
        .expect("settings")
}

fn conn(user: &str) -> ConnectionInfo {
    ConnectionInfo {
        connection_id: "0123456789abcdef0123456789abcdef".into(),
        remote_address: "127.0.0.1:40000".into(),
        client_version: "SSH-2.0-test".into(),
        username: user.into(),
    }
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn alice() -> AuthenticatorPlugin {
    let hash = bcrypt::hash("open sesame", 4).unwrap();
    let s = settings(json!({"users": {"alice": {
        "password": hash,
        "authorizedKeys": [format!("{KEY} alice@laptop")],
        "environment": {"TEAM": "blue"}
    }}}));
    runtime().load_authenticator("auth", &s).expect("loads")
}

#[tokio::test]
async fn passwords_are_checked_against_the_hash() {
    let p = alice();
    match p.password(&conn("alice"), b"open sesame").await {
        AuthOutcome::Success(g) => {
            assert_eq!(g.authenticated_username, "alice");
            assert_eq!(
                g.environment,
                vec![("TEAM".to_string(), "blue".to_string())]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        p.password(&conn("alice"), b"wrong").await,
        AuthOutcome::Failure(_)
    ));
    assert!(matches!(
        p.password(&conn("bob"), b"open sesame").await,
        AuthOutcome::Failure(_)
    ));
}

#[tokio::test]
async fn public_keys_match_without_their_comment() {
    let p = alice();
    assert!(matches!(
        p.public_key(&conn("alice"), &format!("{KEY} other-comment"))
            .await,
        AuthOutcome::Success(_)
    ));
    assert!(matches!(
        p.public_key(&conn("alice"), KEY).await,
        AuthOutcome::Success(_)
    ));
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    assert!(matches!(
        p.public_key(&conn("alice"), other).await,
        AuthOutcome::Failure(_)
    ));
    assert!(matches!(
        p.public_key(&conn("bob"), KEY).await,
        AuthOutcome::Failure(_)
    ));
}

#[tokio::test]
async fn unsupported_methods_say_so_and_authorize_keeps_the_grant() {
    let p = alice();
    assert!(matches!(
        p.keyboard_interactive(&conn("alice"), vec!["x".into()])
            .await,
        AuthOutcome::Unsupported
    ));
    let grant = AuthGrant {
        authenticated_username: "alice".into(),
        metadata: vec![],
        sensitive: vec![],
        environment: vec![],
        files: vec![],
    };
    match p.authorize(&conn("alice"), &grant).await {
        AuthOutcome::Success(g) => assert_eq!(g, grant),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_bad_plugin_config_denies_instead_of_failing_open() {
    let s = settings(json!({"users": {"alice": {"password": "plain-text"}}, "typo": 1}));
    let p = runtime().load_authenticator("auth", &s).unwrap();
    assert!(matches!(
        p.password(&conn("alice"), b"plain-text").await,
        AuthOutcome::Failure(_)
    ));
    let s = settings(json!({"users": {"alice": {"password": "plain-text"}}}));
    let p = runtime().load_authenticator("auth", &s).unwrap();
    assert!(matches!(
        p.password(&conn("alice"), b"plain-text").await,
        AuthOutcome::Failure(_)
    ));
}

fn wat_plugin(dir: &std::path::Path, name: &str, wat: &str) -> PluginSettings {
    let path = dir.join(name);
    std::fs::write(&path, wat::parse_str(wat).expect("valid wat")).unwrap();
    serde_json::from_value(json!({"plugin": path.to_string_lossy()})).unwrap()
}

#[test]
fn components_are_checked_when_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let empty = wat_plugin(dir.path(), "empty.wasm", "(component)");
    let err = format!(
        "{:#}",
        rt.load_authenticator("auth", &empty)
            .err()
            .expect("rejected")
    );
    assert!(
        err.contains("does not export containerssh:plugin/authenticator@0.2.0 or @0.1.0"),
        "{err}"
    );
    let sneaky = wat_plugin(
        dir.path(),
        "sneaky.wasm",
        r#"(component (import "evil:net/raw-socket" (instance)))"#,
    );
    let err = format!(
        "{:#}",
        rt.load_authenticator("auth", &sneaky)
            .err()
            .expect("rejected")
    );
    assert!(err.contains("imports evil:net/raw-socket"), "{err}");
    let missing: PluginSettings =
        serde_json::from_value(json!({"plugin": "/nonexistent/p.wasm"})).unwrap();
    let err = format!(
        "{:#}",
        rt.load_authenticator("auth", &missing)
            .err()
            .expect("rejected")
    );
    assert!(err.contains("does not exist"), "{err}");
    let unknown: PluginSettings =
        serde_json::from_value(json!({"plugin": "builtin:nope"})).unwrap();
    assert!(rt.load_authenticator("auth", &unknown).is_err());
}

#[tokio::test]
async fn compiled_plugins_are_cached_and_a_corrupt_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let rt = PluginRuntime::new(Some(dir.path().to_path_buf())).unwrap();
    let s = settings(json!({"users": {}}));
    rt.load_authenticator("auth", &s).unwrap();
    let artifacts: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1);
    let started = std::time::Instant::now();
    rt.load_authenticator("auth", &s).unwrap();
    let cached = started.elapsed();
    // Flip bytes in the artifact: the checksum no longer matches, so it is recompiled.
    let mut data = std::fs::read(&artifacts[0]).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&artifacts[0], &data).unwrap();
    let p = rt.load_authenticator("auth", &s).unwrap();
    assert!(matches!(
        p.password(&conn("x"), b"y").await,
        AuthOutcome::Failure(_)
    ));
    let repaired = std::fs::read(&artifacts[0]).unwrap();
    assert_ne!(repaired, data, "the corrupt artifact was replaced");
    eprintln!("load from cache: {cached:?}");
}

#[test]
fn settings_are_validated() {
    let mut s = settings(json!({}));
    s.memory_limit = 10;
    s.max_concurrency = Some(0);
    s.egress.allow = vec!["https://x".into()];
    let problems = s.validate().join("\n");
    assert!(problems.contains("memoryLimit"), "{problems}");
    assert!(problems.contains("maxConcurrency"), "{problems}");
    assert!(problems.contains("egress.allow"), "{problems}");
}

/// A plugin core with `slots` slots, `queued` places in the queue, the given queue timeout
/// and call deadline (static-users: the calls below never enter it, they only hold slots).
fn core(slots: u32, queued: u32, queue_timeout_ms: u64, timeout_ms: u64) -> instance::PluginCore {
    let s: PluginSettings = serde_json::from_value(json!({
        "plugin": "builtin:static-users",
        "maxConcurrency": slots,
        "maxQueued": queued,
        "queueTimeout": format!("{queue_timeout_ms}ms"),
        "timeout": format!("{timeout_ms}ms"),
    }))
    .expect("settings");
    runtime()
        .prepare("auth", &s, "authenticator")
        .expect("loads")
        .0
}

async fn hold(ms: u64) -> anyhow::Result<()> {
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    Ok(())
}

fn overload(r: anyhow::Result<()>) -> Option<OverloadReason> {
    r.err()?.downcast_ref::<Overloaded>().map(|o| o.why)
}

/// The deadline covers the call, not the wait for a slot; the wait has its own bound; more
/// waiting calls than `maxQueued` are refused at once.
#[tokio::test]
async fn the_wait_for_a_slot_is_bounded_apart_from_the_call() {
    let core = core(1, 1, 2000, 500);
    let started = std::time::Instant::now();
    let (first, second) = tokio::join!(core.run("auth", hold(400)), async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Waits about 350 ms, then runs 400 ms: 750 ms in all, over the 500 ms deadline.
        core.run("auth", hold(400)).await
    });
    first.expect("first call");
    second.expect("the wait for a slot does not count against the deadline");
    assert!(started.elapsed() >= std::time::Duration::from_millis(750));

    // A call that takes longer than the deadline still fails.
    let late = core.run("auth", hold(700)).await.expect_err("late");
    assert!(
        format!("{late:#}").contains("did not answer within 500ms"),
        "{late:#}"
    );
    assert_eq!(overload(Err(late)), None);

    let (_, queued, refused) = tokio::join!(
        core.run("auth", hold(450)),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            core.run("auth", hold(10)).await
        },
        async {
            // The one queue place is taken: refused at once.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let t = std::time::Instant::now();
            let r = core.run("auth", hold(10)).await;
            (r, t.elapsed())
        },
    );
    assert!(queued.is_ok());
    let (refused, took) = refused;
    assert_eq!(
        overload(refused),
        Some(OverloadReason::QueueFull {
            queued: 1,
            slots: 1
        })
    );
    assert!(took < std::time::Duration::from_millis(50), "{took:?}");
}

#[tokio::test]
async fn a_call_that_gets_no_slot_in_time_is_overloaded_not_failed() {
    let core = core(1, 10, 100, 5000);
    let (_, waited) = tokio::join!(core.run("auth", hold(400)), async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        core.run("auth", hold(10)).await
    });
    assert_eq!(
        overload(waited),
        Some(OverloadReason::QueueTimeout(
            std::time::Duration::from_millis(100)
        ))
    );
}

/// Without `maxConcurrency`, a plugin that cannot reach the network gets one slot per core
/// (at least 2), one that makes HTTP requests 32.
#[test]
fn default_concurrency_follows_what_the_plugin_can_do() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
    let s = settings(json!({}));
    assert_eq!(s.concurrency(), cores.max(2));
    let mut s = s;
    s.egress.allow = vec!["auth.example:443".into()];
    assert_eq!(s.concurrency(), 32);
    s.max_concurrency = Some(5);
    assert_eq!(s.concurrency(), 5);
}

/// A plugin built against plugin API 0.1 (tests/plugins/legacy-v01, straight from the frozen
/// wit/v0.1) loads beside the 0.2 built-ins and answers every call.
#[tokio::test]
async fn a_plugin_built_against_api_0_1_still_loads_and_answers() {
    let wasm = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-plugins/legacy-v01.wasm");
    let s: PluginSettings = serde_json::from_value(json!({
        "plugin": wasm.to_string_lossy(),
        "config": {"password": "from-config"}
    }))
    .expect("settings");
    let runtime = runtime();
    let legacy = runtime.load_authenticator("legacy", &s).expect("0.1 loads");
    match legacy.password(&conn("legacy"), b"from-config").await {
        AuthOutcome::Success(g) => {
            assert_eq!(g.metadata, vec![("api".to_string(), "0.1".to_string())]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        legacy.password(&conn("legacy"), b"legacy-pass").await,
        AuthOutcome::Failure(_)
    ));
    assert!(matches!(
        legacy.public_key(&conn("legacy"), KEY).await,
        AuthOutcome::Unsupported
    ));
    assert!(matches!(
        legacy
            .keyboard_interactive(&conn("legacy"), vec!["x".into()])
            .await,
        AuthOutcome::Unsupported
    ));
    // The 0.2 built-in loads in the same runtime.
    let current = runtime
        .load_authenticator("auth", &settings(json!({"users": {}})))
        .expect("0.2 loads");
    assert!(matches!(
        current.password(&conn("legacy"), b"from-config").await,
        AuthOutcome::Failure(_)
    ));
    // A 0.2 plugin answers keyboard-interactive as unsupported (0.2 has no such call).
    assert!(matches!(
        current.keyboard_interactive(&conn("x"), Vec::new()).await,
        AuthOutcome::Unsupported
    ));
}

/// static-users checks SHA-crypt hashes too: the gateway verifies natively (API 0.2's
/// password-hash import), so every scheme the host knows works in the plugin.
#[tokio::test]
async fn static_users_checks_hashes_through_the_host() {
    let sha512 =
        sha_crypt::sha512_simple("pw", &sha_crypt::Sha512Params::new(5000).expect("params"))
            .expect("hash");
    let plugin = runtime()
        .load_authenticator(
            "auth",
            &settings(json!({"users": {
                "carol": {"password": sha512},
                "dave": {"password": "$2b$10$not-a-real-hash"}
            }})),
        )
        .expect("loads");
    assert!(matches!(
        plugin.password(&conn("carol"), b"pw").await,
        AuthOutcome::Success(_)
    ));
    assert!(matches!(
        plugin.password(&conn("carol"), b"px").await,
        AuthOutcome::Failure(_)
    ));
    match plugin.password(&conn("dave"), b"pw").await {
        AuthOutcome::Failure(reason) => assert!(reason.contains("bcrypt"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// A memory limit too small for the plugin is reported when it loads (one trial
/// instantiation), naming the setting, not at the first login.
#[test]
fn a_memory_limit_too_small_shows_when_the_plugin_loads() {
    let s: PluginSettings = serde_json::from_value(json!({
        "plugin": "builtin:static-users",
        "memoryLimit": 1 << 20,
        "config": {"users": {}}
    }))
    .expect("settings");
    let err = format!(
        "{:#}",
        runtime()
            .load_authenticator("auth", &s)
            .err()
            .expect("refused at load")
    );
    assert!(err.contains("memoryLimit 1048576"), "{err}");
}
