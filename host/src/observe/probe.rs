//! `--healthcheck`: one GET of the health endpoint, over HTTP or HTTPS, as ContainerSSH's
//! `health.client` describes it. Without a `url` (or with ContainerSSH's default one) it asks
//! `/health` on `health.listen`, over HTTPS when the endpoint serves HTTPS, and then trusts
//! exactly the certificate `health.cert` names unless `health.client.cacert` gives a CA.
//! Synchronous: it runs before (and without) an async runtime.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::config::HealthConfig;
use crate::plugin::tls::TlsSettings;

/// ContainerSSH's default `health.client.url`: the same as no URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7000/";

/// How long the check may take when `health.client.timeout` is unset.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to ask.
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// Problems with `health.client`, each naming its key relative to it (`cacert: ...`). The
/// files are read.
pub fn validate(health: &HealthConfig) -> Vec<String> {
    let client = &health.client;
    let mut problems = Vec::new();
    if let Some(url) = url(health) {
        if let Err(e) = parse_url(url) {
            problems.push(format!("url: {e}"));
        }
    }
    let tls_set = client.cacert.is_some()
        || client.cert.is_some()
        || client.key.is_some()
        || client.tls_version.is_some()
        || !client.curves.is_empty()
        || !client.cipher.is_empty();
    if tls_set {
        problems.extend(tls_settings(health).validate());
    }
    problems
}

/// Asks the health endpoint; the HTTP status it answered.
pub fn check(health: &HealthConfig) -> Result<u16, String> {
    let timeout = if health.client.timeout.is_zero() {
        DEFAULT_TIMEOUT
    } else {
        health.client.timeout
    };
    let target = target(health)?;
    let addr = target.addr;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.path, target.host
    );
    let head = match target.tls {
        None => exchange(&mut tcp, &request),
        Some((config, name)) => {
            let connection = rustls::ClientConnection::new(config, name)
                .map_err(|e| format!("TLS with {addr}: {e}"))?;
            let mut stream = rustls::StreamOwned::new(connection, tcp);
            exchange(&mut stream, &request)
        }
    }
    .map_err(|e| format!("no answer from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{addr} did not answer HTTP"))
}

/// Sends `request` and reads up to the end of the status line.
fn exchange(stream: &mut impl ReadWrite, request: &str) -> std::io::Result<Vec<u8>> {
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(head)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The URL to ask, if one other than ContainerSSH's default is configured.
fn url(health: &HealthConfig) -> Option<&str> {
    health
        .client
        .url
        .as_deref()
        .filter(|u| u.trim() != DEFAULT_URL)
}

/// `(https, host, port, path)` of a URL.
fn parse_url(url: &str) -> Result<(bool, String, u16, String), String> {
    let uri: http::Uri = url
        .trim()
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url:?}: only http:// and https:// URLs")),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{url:?} has no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_string();
    Ok((https, host, port, path))
}

fn target(health: &HealthConfig) -> Result<Target, String> {
    let (https, host, addr, path, name) = match url(health) {
        Some(url) => {
            let (https, host, port, path) =
                parse_url(url).map_err(|e| format!("health.client.url: {e}"))?;
            let addr = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .next()
                .ok_or_else(|| format!("cannot resolve {host}"))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|_| format!("health.client.url: {host:?} is not a host name"))?;
            let host_header = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            (https, host_header, addr, path, name)
        }
        None => {
            let listen = &health.listen;
            let mut addr: SocketAddr = listen
                .parse()
                .map_err(|_| format!("health.listen {listen:?} is not an address:port"))?;
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            let https = health.tls().enabled();
            if https && health.clientcacert.is_some() && health.client.cert.is_none() {
                return Err("the health endpoint asks for a client certificate (health.clientcacert): set health.client.cert and health.client.key".into());
            }
            let name = ServerName::IpAddress(addr.ip().into());
            (https, addr.to_string(), addr, "/health".to_string(), name)
        }
    };
    let tls = if https {
        Some((Arc::new(client_config(health)?), name))
    } else {
        None
    };
    Ok(Target {
        addr,
        host,
        path,
        tls,
    })
}

/// `health.client`'s TLS settings; the lowest version defaults to 1.2 (the endpoint decides).
fn tls_settings(health: &HealthConfig) -> TlsSettings {
    let client = &health.client;
    TlsSettings {
        cacert: client.cacert.clone(),
        cert: client.cert.clone(),
        key: client.key.clone(),
        tls_version: Some(client.tls_version.clone().unwrap_or_else(|| "1.2".into())),
        curves: client.curves.clone(),
        cipher: client.cipher.clone(),
    }
}

fn client_config(health: &HealthConfig) -> Result<ClientConfig, String> {
    let prefixed = |e: anyhow::Error| format!("health.client.{e:#}");
    let settings = tls_settings(health);
    let mut config = settings.client_config().map_err(prefixed)?;
    if settings.cacert.is_none() {
        // No CA given: the endpoint must present the certificate it is configured with.
        if let Some(cert) = &health.cert {
            let chain = crate::plugin::tls::certificates("cert", cert)
                .map_err(|e| format!("health.{e:#}"))?;
            let Some(leaf) = chain.into_iter().next() else {
                return Err("health.cert: no certificate found".into());
            };
            let algorithms = config.crypto_provider().signature_verification_algorithms;
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(Pinned { leaf, algorithms }));
        }
    }
    Ok(config)
}

/// Accepts exactly one certificate (the endpoint's own), whatever name it is asked by; the
/// handshake's signatures are still checked, so the endpoint must hold its key.
#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_scheme_host_port_and_path() {
        assert_eq!(
            parse_url("https://gw.example:7443/healthz").unwrap(),
            (true, "gw.example".into(), 7443, "/healthz".into())
        );
        assert_eq!(
            parse_url("http://[::1]/").unwrap(),
            (false, "::1".into(), 80, "/".into())
        );
        assert_eq!(
            parse_url("https://127.0.0.1").unwrap(),
            (true, "127.0.0.1".into(), 443, "/".into())
        );
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("not a url").is_err());
    }

    #[test]
    fn the_default_url_means_health_listen() {
        let mut health = HealthConfig {
            listen: "0.0.0.0:7001".into(),
            ..HealthConfig::default()
        };
        health.client.url = Some(DEFAULT_URL.into());
        let t = target(&health).unwrap();
        assert_eq!(t.addr, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(t.path, "/health");
        assert!(t.tls.is_none());
        health.client.url = Some("http://127.0.0.1:7002/healthz".into());
        let t = target(&health).unwrap();
        assert_eq!(t.addr, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(t.path, "/healthz");
    }

    #[test]
    fn client_settings_are_checked_with_their_keys() {
        let mut health = HealthConfig::default();
        health.client.cert = Some("/nonexistent/client.pem".into());
        let problems = validate(&health);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("cert: "), "{problems:?}");
        health.client.key = Some("/nonexistent/client-key.pem".into());
        health.client.url = Some("gopher://x/".into());
        let problems = validate(&health);
        assert!(
            problems.iter().any(|p| p.starts_with("url: ")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("cannot read")),
            "{problems:?}"
        );
        // A TLS endpoint that asks for client certificates, without one for the check.
        let health = HealthConfig {
            cert: Some("/c.pem".into()),
            key: Some("/k.pem".into()),
            clientcacert: Some("/ca.pem".into()),
            ..HealthConfig::default()
        };
        let e = target(&health).err().unwrap_or_default();
        assert!(e.contains("health.client.cert"), "{e}");
    }
}
