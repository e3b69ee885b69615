use std::path::Path;
use std::process::{Command, Output};

use crate::harness::*;

fn validate(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("validate")
        .arg(path)
        .output()
        .expect("containerssh runs")
}

#[test]
fn validate_prints_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "ssh:\n  listen: not-an-address\n  colour: blue\nauth:\n  plugin: builtin:static-users\ndocker:\n  execution:\n    host:\n      readonlyRootfs: true\n      memroy: 5\n    mode: connection\n",
    )
    .unwrap();
    let out = validate(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("ssh.colour: unknown key"), "{err}");
    assert!(
        err.contains("docker.execution.host.memroy: unknown key"),
        "{err}"
    );
    assert!(err.contains("ssh.listen"), "{err}");
}

#[test]
fn validate_accepts_the_quick_start_config() {
    let path = workspace().join("examples/quickstart/config.yaml");
    let out = validate(&path);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("configuration is valid"));
}

/// The in-cluster example, with its certificate paths pointed at real test certificates.
#[test]
fn validate_accepts_the_kubernetes_example_config() {
    let (_dir, pki) = crate::webhook::test_pki();
    let example = std::fs::read_to_string(workspace().join("examples/kubernetes/config.yaml"))
        .expect("example config");
    let config = example
        .replace(
            "/etc/containerssh/tls/ca.crt",
            &pki.ca_cert.to_string_lossy(),
        )
        .replace(
            "/etc/containerssh/tls/client.crt",
            &pki.client_cert.to_string_lossy(),
        )
        .replace(
            "/etc/containerssh/tls/client.key",
            &pki.client_key.to_string_lossy(),
        );
    let path = pki.dir.join("kubernetes-example.yaml");
    std::fs::write(&path, config).expect("write");
    let out = validate(&path);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("configuration is valid"));
}
