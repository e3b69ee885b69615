//! Connecting to the API server from `kubernetes.connection`: ContainerSSH's keys (host, path,
//! certificates as files or PEM text, bearer token, basic auth), a kubeconfig file, or the
//! in-cluster service account when nothing is set.
use anyhow::{bail, Context};
use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use secrecy::SecretString;

use crate::config::{KubernetesConnection, KubernetesTimeouts};
use crate::plugin::tls::load_pem;

/// Where in-cluster pods find their service account token.
const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

pub async fn connect(
    conn: &KubernetesConnection,
    timeouts: &KubernetesTimeouts,
) -> anyhow::Result<Client> {
    let mut config = if !conn.kubeconfig.is_empty() {
        let file = Kubeconfig::read_from(&conn.kubeconfig)
            .with_context(|| format!("kubernetes: cannot read kubeconfig {}", conn.kubeconfig))?;
        Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("kubernetes: kubeconfig {} is unusable", conn.kubeconfig))?
    } else if conn.is_default() && std::path::Path::new(IN_CLUSTER_TOKEN).exists() {
        Config::incluster().context("kubernetes: cannot use the in-cluster configuration")?
    } else {
        explicit(conn)?
    };
    config.connect_timeout = Some(timeouts.http);
    // No read timeout: exec streams of idle shells are quiet for hours.
    config.read_timeout = None;
    config.write_timeout = Some(timeouts.http);
    Client::try_from(config).context("kubernetes: cannot create the API client")
}

/// A client configuration from ContainerSSH's connection keys.
fn explicit(conn: &KubernetesConnection) -> anyhow::Result<Config> {
    let url = cluster_url(&conn.host, &conn.path)?;
    let mut config = Config::new(
        url.parse()
            .with_context(|| format!("kubernetes.connection.host: {url:?} is not a URL"))?,
    );
    let ca = match (conn.cacert.as_str(), conn.cacert_file.as_str()) {
        ("", "") => None,
        (pem, "") => Some(load_pem("kubernetes.connection.cacert", pem)?),
        (_, file) => Some(load_pem("kubernetes.connection.cacertFile", file)?),
    };
    if let Some(pem) = ca {
        let certs = CertificateDer::pem_slice_iter(&pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .context("kubernetes.connection.cacert: not PEM certificates")?;
        if certs.is_empty() {
            bail!("kubernetes.connection.cacert: no certificate found");
        }
        config.root_cert = Some(certs);
    }
    if !conn.server_name.is_empty() {
        config.tls_server_name = Some(conn.server_name.clone());
    }
    let auth = &mut config.auth_info;
    let b64 = |text: &[u8]| base64::engine::general_purpose::STANDARD.encode(text);
    match (conn.cert.as_str(), conn.cert_file.as_str()) {
        ("", "") => {}
        (pem, "") => {
            auth.client_certificate_data = Some(b64(&load_pem("kubernetes.connection.cert", pem)?))
        }
        (_, file) => auth.client_certificate = Some(file.to_string()),
    }
    match (conn.key.as_str(), conn.key_file.as_str()) {
        ("", "") => {}
        (pem, "") => {
            auth.client_key_data = Some(SecretString::from(b64(&load_pem(
                "kubernetes.connection.key",
                pem,
            )?)))
        }
        (_, file) => auth.client_key = Some(file.to_string()),
    }
    if !conn.bearer_token.is_empty() {
        auth.token = Some(SecretString::from(conn.bearer_token.clone()));
    }
    if !conn.bearer_token_file.is_empty() {
        auth.token_file = Some(conn.bearer_token_file.clone());
    }
    if !conn.username.is_empty() {
        auth.username = Some(conn.username.clone());
        auth.password = Some(SecretString::from(conn.password.clone()));
    }
    Ok(config)
}

/// `host`, `host:port` or a URL, plus the API root (`/api` is where the client starts).
fn cluster_url(host: &str, path: &str) -> anyhow::Result<String> {
    let host = host.trim().trim_end_matches('/');
    let base = if host.contains("://") {
        host.to_string()
    } else {
        format!("https://{host}")
    };
    let prefix = path
        .strip_suffix("/api")
        .with_context(|| format!("kubernetes.connection.path: {path:?} must end in /api"))?;
    Ok(format!("{base}{prefix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_from_containerssh_forms() {
        assert_eq!(
            cluster_url("kubernetes.default.svc", "/api").unwrap(),
            "https://kubernetes.default.svc"
        );
        assert_eq!(
            cluster_url("10.0.0.1:6443", "/api").unwrap(),
            "https://10.0.0.1:6443"
        );
        assert_eq!(
            cluster_url("https://proxy.example/", "/k8s/api").unwrap(),
            "https://proxy.example/k8s"
        );
        assert!(cluster_url("x", "/apis").is_err());
    }

    #[test]
    fn pem_text_and_tokens_become_client_settings() {
        let conn = KubernetesConnection {
            host: "127.0.0.1:6443".into(),
            bearer_token: "secret-token".into(),
            server_name: "kubernetes".into(),
            ..Default::default()
        };
        let config = explicit(&conn).unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(config.tls_server_name.as_deref(), Some("kubernetes"));
        assert!(config.auth_info.token.is_some());
        let bad = KubernetesConnection {
            cacert: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into(),
            ..Default::default()
        };
        assert!(explicit(&bad).is_err());
    }
}
