//! Connecting to a Docker engine: local socket, plain TCP, or TCP with TLS client certificates.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bollard::Docker;

use crate::config::DockerConnection;

/// Request timeout for API calls (seconds); long operations have their own deadlines.
const API_TIMEOUT_SECS: u64 = 120;

/// A connected client, plus the private directory holding PEM material from the config:
/// bollard reads the certificate files at every TLS handshake, so it must outlive the client.
pub struct Connected {
    pub docker: Docker,
    pub tls_material: Option<tempfile::TempDir>,
}

/// Opens a client and negotiates the API version with the engine (once per process).
pub async fn connect(conn: &DockerConnection) -> anyhow::Result<Connected> {
    let mut tls_material = None;
    let host = conn.host.as_str();
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .with_context(|| format!("docker: cannot use socket {path}"))?
    } else if conn.cacert.is_empty() {
        Docker::connect_with_http(host, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .with_context(|| format!("docker: cannot use {host}"))?
    } else {
        // bollard reads the TLS material from files; PEM text in the config goes to a private
        // temporary directory.
        let dir = tempfile::Builder::new()
            .prefix("containerssh-docker-tls")
            .tempdir()
            .context("docker: cannot create a temporary directory for TLS material")?;
        let ca = pem_file(&conn.cacert, dir.path(), "ca.pem")?;
        let cert = pem_file(&conn.cert, dir.path(), "cert.pem")?;
        let key = pem_file(&conn.key, dir.path(), "key.pem")?;
        let docker = Docker::connect_with_ssl(
            host,
            &key,
            &cert,
            &ca,
            API_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .with_context(|| format!("docker: cannot set up TLS to {host}"))?;
        tls_material = Some(dir);
        docker
    };
    let docker = docker
        .negotiate_version()
        .await
        .with_context(|| format!("docker: cannot reach the engine at {host}"))?;
    Ok(Connected {
        docker,
        tls_material,
    })
}

/// A config value is either a path to a PEM file or the PEM text itself.
fn pem_file(value: &str, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    if value.trim_start().starts_with("-----BEGIN") {
        let path = dir.join(name);
        write_private(&path, value.as_bytes())
            .with_context(|| format!("docker: cannot write {}", path.display()))?;
        Ok(path)
    } else {
        let path = PathBuf::from(value);
        if !path.is_file() {
            bail!("docker: TLS file {} does not exist", path.display());
        }
        Ok(path)
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}
