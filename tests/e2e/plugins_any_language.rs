//! Plugins in other languages, built from source here and used by the real gateway for real
//! OpenSSH logins: the Python example (componentize-py from PyPI) with the helper module.
use std::path::PathBuf;
use std::process::Command;

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
