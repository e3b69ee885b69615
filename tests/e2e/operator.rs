//! What operators script around, as with ContainerSSH: `--dump-config`, `--healthcheck`,
//! SIGHUP, and durations written as Go writes them (integer nanoseconds).
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

fn containerssh(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("containerssh runs")
}

#[test]
fn dump_config_prints_the_effective_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let mut config = base_config(free_port(), dir.path());
    merge(
        &mut config,
        json!({"docker": {"timeouts": {"containerStart": 90_000_000_000u64}}}),
    );
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = containerssh(&path, &["--dump-config"]);
    assert!(out.status.success(), "{out:?}");
    let yaml = text(&out.stdout);
    assert!(!yaml.contains(&shared().password_hash), "{yaml}");
    assert!(yaml.contains("password: <redacted>"), "{yaml}");
    // Defaults are filled in; durations read from nanoseconds come back as text.
    assert!(yaml.contains("containerStart: 1m 30s"), "{yaml}");
    assert!(yaml.contains("shellCommand:"), "{yaml}");
    assert!(
        yaml.contains(&shared().public_key),
        "public keys are not secrets: {yaml}"
    );
}

#[test]
fn healthcheck_exits_zero_while_the_gateway_serves_and_one_after() {
    let health = free_port();
    let mut gw = Gateway::start(json!({
        "health": {"enable": true, "listen": format!("0.0.0.0:{health}")}
    }));
    let config = gw.dir.path().join("config.json");
    let out = containerssh(&config, &["--healthcheck"]);
    assert!(out.status.success(), "{out:?}\n{}", gw.log_text());
    assert!(gw.terminate().success());
    let out = containerssh(&config, &["--healthcheck"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("unhealthy"), "{out:?}");
}

#[test]
fn sighup_is_logged_and_the_gateway_keeps_serving() {
    let gw = Gateway::start(json!({}));
    signal(gw.pid(), "HUP");
    gw.wait_for_log("SIGHUP received", Duration::from_secs(10));
    let mut ssh = gw.ssh();
    ssh.arg("echo still-here");
    let out = run(ssh, b"");
    assert_eq!(
        text(&out.stdout),
        "still-here\n",
        "{out:?}\n{}",
        gw.log_text()
    );
}

#[test]
fn durations_in_nanoseconds_and_go_strings_validate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "auth:\n  plugin: builtin:static-users\nssh:\n  shutdownTimeout: 20000000000\n  loginGraceTime: 1m30s\ndocker:\n  timeouts:\n    containerStart: 60000000000\n    commandStart: 1.5s\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("validate")
        .arg(&path)
        .output()
        .expect("containerssh runs");
    assert!(out.status.success(), "{out:?}");
    std::fs::write(
        &path,
        "auth:\n  plugin: builtin:static-users\ndocker:\n  timeouts:\n    containerStart: soon\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("validate")
        .arg(&path)
        .output()
        .expect("containerssh runs");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("docker.timeouts.containerStart"), "{err}");
    assert!(err.contains("invalid duration"), "{err}");
}

/// As in ContainerSSH, a host key may be written into `ssh.hostkeys` itself (PEM text): the
/// gateway serves that key (ssh-keyscan sees it) and never logs it (`--dump-config` redacts any
/// private key, see operator::tests).
#[test]
fn a_host_key_given_as_text_is_served_and_never_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("host");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let private = std::fs::read_to_string(&key).expect("key");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    let gw = Gateway::start(json!({"ssh": {"hostkeys": [private]}}));
    let scan = std::process::Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &gw.port.to_string(), "127.0.0.1"])
        .output()
        .expect("ssh-keyscan");
    let served = text(&scan.stdout);
    let blob = public.split_whitespace().nth(1).expect("key blob");
    assert!(served.contains(blob), "{served}\n{}", gw.log_text());
    assert!(!gw.log_text().contains("PRIVATE KEY"));
}
