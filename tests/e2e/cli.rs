use std::path::Path;
use std::process::{Command, Output};

use crate::harness::*;

/// `file` (in the workspace) with its `/etc/containerssh/tls/` certificate paths pointed at
/// `pki`'s real test certificates, written as `name` beside them: its path and text.
fn with_test_certificates(
    pki: &crate::webhook_server::Pki,
    file: &str,
    name: &str,
) -> (std::path::PathBuf, String) {
    let config = std::fs::read_to_string(workspace().join(file))
        .expect(file)
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
    let path = pki.dir.join(name);
    std::fs::write(&path, &config).expect("write");
    (path, config)
}

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

/// A whole ContainerSSH 0.4 configuration as its `--dump-config` writes it (every default
/// spelled out: nulls, `ljson`, `SSH-2.0-...`, empty TLS and S3 settings, GeoIP `dummy`, an unused
/// `sshproxy` section) is accepted as it is; asking for what cannot work (a metrics certificate
/// without its key, a GeoIP database that is not there) is an error that names the key.
#[test]
fn validate_accepts_a_whole_containerssh_dump_and_names_what_it_cannot_do() {
    let path = workspace().join("tests/fixtures/containerssh-0.4-dump.json");
    let out = validate(&path);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("configuration is valid"),
        "{out:?}"
    );

    let mut dump: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json");
    dump["metrics"]["cert"] = "/etc/containerssh/metrics.crt".into();
    dump["geoip"]["provider"] = "maxmind".into();
    let dir = tempfile::tempdir().expect("tempdir");
    let changed = dir.path().join("config.json");
    std::fs::write(&changed, dump.to_string()).expect("write");
    let out = validate(&changed);
    assert!(!out.status.success(), "{out:?}");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for key in ["metrics.cert", "geoip.maxmind-geoip2-file"] {
        assert!(all.contains(key), "{key} missing: {all}");
    }
}

