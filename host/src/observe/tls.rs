//! HTTPS for the metrics and health endpoints, with ContainerSSH's HTTP server settings: `cert`
//! and `key` (PEM text or a file path), `clientcacert` (clients must then present a
//! certificate that CA signed), `tlsVersion`, `curves` and `cipher` (the names ContainerSSH
//! takes, mapped as for plugins' TLS, see `plugin::tls`). The files are read at start, before
//! anything is served; certificates and keys never appear in a message.
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::plugin::tls::{certificates, load_pem, TlsSettings};

/// The TLS settings of one endpoint (`metrics.*` or `health.*`); no `cert` and `key`: HTTP.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub clientcacert: Option<String>,
    pub tls_version: Option<String>,
    pub curves: Vec<String>,
    pub cipher: Vec<String>,
}

/// The key may be PEM text: never shown.
impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("clientcacert", &self.clientcacert)
            .field("tls_version", &self.tls_version)
            .field("curves", &self.curves)
            .field("cipher", &self.cipher)
            .finish()
    }
}

impl ServerTls {
    /// Whether the endpoint is to serve HTTPS (a `cert` or a `key` is set; both are needed).
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }

    /// A `cert` without its `key` or the reverse: checked even where the endpoint is off.
    pub fn pairing_problem(&self) -> Option<String> {
        match (&self.cert, &self.key) {
            (Some(_), None) => Some("cert: a server certificate needs its key (key)".into()),
            (None, Some(_)) => Some("key: a server key needs its certificate (cert)".into()),
            _ => None,
        }
    }

    /// Every problem with these settings, each naming its key (`cert: ...`), the files read.
    pub fn validate(&self) -> Vec<String> {
        let parts = [
            self.identity().err(),
            self.client_roots().err(),
            self.crypto().err(),
        ];
        let mut problems: Vec<String> = parts
            .into_iter()
            .flatten()
            .map(|e| format!("{e:#}"))
            .collect();
        if problems.is_empty() {
            // What only the whole shows: suites for the versions, a key that fits its certificate.
            if let Err(e) = self.server_config() {
                problems.push(format!("{e:#}"));
            }
        }
        problems
    }

    /// The rustls server configuration, or `None` for plain HTTP. Reads the files: call it at
    /// start, off the async workers.
    pub fn server_config(&self) -> anyhow::Result<Option<Arc<ServerConfig>>> {
        let Some((chain, key)) = self.identity()? else {
            if self.clientcacert.is_some() {
                bail!("clientcacert: client certificates need HTTPS: set cert and key too");
            }
            return Ok(None);
        };
        let (provider, versions) = self.crypto()?;
        let provider = Arc::new(provider);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .context("tlsVersion/cipher: no cipher suite left for the allowed TLS versions")?;
        let builder = match self.client_roots()? {
            Some(roots) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .context("clientcacert: unusable CA certificate")?,
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            anyhow!("key: unusable, or does not belong to the certificate (cert): {e}")
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }

    /// The certificate chain and key, if HTTPS is configured.
    #[allow(clippy::type_complexity)]
    fn identity(
        &self,
    ) -> anyhow::Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
        if let Some(problem) = self.pairing_problem() {
            bail!("{problem}");
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = certificates("cert", cert)?;
                let pem = load_pem("key", key)?;
                // The parser's message could quote the text: not shown.
                let key = PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|_| anyhow!("key: no PEM private key found"))?;
                Ok(Some((chain, key)))
            }
            _ => Ok(None),
        }
    }

    /// The CAs client certificates must come from, if mutual TLS is configured.
    fn client_roots(&self) -> anyhow::Result<Option<RootCertStore>> {
        let Some(spec) = &self.clientcacert else {
            return Ok(None);
        };
        let mut roots = RootCertStore::empty();
        for cert in certificates("clientcacert", spec)? {
            roots
                .add(cert)
                .context("clientcacert: unusable CA certificate")?;
        }
        Ok(Some(roots))
    }

    /// The crypto provider (curves, cipher suites) and versions, as for plugins' TLS.
    fn crypto(
        &self,
    ) -> anyhow::Result<(
        rustls::crypto::CryptoProvider,
        &'static [&'static rustls::SupportedProtocolVersion],
    )> {
        let settings = TlsSettings {
            tls_version: self.tls_version.clone(),
            curves: self.curves.clone(),
            cipher: self.cipher.clone(),
            ..TlsSettings::default()
        };
        Ok((settings.provider()?, settings.versions()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA, a server certificate it signed (with its key) and another CA's certificate.
    fn pki(dir: &std::path::Path) -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        (
            cert.pem(),
            key.serialize_pem(),
            ca_path.to_string_lossy().into_owned(),
        )
    }

    fn tls(cert: &str, key: &str) -> ServerTls {
        ServerTls {
            cert: Some(cert.into()),
            key: Some(key.into()),
            ..ServerTls::default()
        }
    }

    #[test]
    fn pem_text_and_files_make_a_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = pki(dir.path());
        let key_path = dir.path().join("key.pem");
        std::fs::write(&key_path, &key).unwrap();
        let mut settings = tls(&cert, &key_path.to_string_lossy());
        settings.clientcacert = Some(ca);
        settings.tls_version = Some("1.2".into());
        settings.curves = vec!["x25519".into(), "secp521r1".into()];
        settings.cipher = vec![
            "TLS_AES_128_GCM_SHA256".into(),
            "ECDHE-ECDSA-AES128-GCM-SHA256".into(),
        ];
        assert!(settings.validate().is_empty(), "{:?}", settings.validate());
        let config = settings.server_config().unwrap().unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(config.crypto_provider().cipher_suites.len(), 2);
        assert_eq!(config.crypto_provider().kx_groups.len(), 1);
        assert!(ServerTls::default().server_config().unwrap().is_none());
        assert!(!ServerTls::default().enabled());
    }

    #[test]
    fn each_mistake_names_its_key_and_never_quotes_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = pki(dir.path());
        let problems = |s: ServerTls| s.validate().join("; ");
        let only_cert = ServerTls {
            cert: Some(cert.clone()),
            ..ServerTls::default()
        };
        assert!(problems(only_cert).starts_with("cert: "));
        let only_key = ServerTls {
            key: Some(key.clone()),
            ..ServerTls::default()
        };
        let p = problems(only_key);
        assert!(p.starts_with("key: "), "{p}");
        assert!(!p.contains("PRIVATE KEY"), "{p}");
        let only_ca = ServerTls {
            clientcacert: Some(ca.clone()),
            ..ServerTls::default()
        };
        assert!(problems(only_ca).starts_with("clientcacert: "));

        let with = |change: &dyn Fn(&mut ServerTls)| {
            let mut s = tls(&cert, &key);
            change(&mut s);
            problems(s)
        };
        let p = with(&|s| s.tls_version = Some("1.1".into()));
        assert!(p.starts_with("tlsVersion: ") && p.contains("1.1"), "{p}");
        let p = with(&|s| s.curves = vec!["brainpoolP256r1".into()]);
        assert!(
            p.starts_with("curves: ") && p.contains("brainpoolP256r1"),
            "{p}"
        );
        let p = with(&|s| s.cipher = vec!["TLS_RSA_WITH_AES_128_CBC_SHA".into()]);
        assert!(
            p.starts_with("cipher: ") && p.contains("TLS_RSA_WITH_AES_128_CBC_SHA"),
            "{p}"
        );
        // TLS 1.3 (the default) with TLS 1.2 suites only leaves nothing.
        let p = with(&|s| s.cipher = vec!["ECDHE-RSA-AES128-GCM-SHA256".into()]);
        assert!(p.contains("no cipher suite"), "{p}");
        let p = with(&|s| s.cert = Some("/nonexistent/cert.pem".into()));
        assert!(
            p.starts_with("cert: cannot read /nonexistent/cert.pem"),
            "{p}"
        );
        let p = with(&|s| s.clientcacert = Some(key.clone()));
        assert!(p.starts_with("clientcacert: no certificate"), "{p}");
        // A key pasted with text before it still reads; a mangled one is not quoted.
        let p = with(&|s| s.key = Some(format!("Bag Attributes\n{key}")));
        assert_eq!(p, "");
        let mangled = key.replace("-----BEGIN", "BEGIN");
        let p = with(&|s| s.key = Some(mangled.clone()));
        assert!(
            p.starts_with("key: neither PEM text nor a file path"),
            "{p}"
        );
        assert!(!p.contains("PRIVATE"), "{p}");
        // Another key than the certificate's.
        let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let p = with(&|s| s.key = Some(other.clone()));
        assert!(p.starts_with("key: "), "{p}");
        assert!(!p.contains("PRIVATE"), "{p}");
    }
}
