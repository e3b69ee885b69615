//! TLS client settings of a plugin's outbound HTTP: the CA to trust, the client certificate and
//! key (read by the host; they never enter the sandbox), the minimum version, curves and
//! cipher suites. Names follow ContainerSSH's `cacert`, `cert`, `key`, `tlsVersion`, `curves`
//! and `cipher` (IANA, OpenSSL and GnuTLS spellings of the suites).
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::crypto::{ring, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CipherSuite, ClientConfig, RootCertStore, SupportedCipherSuite};
use serde::{Deserialize, Deserializer, Serialize};

/// The TLS part of a plugin's egress settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsSettings {
    /// CA certificate(s) to verify servers with: PEM text or a file path. Unset: the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacert: Option<String>,
    /// Client certificate (chain) for mutual TLS: PEM text or a file path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// The client certificate's private key: PEM text or a file path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Lowest TLS version: "1.2" or "1.3" (default "1.3", as ContainerSSH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// Key exchange groups, a list or "a:b:c". Unset: all supported.
    #[serde(
        default,
        deserialize_with = "list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub curves: Vec<String>,
    /// Cipher suites, a list or "a:b:c". Unset: all supported (all are AEAD with forward secrecy).
    #[serde(
        default,
        deserialize_with = "list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cipher: Vec<String>,
}

pub(crate) fn list_or_colon_string<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Option::<Form>::deserialize(d)? {
        None => Vec::new(),
        Some(Form::List(l)) => l,
        Some(Form::Text(t)) => t
            .split(':')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().to_string())
            .collect(),
    })
}

/// PEM text (anything with a `-----BEGIN` line, as ContainerSSH takes it; what comes before
/// that line is left out) or a path to a PEM file. A value that is neither is not quoted in
/// the error (it could be a mangled key), nor is the value of a key setting.
pub fn load_pem(what: &str, spec: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(start) = spec.find("-----BEGIN") {
        return Ok(spec.as_bytes()[start..].to_vec());
    }
    let path = spec.trim();
    if path.contains('\n') || path.len() > 4096 {
        bail!("{what}: neither PEM text nor a file path");
    }
    let shown = if what.to_ascii_lowercase().ends_with("key") {
        "the file it names"
    } else {
        path
    };
    std::fs::read(path).with_context(|| format!("{what}: cannot read {shown}"))
}

/// Every certificate in `spec` (PEM text or a file path); at least one.
pub(crate) fn certificates(what: &str, spec: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = load_pem(what, spec)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{what}: not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        bail!("{what}: no certificate found");
    }
    Ok(certs)
}