/// ContainerSSH 0.5/0.6's reference configuration (every section and key its documentation and
/// config structs name, see the fixture's header) is accepted as it is, with any of its
/// backends, and warns once about each key that means nothing here, naming it; switching on a
/// documented feature the gateway lacks is an error that names the key.
#[test]
fn validate_accepts_the_containerssh_0_6_reference_config_and_names_what_it_cannot_do() {
    let (_dir, pki) = crate::webhook::test_pki();
    let (path, config) = with_test_certificates(
        &pki,
        "tests/fixtures/containerssh-0.6-reference.yaml",
        "containerssh-0.6-reference.yaml",
    );
    let out = validate(&path);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("configuration is valid"),
        "{out:?}"
    );
    let warnings = text(&out.stderr);
    for key in [
        "docker.execution.agentPath",
        "docker.execution.container.cmd",
        "docker.timeouts.http",
        "sshproxy.ciphers",
        "sshproxy.kex",
        "sshproxy.macs",
        "sshproxy.hostKeyAlgos",
    ] {
        let warning = format!("warning: {key}: ContainerSSH setting ignored");
        assert_eq!(warnings.matches(&warning).count(), 1, "{key}: {warnings}");
    }
    // Taken over (clientAliveInterval, container.networkdisabled), or at ContainerSSH's
    // defaults (the rest): no warning.
    for key in [
        "clientAlive",
        "networkdisabled",
        "exposeAuthMetadataAsEnv",
        "createMissingPods",
        "health.client",
        "disableAgent",
        "containername",
        "docker.execution.network",
        "docker.execution.platform",
    ] {
        assert!(!warnings.contains(key), "{key}: {warnings}");
    }

    let reference: serde_json::Value = serde_norway::from_str(&config).expect("yaml");
    let dir = tempfile::tempdir().expect("tempdir");
    let changed = dir.path().join("config.json");
    let write_with = |changes: &[(&str, serde_json::Value)]| {
        let mut changed_config = reference.clone();
        for (pointer, value) in changes {
            *changed_config.pointer_mut(pointer).expect(pointer) = value.clone();
        }
        std::fs::write(&changed, changed_config.to_string()).expect("write");
        changed.as_path()
    };
    let validate_with = |pointer: &str, value: serde_json::Value| {
        let out = validate(write_with(&[(pointer, value)]));
        (
            out.status.success(),
            format!("{}{}", text(&out.stdout), text(&out.stderr)),
        )
    };
    // ContainerSSH's binary audit format is written too.
    let (valid, all) = validate_with("/audit/format", "binary".into());
    assert!(valid, "audit.format binary: {all}");
    for backend in ["kubernetes", "sshproxy"] {
        let (valid, all) = validate_with("/backend", backend.into());
        assert!(valid, "backend {backend}: {all}");
    }
    for (pointer, value, key) in [
        // Kerberos as the reference writes it: its keytab does not exist here.
        (
            "/auth/gssapi/method",
            "kerberos".into(),
            "auth.gssapi.kerberos.keytab",
        ),
        (
            "/auth/password/method",
            "kerberos".into(),
            "auth.password.kerberos.keytab",
        ),
        // The reference's database path does not exist here.
        (
            "/geoip/provider",
            "maxmind".into(),
            "geoip.maxmind-geoip2-file",
        ),
        (
            "/metrics/cert",
            "/etc/containerssh/metrics.crt".into(),
            "metrics.cert",
        ),
        (
            "/health/cert",
            "/etc/containerssh/health.crt".into(),
            "health.cert",
        ),
        (
            "/kubernetes/pod/mode",
            "persistent".into(),
            "kubernetes.pod.mode",
        ),
    ] {
        let (valid, all) = validate_with(pointer, value);
        assert!(!valid, "{key} accepted: {all}");
        assert!(all.contains(&format!("{key}: ")), "{key} missing: {all}");
    }

    // The OAuth2 login, switched on as the reference writes it (its webroot does not exist
    // here): valid, and the effective configuration has it with the secret redacted.
    let (valid, all) = validate_with("/auth/keyboardInteractive/method", "oauth2".into());
    assert!(
        !valid && all.contains("auth.keyboardInteractive.oauth2.redirect.webroot: "),
        "{all}"
    );
    let path = write_with(&[
        ("/auth/keyboardInteractive/method", "oauth2".into()),
        (
            "/auth/keyboardInteractive/oauth2/redirect/webroot",
            "".into(),
        ),
    ]);
    let out = validate(path);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("--config")
        .arg(path)
        .arg("--dump-config")
        .output()
        .expect("containerssh runs");
    let effective = text(&out.stdout);
    assert!(effective.contains("provider: oidc"), "{effective}");
    assert!(!effective.contains("your-client-secret"), "{effective}");

    // What maps to a setting of the gateway is honoured: the effective configuration has it.
    let path = write_with(&[
        ("/ssh/clientAliveInterval", "45s".into()),
        ("/docker/execution/container/networkdisabled", true.into()),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("--config")
        .arg(path)
        .arg("--dump-config")
        .output()
        .expect("containerssh runs");
    assert!(out.status.success(), "{out:?}");
    let effective = text(&out.stdout);
    assert!(effective.contains("keepaliveInterval: 45s"), "{effective}");
    assert!(effective.contains("networkDisabled: true"), "{effective}");
}

/// The in-cluster example, with its certificate paths pointed at real test certificates.
#[test]
fn validate_accepts_the_kubernetes_example_config() {
    let (_dir, pki) = crate::webhook::test_pki();
    let (path, _) = with_test_certificates(
        &pki,
        "examples/kubernetes/config.yaml",
        "kubernetes-example.yaml",
    );
    let out = validate(&path);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("configuration is valid"));
}

