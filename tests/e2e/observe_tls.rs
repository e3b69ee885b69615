//! Metrics and health over HTTPS, as ContainerSSH serves them (`cert`, `key`, `clientcacert`,
//! `tlsVersion`, `curves`, `cipher` of its HTTP servers): asked with the real `curl`, with and
//! without client certificates, and by `--healthcheck` speaking TLS as `health.client` says.
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::harness::*;

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn containerssh(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_containerssh"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("containerssh runs")
}

/// The gateway's config with `change` applied, written next to it as `name`.
fn variant(gw: &Gateway, name: &str, change: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let original = gw.dir.path().join("config.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&original).expect("config")).expect("json");
    change(&mut config);
    let changed = gw.dir.path().join(name);
    std::fs::write(&changed, serde_json::to_vec_pretty(&config).expect("json")).expect("write");
    changed
}

#[test]
fn metrics_and_health_over_mutual_tls_with_curl_and_healthcheck() {
    let (_pki_dir, pki) = crate::webhook::test_pki();
    let (ca, cert, client, client_key) = (
        path(&pki.ca_cert),
        path(&pki.server_cert),
        path(&pki.client_cert),
        path(&pki.client_key),
    );
    // The metrics key as PEM text in the file (as ContainerSSH allows), the health key as a path.
    let server_key = std::fs::read_to_string(&pki.server_key).expect("server key");
    let mport = free_port();
    let hport = free_port();
    let mut gw = Gateway::start(json!({
        "metrics": {
            "enable": true, "listen": format!("127.0.0.1:{mport}"), "path": "/metrics",
            "cert": cert, "key": server_key, "clientcacert": ca,
            "tlsVersion": "1.2", "curves": ["x25519", "secp521r1"],
            "cipher": ["TLS_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"]
        },
        "health": {
            "enable": true, "listen": format!("0.0.0.0:{hport}"),
            "cert": cert, "key": path(&pki.server_key), "clientcacert": ca,
            "client": {"url": "http://127.0.0.1:7000/", "timeout": "3s",
                       "cacert": ca, "cert": client, "key": client_key}
        }
    }));
    let metrics_url = format!("https://127.0.0.1:{mport}/metrics");
    let with_client = ["--cacert", ca, "--cert", client, "--key", client_key];

    // A client with a certificate the CA signed gets the metrics.
    let out = curl(&[&with_client[..], &["--fail", &metrics_url]].concat());
    assert!(out.status.success(), "{out:?}\n{}", gw.log_text());
    let page = text(&out.stdout);
    assert!(page.contains("containerssh_connections_total"), "{page}");
    // By name too (the certificate is for localhost and 127.0.0.1).
    let by_name = format!("https://localhost:{mport}/metrics");
    let out = curl(&[&with_client[..], &["--fail", &by_name]].concat());
    assert!(out.status.success(), "{out:?}");

    // Without a certificate, with one from another CA, or in plain HTTP: nothing.
    let out = curl(&["--cacert", ca, &metrics_url]);
    assert!(!out.status.success(), "no client certificate: {out:?}");
    assert!(!text(&out.stdout).contains("containerssh_"), "{out:?}");
    let stranger = [
        "--cacert",
        ca,
        "--cert",
        path(&pki.other_client_cert),
        "--key",
        path(&pki.other_client_key),
    ];
    let out = curl(&[&stranger[..], &[metrics_url.as_str()]].concat());
    assert!(!out.status.success(), "another CA's client: {out:?}");
    assert!(!text(&out.stdout).contains("containerssh_"), "{out:?}");
    let out = curl(&[&format!("http://127.0.0.1:{mport}/metrics")]);
    assert!(
        !text(&out.stdout).contains("containerssh_"),
        "plain HTTP: {out:?}"
    );
    // A server the client does not trust is refused by curl itself.
    let out = curl(&[
        "--cacert",
        path(&pki.other_ca_cert),
        "--cert",
        client,
        "--key",
        client_key,
        &metrics_url,
    ]);
    assert!(!out.status.success(), "untrusted server: {out:?}");

    // tlsVersion 1.2 allows TLS 1.2, with the listed suite and curve only.
    let tls12 = |extra: &[&str]| {
        curl(
            &[
                &with_client[..],
                &["--fail", "--tls-max", "1.2"],
                extra,
                &[metrics_url.as_str()],
            ]
            .concat(),
        )
    };
    let out = tls12(&["--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
    assert!(out.status.success(), "listed suite: {out:?}");
    let out = tls12(&["--ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384"]);
    assert!(!out.status.success(), "unlisted suite: {out:?}");
    let out = tls12(&["--curves", "prime256v1"]);
    assert!(!out.status.success(), "unlisted curve: {out:?}");
    // Health keeps the default, TLS 1.3 at least.
    let health_url = format!("https://127.0.0.1:{hport}/health");
    let out = curl(&[&with_client[..], &["--fail", &health_url]].concat());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "ok\n");
    let out = curl(&[&with_client[..], &["--tls-max", "1.2", &health_url]].concat());
    assert!(!out.status.success(), "TLS 1.2 to a 1.3 endpoint: {out:?}");

    // --healthcheck speaks TLS with health.client's CA and certificate.
    let config = gw.dir.path().join("config.json");
    let out = containerssh(&config, &["--healthcheck"]);
    assert!(out.status.success(), "{out:?}\n{}", gw.log_text());
    assert_eq!(text(&out.stdout), "healthy\n");
    // Without a CA it trusts exactly the endpoint's own certificate (health.cert).
    let pinned = variant(&gw, "pinned.json", |c| {
        c["health"]["client"]
            .as_object_mut()
            .expect("client")
            .remove("cacert");
    });
    let out = containerssh(&pinned, &["--healthcheck"]);
    assert!(out.status.success(), "pinned: {out:?}");
    // Another CA: the endpoint is not trusted.
    let other_ca = variant(&gw, "other-ca.json", |c| {
        c["health"]["client"]["cacert"] = path(&pki.other_ca_cert).into();
    });
    let out = containerssh(&other_ca, &["--healthcheck"]);
    assert_eq!(out.status.code(), Some(1), "other CA: {out:?}");
    assert!(text(&out.stderr).contains("unhealthy"), "{out:?}");
    // No client certificate for an endpoint that asks for one: said plainly.
    let anonymous = variant(&gw, "anonymous.json", |c| {
        let client = c["health"]["client"].as_object_mut().expect("client");
        client.remove("cert");
        client.remove("key");
    });
    let out = containerssh(&anonymous, &["--healthcheck"]);
    assert_eq!(out.status.code(), Some(1), "no client certificate: {out:?}");
    assert!(text(&out.stderr).contains("health.client.cert"), "{out:?}");
    // A URL names the endpoint as ContainerSSH's health.client.url does.
    let by_url = variant(&gw, "url.json", |c| {
        c["health"]["client"]["url"] = format!("https://localhost:{hport}/").into();
    });
    let out = containerssh(&by_url, &["--healthcheck"]);
    assert!(out.status.success(), "url: {out:?}");

    // Certificates and keys never reach the log.
    let log = gw.log_text();
    let cert_pem = std::fs::read_to_string(&pki.server_cert).expect("cert");
    let key_line = server_key.lines().nth(1).expect("a line of the key's body");
    let cert_line = cert_pem.lines().nth(1).expect("a line of the cert's body");
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    assert!(!log.contains(key_line), "{log}");
    assert!(!log.contains(cert_line), "{log}");
    assert!(log.contains("https=true"), "{log}");
    // The refusals were the gateway's, for the reasons the test meant.
    for reason in [
        "peer sent no certificates",
        "invalid peer certificate: UnknownIssuer",
        "NoCipherSuitesInCommon",
        "NoKxGroupsInCommon",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("observability TLS handshake failed") && l.contains(reason)),
            "{reason}: {log}"
        );
    }

    // Once the gateway is gone, the check fails.
    assert!(gw.terminate().success());
    let out = containerssh(&config, &["--healthcheck"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("unhealthy"), "{out:?}");
}

/// Half a TLS setting, an unknown curve and numeric log levels, as `validate` reports them.
#[test]
fn validate_names_tls_mistakes_and_takes_numeric_log_levels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    let validate = |yaml: &str| {
        std::fs::write(
            &file,
            format!("auth:\n  plugin: builtin:static-users\n{yaml}"),
        )
        .expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_containerssh"))
            .arg("validate")
            .arg(&file)
            .output()
            .expect("containerssh runs");
        (
            out.status.code(),
            format!("{}{}", text(&out.stdout), text(&out.stderr)),
        )
    };
    for level in ["7", "0", "'3'", "crit", "notice"] {
        let (code, all) = validate(&format!("log:\n  level: {level}\n"));
        assert_eq!(code, Some(0), "{level}: {all}");
    }
    let (code, all) = validate("log:\n  level: 8\n");
    assert_eq!(code, Some(1));
    assert!(all.contains("log.level: "), "{all}");

    let (_pki_dir, pki) = crate::webhook::test_pki();
    let (code, all) = validate(&format!(
        "metrics:\n  enable: true\n  cert: {}\n",
        path(&pki.server_cert)
    ));
    assert_eq!(code, Some(1));
    assert!(all.contains("metrics.cert: "), "{all}");
    let (code, all) = validate(&format!(
        "health:\n  enable: true\n  cert: {}\n  key: {}\n  curves: [x448]\n",
        path(&pki.server_cert),
        path(&pki.server_key)
    ));
    assert_eq!(code, Some(1));
    assert!(all.contains("health.curves: \"x448\""), "{all}");
    let (code, all) = validate(&format!(
        "health:\n  enable: true\n  cert: {}\n  key: {}\n  clientcacert: {}\n  tlsVersion: \"1.2\"\n  cipher: TLS_AES_128_GCM_SHA256:ECDHE-ECDSA-AES128-GCM-SHA256\n",
        path(&pki.server_cert),
        path(&pki.server_key),
        path(&pki.ca_cert)
    ));
    assert_eq!(code, Some(0), "{all}");
}