/// Suite names ContainerSSH accepts, mapped to rustls's suites. CBC and RSA key exchange
/// suites do not exist in rustls, so naming one is an error, not a silent downgrade.
fn suite_by_name(name: &str) -> Option<CipherSuite> {
    use CipherSuite as C;
    Some(match name {
        "TLS_AES_128_GCM_SHA256" | "TLS13_AES_128_GCM_SHA256" => C::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" | "TLS13_AES_256_GCM_SHA384" => C::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" | "TLS13_CHACHA20_POLY1305_SHA256" => {
            C::TLS13_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        | "ECDHE-ECDSA-AES128-GCM-SHA256"
        | "TLS_ECDHE_ECDSA_AES_128_GCM_SHA256" => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        | "ECDHE-RSA-AES128-GCM-SHA256"
        | "TLS_ECDHE_RSA_AES_128_GCM_SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        | "ECDHE-ECDSA-AES256-GCM-SHA384"
        | "TLS_ECDHE_ECDSA_AES_256_GCM_SHA384" => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        | "ECDHE-RSA-AES256-GCM-SHA384"
        | "TLS_ECDHE_RSA_AES_256_GCM_SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "ECDHE-ECDSA-CHACHA20-POLY1305"
        | "TLS_ECDHE_ECDSA_CHACHA20_POLY1305" => C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"
        | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        | "ECDHE-RSA-CHACHA20-POLY1305"
        | "TLS_ECDHE_RSA_CHACHA20_POLY1305" => C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

/// Curve names ContainerSSH accepts. `None`: unknown name; `Some(None)`: known but not
/// offered by this build (secp521r1).
fn group_by_name(name: &str) -> Option<Option<&'static dyn SupportedKxGroup>> {
    Some(match name {
        "x25519" | "X25519" => Some(ring::kx_group::X25519),
        "secp256r1" | "prime256v1" => Some(ring::kx_group::SECP256R1),
        "secp384r1" => Some(ring::kx_group::SECP384R1),
        "secp521r1" => None,
        _ => return None,
    })
}

impl TlsSettings {
    /// Every problem with these settings, including unreadable or mismatched files; each
    /// setting is checked on its own, so that one run reports them all.
    pub fn validate(&self) -> Vec<String> {
        let parts = [
            self.provider().err(),
            self.versions().err(),
            self.roots().err(),
            self.identity().err(),
        ];
        let mut problems: Vec<String> = parts
            .into_iter()
            .flatten()
            .map(|e| format!("{e:#}"))
            .collect();
        if problems.is_empty() {
            // What only the whole shows: suites for the versions, a key that fits its certificate.
            if let Err(e) = self.client_config() {
                problems.push(format!("{e:#}"));
            }
        }
        problems
    }

    /// The rustls client configuration these settings describe.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(Arc::new(self.provider()?))
            .with_protocol_versions(self.versions()?)
            .context("tlsVersion/cipher: no cipher suite left for the allowed TLS versions")?
            .with_root_certificates(self.roots()?);
        let config = match self.identity()? {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .context("cert/key: the key does not fit the certificate")?,
        };
        Ok(config)
    }

    pub(crate) fn versions(
        &self,
    ) -> anyhow::Result<&'static [&'static rustls::SupportedProtocolVersion]> {
        const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        const TLS12: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        Ok(match self.tls_version.as_deref().unwrap_or("1.3") {
            "1.3" => TLS13,
            "1.2" => TLS12,
            other => bail!("tlsVersion: {other:?} is not supported (1.2 or 1.3)"),
        })
    }

    /// The client certificate chain and key for mutual TLS, if configured.
    #[allow(clippy::type_complexity)]
    fn identity(
        &self,
    ) -> anyhow::Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
        match (&self.cert, &self.key) {
            (None, None) => Ok(None),
            (Some(_), None) => bail!("cert: a client certificate needs its key (key)"),
            (None, Some(_)) => bail!("key: a client key needs its certificate (cert)"),
            (Some(cert), Some(key)) => {
                let chain = certificates("cert", cert)?;
                let key = PrivateKeyDer::from_pem_slice(&load_pem("key", key)?)
                    .context("key: not a PEM private key")?;
                Ok(Some((chain, key)))
            }
        }
    }

    pub(crate) fn provider(&self) -> anyhow::Result<CryptoProvider> {
        let mut provider = ring::default_provider();
        if !self.cipher.is_empty() {
            let mut suites: Vec<SupportedCipherSuite> = Vec::new();
            for name in &self.cipher {
                let wanted = suite_by_name(name)
                    .with_context(|| format!("cipher: {name:?} is not a supported suite"))?;
                if let Some(s) = provider.cipher_suites.iter().find(|s| s.suite() == wanted) {
                    suites.push(*s);
                }
            }
            provider.cipher_suites = suites;
        }
        if !self.curves.is_empty() {
            let mut groups = Vec::new();
            for name in &self.curves {
                match group_by_name(name) {
                    None => bail!("curves: {name:?} is not a known curve"),
                    Some(None) => {} // secp521r1: listed in ContainerSSH's defaults; skipped.
                    Some(Some(g)) => groups.push(g),
                }
            }
            if groups.is_empty() {
                bail!(
                    "curves: none of {:?} is supported (x25519, secp256r1, secp384r1)",
                    self.curves
                );
            }
            provider.kx_groups = groups;
        }
        Ok(provider)
    }

    fn roots(&self) -> anyhow::Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        match &self.cacert {
            Some(spec) => {
                for cert in certificates("cacert", spec)? {
                    roots.add(cert).context("cacert: unusable CA certificate")?;
                }
            }
            None => {
                // The system's trust store, as ContainerSSH does without `cacert`.
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        Ok(roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_and_curves_parse_in_every_spelling() {
        let s: TlsSettings = serde_json::from_value(serde_json::json!({
            "cipher": "ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256",
            "curves": ["x25519", "secp521r1"],
            "tlsVersion": "1.2"
        }))
        .unwrap();
        assert_eq!(s.cipher.len(), 2);
        let provider = s.provider().unwrap();
        assert_eq!(provider.cipher_suites.len(), 2);
        assert_eq!(provider.kx_groups.len(), 1);
        assert!(s.client_config().is_ok());
    }

    #[test]
    fn bad_settings_are_reported() {
        let bad = |v: serde_json::Value| {
            let s: TlsSettings = serde_json::from_value(v).unwrap();
            s.validate().join("; ")
        };
        assert!(bad(serde_json::json!({"tlsVersion": "1.0"})).contains("tlsVersion"));
        assert!(
            bad(serde_json::json!({"cipher": ["TLS_RSA_WITH_RC4_128_SHA"]})).contains("cipher")
        );
        assert!(bad(serde_json::json!({"curves": ["secp521r1"]})).contains("curves"));
        assert!(bad(serde_json::json!({"cert": "/nonexistent.pem"})).contains("needs its key"));
        assert!(bad(serde_json::json!({"cacert": "/nonexistent.pem"})).contains("cannot read"));
        assert!(bad(serde_json::json!({"cacert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"})).contains("cacert"));
        // TLS 1.3 only with only TLS 1.2 suites leaves nothing.
        assert!(
            bad(serde_json::json!({"cipher": ["ECDHE-RSA-AES128-GCM-SHA256"]})).contains("cipher")
        );
    }
}