/// Several mistakes of different kinds in one file: every one is listed, each with the key
/// path as written (a ContainerSSH `auth.cacert` is not named by its internal place).
#[test]
fn validate_lists_every_mistake_with_the_users_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "ssh: {bogus1: 1, maxConnections: lots, macs: [hmac-sha1], kex: [curve25519-sha256, sntrup761x25519-sha512]}\n\
         docker: {execution: {mode: sometimes}}\n\
         auth:\n  url: https://auth.example:8443\n  cacert: \"insert your expected CA certificate here\"\n",
    )
    .unwrap();
    let out = validate(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for expected in [
        "ssh.bogus1: unknown key",
        "ssh.maxConnections: invalid type",
        "docker.execution.mode: unknown variant `sometimes`",
        "ssh.macs[0]: \"hmac-sha1\" is not offered by this gateway",
        "ssh.kex[1]: \"sntrup761x25519-sha512\" is not offered",
        "auth.cacert: cannot read insert your expected CA certificate here",
    ] {
        assert!(err.contains(expected), "{expected:?} missing:\n{err}");
    }
    assert!(err.contains("(6 problem(s))"), "{err}");
    assert!(!err.contains("egress"), "{err}");
}

fn plugin_command(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("plugin")
        .args(args)
        .output()
        .expect("containerssh runs")
}

#[test]
fn plugin_wit_prints_the_api_this_gateway_loads() {
    let out = plugin_command(&["wit"]);
    assert!(out.status.success(), "{out:?}");
    let wit = text(&out.stdout);
    assert!(wit.contains("package containerssh:plugin@0.2.0;"), "{wit}");
    assert!(wit.contains("world authenticator-plugin"), "{wit}");
    assert!(wit.contains("unavailable(string)"), "{wit}");
    // The first version, for plugins built against it (they still load).
    let out = plugin_command(&["wit", "--api", "0.1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("package containerssh:plugin@0.1.0;"),
        "{out:?}"
    );
}

#[test]
fn plugin_check_says_what_a_file_is_and_how_to_fix_it() {
    let plugins = workspace().join("target/plugins");
    let static_users = plugins.join("static-users.wasm");
    let out = plugin_command(&["check", &static_users.to_string_lossy()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("world authenticator-plugin"),
        "{out:?}"
    );

    let policy = plugins.join("security-policy.wasm");
    let out = plugin_command(&["check", &policy.to_string_lossy(), "--role", "filter"]);
    assert!(out.status.success(), "{out:?}");

    // The wrong role names what the file does export.
    let out = plugin_command(&["check", &static_users.to_string_lossy(), "--role", "filter"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("authenticator"), "{out:?}");

    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = plugin_command(&["check", &core.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("containerssh plugin componentize"),
        "{out:?}"
    );
    // The fix it names explains why this module cannot be wrapped: it was built without bindings.
    let wrapped = dir.path().join("wrapped.wasm");
    let out = plugin_command(&[
        "componentize",
        &core.to_string_lossy(),
        "-o",
        &wrapped.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no plugin world"), "{out:?}");

    let not_wasm = dir.path().join("plugin.py");
    std::fs::write(&not_wasm, b"print('hello')\n").unwrap();
    let out = plugin_command(&["check", &not_wasm.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a WebAssembly file"),
        "{out:?}"
    );
}

#[test]
fn plugin_call_runs_one_login_without_ssh_or_docker() {
    let s = shared();
    let plugin = workspace().join("target/plugins/static-users.wasm");
    let config = serde_json::json!({"users": {USER: {
        "password": s.password_hash,
        "authorizedKeys": [s.public_key],
        "environment": {"FROM_AUTH": "granted"}
    }}})
    .to_string();
    let plugin = plugin.to_string_lossy().into_owned();
    let call = |extra: &[&str]| {
        let mut args = vec!["call", plugin.as_str(), "--plugin-config", config.as_str()];
        args.extend_from_slice(extra);
        plugin_command(&args)
    };
    let out = call(&["--user", USER, "--password", PASSWORD]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("success: user {USER}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("environment FROM_AUTH = granted"),
        "{stdout}"
    );

    let out = call(&["--user", USER, "--password", "wrong"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stdout).starts_with("failure:"), "{out:?}");

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id.pub");
    std::fs::write(&key, format!("{} test@example\n", s.public_key)).unwrap();
    let out = call(&["--user", USER, "--key", &key.to_string_lossy()]);
    assert!(out.status.success(), "{out:?}");
}
