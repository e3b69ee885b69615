//! Plugins in other languages, built from source here and used by the real gateway for real
//! OpenSSH logins: the Python example (componentize-py from PyPI) with its helper module, and
//! the C examples (Debian's clang and wasi-libc, wit-bindgen's C generator, wrapped by
//! `containerssh plugin componentize`) with their header.
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// Builds examples/plugins/python-auth into target/examples/ (about 20 s).
fn python_plugin() -> PathBuf {
    let out_dir = workspace().join("target/examples");
    std::fs::create_dir_all(&out_dir).expect("target/examples");
    let out = out_dir.join("python-auth.wasm");
    let build = Command::new(workspace().join("examples/plugins/python-auth/build.sh"))
        .arg(&out)
        .output()
        .expect("build.sh runs (componentize-py is installed by tests/run.sh)");
    assert!(build.status.success(), "{build:?}");
    out
}

/// Builds examples/plugins/c for `role` (auth or filter) into target/examples/ (about a second).
fn c_plugin(role: &str) -> PathBuf {
    let out_dir = workspace().join("target/examples");
    std::fs::create_dir_all(&out_dir).expect("target/examples");
    let out = out_dir.join(format!("c-{role}.wasm"));
    let build = Command::new(workspace().join("examples/plugins/c/build.sh"))
        .args([role, &out.to_string_lossy()])
        .env("CONTAINERSSH", env!("CARGO_BIN_EXE_containerssh"))
        .output()
        .expect("build.sh runs (clang, wasi-libc and wit-bindgen are installed by tests/run.sh)");
    assert!(build.status.success(), "{build:?}");
    out
}

/// The C auth plugin: right password and key in, with the environment its grant sets; wrong
/// password, unknown user and an unreadable hash out, the last with the plugin's stderr line
/// in the gateway's log.
#[test]
fn a_c_auth_plugin_built_from_source_logs_users_in_and_out() {
    let wasm = c_plugin("auth");
    let s = shared();
    let gw = Gateway::start(json!({"auth": {
        "plugin": wasm.to_string_lossy(),
        "config": {"users": {
            USER: {"password": s.password_hash, "authorizedKeys": [s.public_key], "team": "blue"},
            "broken": {"password": "not-a-hash"}
        }}
    }}));
    assert_password_run(
        &gw,
        USER,
        PASSWORD,
        "echo $PLUGIN_LANGUAGE $TEAM",
        "c blue\n",
    );
    let mut key = gw.ssh();
    key.arg("echo by-key $PLUGIN_LANGUAGE");
    let out = run(key, b"");
    assert_eq!(text(&out.stdout), "by-key c\n", "{out:?}");
    for (user, password) in [
        (USER, "wrong password"),
        ("nobody", PASSWORD),
        ("broken", "anything"),
    ] {
        let mut refused = gw.ssh_password(user, password);
        refused.arg("true");
        assert_eq!(run(refused, b"").status.code(), Some(255), "{user}");
    }
    let log = gw.log_text();
    assert!(log.contains("wrong password"), "{log}");
    assert!(log.contains("unknown user"), "{log}");
    assert!(
        log.contains("the password hash configured for broken cannot be read"),
        "{log}"
    );
}

/// The C request filter replaces the built-in policy: listed programs run, an alias is
/// rewritten to its command, other programs and forwarding are refused with the plugin's
/// reasons, and its log line reaches the gateway's log.
#[test]
fn a_c_request_filter_built_from_source_rewrites_and_refuses() {
    let wasm = c_plugin("filter");
    let gw = Gateway::start(json!({
        "filter": {"plugin": wasm.to_string_lossy()},
        "security": {
            "programs": ["echo"],
            "aliases": {"hello": "echo hello from C"},
            "ports": [8080]
        }
    }));
    let mut allowed = gw.ssh();
    allowed.arg("echo allowed");
    let out = run(allowed, b"");
    assert_eq!(text(&out.stdout), "allowed\n", "{out:?}");
    let mut alias = gw.ssh();
    alias.arg("hello");
    let out = run(alias, b"");
    assert_eq!(text(&out.stdout), "hello from C\n", "{out:?}");
    let mut refused = gw.ssh();
    refused.arg("cat /etc/hostname");
    let out = run(refused, b"");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        text(&out.stderr).contains("cat is not on this gateway's list of programs"),
        "{out:?}"
    );
    let mut forward = gw.ssh();
    forward.args(["-W", "localhost:9"]);
    let out = run(forward, b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    // OpenSSH reports a refused `-W` channel as a failed stdio forward.
    assert!(
        text(&out.stderr).contains("stdio forwarding failed"),
        "{out:?}"
    );
    gw.wait_for_log("may not forward to localhost:9", Duration::from_secs(10));
    gw.wait_for_log(
        "forwarding to that destination is not allowed",
        Duration::from_secs(10),
    );
    gw.assert_no_containers();
}

/// The Python auth plugin lets in the right password and key, refuses the wrong ones, and an
/// exception in it is a refused login with the traceback in the gateway's log.
#[test]
fn a_python_auth_plugin_built_from_source_logs_users_in_and_out() {
    let wasm = python_plugin();
    let s = shared();
    let gw = Gateway::start(json!({"auth": {
        "plugin": wasm.to_string_lossy(),
        "config": {"users": {
            USER: {"password": s.password_hash, "authorizedKeys": [s.public_key],
                   "environment": {"TEAM": "blue"}},
            "broken": {"password": "not-a-hash"}
        }}
    }}));
    assert_password_run(
        &gw,
        USER,
        PASSWORD,
        "echo $PLUGIN_LANGUAGE $TEAM",
        "python blue\n",
    );
    let mut key = gw.ssh();
    key.arg("echo by-key");
    let out = run(key, b"");
    assert_eq!(text(&out.stdout), "by-key\n", "{out:?}");
    let mut wrong = gw.ssh_password(USER, "wrong password");
    wrong.arg("true");
    assert_eq!(run(wrong, b"").status.code(), Some(255));
    let mut broken = gw.ssh_password("broken", "anything");
    broken.arg("true");
    assert_eq!(run(broken, b"").status.code(), Some(255));
    let log = gw.log_text();
    assert!(log.contains("Traceback"), "{log}");
    assert!(log.contains("ValueError"), "{log}");
    assert!(log.contains("wrong password"), "{log}");
}
