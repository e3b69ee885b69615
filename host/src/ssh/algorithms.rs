//! The russh server configuration: the algorithms of `ssh.kex`, `ssh.ciphers`, `ssh.macs` and
//! `ssh.hostKeyAlgos` (validated names, see `config::ssh`), no compression, keepalives on.
use std::borrow::Cow;
use std::sync::Arc;

use russh::keys::ssh_key::Algorithm;
use russh::keys::PrivateKey;
use russh::server::Config;
use russh::{cipher, kex, mac, MethodKind, MethodSet, Preferred, SshId};

use crate::config::{
    default_names, Algo, SshConfig, CIPHERS, HOST_KEY_ALGOS, KEX, MACS, MAX_AUTH_ATTEMPTS,
};

/// Every key exchange the configuration may name, as russh knows it.
const KEX_IMPL: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::DH_G14_SHA256,
    kex::DH_G15_SHA512,
    kex::DH_G16_SHA512,
    kex::DH_G17_SHA512,
    kex::DH_G18_SHA512,
    kex::ECDH_SHA2_NISTP256,
    kex::ECDH_SHA2_NISTP384,
    kex::ECDH_SHA2_NISTP521,
];

/// Always announced after the configured key exchanges: RFC 8308 extension negotiation
/// (server-sig-algs) and strict key exchange (the Terrapin mitigation).
const KEX_EXTENSIONS: &[kex::Name] = &[
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];

const CIPHER_IMPL: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];

const MAC_IMPL: &[mac::Name] = &[
    mac::HMAC_SHA512_ETM,
    mac::HMAC_SHA256_ETM,
    mac::HMAC_SHA512,
    mac::HMAC_SHA256,
];

/// The names of `configured`, or of the table's defaults, as russh's values. Validation has
/// made sure every configured name is implemented; one that is not would be left out.
fn pick<N: Copy + AsRef<str>>(
    configured: &Option<Vec<String>>,
    table: &[Algo],
    implemented: &[N],
) -> Vec<N> {
    let names = configured.clone().unwrap_or_else(|| default_names(table));
    names
        .iter()
        .filter_map(|name| implemented.iter().find(|n| n.as_ref() == name).copied())
        .collect()
}

/// The `key` list russh uses twice: the host key algorithms it announces (only those that
/// fit a loaded host key) and, in server-sig-algs, the signature algorithms it accepts from
/// clients' keys. The configured host key algorithms come first; the default algorithms that
/// fit no host key follow, so that restricting host keys does not turn away users' keys.
fn key_algorithms(ssh: &SshConfig, keys: &[PrivateKey]) -> Vec<Algorithm> {
    let parse = |names: Vec<String>| -> Vec<Algorithm> {
        names
            .iter()
            .filter_map(|n| Algorithm::new(n).ok())
            .collect()
    };
    let defaults = parse(default_names(HOST_KEY_ALGOS));
    let mut list = match &ssh.host_key_algos {
        Some(names) => parse(names.clone()),
        None => defaults.clone(),
    };
    for key in keys {
        if !list.iter().any(|a| fits(key, a)) {
            tracing::warn!(key = %key.algorithm(), "a host key is not used: no algorithm of ssh.hostKeyAlgos fits it");
        }
    }
    if !keys.iter().any(|k| list.iter().any(|a| fits(k, a))) {
        tracing::error!(
            "no host key fits ssh.hostKeyAlgos: clients cannot complete a key exchange"
        );
    }
    for algo in defaults {
        if !list.contains(&algo) && !keys.iter().any(|k| fits(k, &algo)) {
            list.push(algo);
        }
    }
    list
}

/// Whether `algo` can sign with `key` (any RSA key signs with every RSA hash).
fn fits(key: &PrivateKey, algo: &Algorithm) -> bool {
    match algo {
        Algorithm::Rsa { .. } => key.algorithm().is_rsa(),
        other => key.algorithm() == *other,
    }
}

fn preferred(ssh: &SshConfig, keys: &[PrivateKey]) -> Preferred {
    let mut kex = pick(&ssh.kex, KEX, KEX_IMPL);
    kex.extend_from_slice(KEX_EXTENSIONS);
    Preferred {
        kex: Cow::Owned(kex),
        key: Cow::Owned(key_algorithms(ssh, keys)),
        host_key_certificates: Cow::Borrowed(&[]),
        cipher: Cow::Owned(pick(&ssh.ciphers, CIPHERS, CIPHER_IMPL)),
        mac: Cow::Owned(pick(&ssh.macs, MACS, MAC_IMPL)),
        compression: Cow::Borrowed(&[russh::compression::NONE]),
    }
}

/// The authentication methods the gateway offers, before and after every failed attempt.
pub fn auth_methods(config: &crate::config::Config) -> MethodSet {
    let mut methods = Vec::new();
    if config.auth.is_some() {
        methods.extend([MethodKind::PublicKey, MethodKind::Password]);
    } else if config.kerberos.as_ref().is_some_and(|k| k.password) {
        methods.push(MethodKind::Password);
    }
    if config.oauth2.is_some() {
        methods.push(MethodKind::KeyboardInteractive);
    }
    if config.kerberos.as_ref().is_some_and(|k| k.gssapi) {
        methods.push(MethodKind::GssapiWithMic);
    }
    MethodSet::from(&methods[..])
}

pub fn server_config(config: &crate::config::Config, keys: Vec<PrivateKey>) -> Arc<Config> {
    let ssh = &config.ssh;
    let methods = auth_methods(config);
    let preferred = preferred(ssh, &keys);
    Arc::new(Config {
        server_id: SshId::Standard(format!("SSH-2.0-{}", ssh.server_version).into()),
        methods,
        // Failed attempts take a constant time so that timing reveals nothing...
        auth_rejection_time: std::time::Duration::from_millis(500),
        // ...except the `none` probe every OpenSSH client sends first.
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        keys,
        // The initial `none` probe counts as a rejection in russh; the handler enforces the
        // real limit of MAX_AUTH_ATTEMPTS on password/public-key attempts.
        max_auth_attempts: MAX_AUTH_ATTEMPTS + 1,
        inactivity_timeout: (!ssh.idle_timeout.is_zero()).then_some(ssh.idle_timeout),
        keepalive_interval: (!ssh.keepalive_interval.is_zero()).then_some(ssh.keepalive_interval),
        keepalive_max: ssh.keepalive_count_max,
        nodelay: true,
        preferred,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlgoStatus;
    use russh::keys::ssh_key::{EcdsaCurve, HashAlg};

    fn ed25519() -> PrivateKey {
        use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
        let pair = Ed25519Keypair::from_seed(&[7; 32]);
        PrivateKey::new(KeypairData::Ed25519(pair), "test").unwrap()
    }

    /// Every name the configuration accepts is one russh implements.
    #[test]
    fn every_usable_name_is_implemented() {
        let usable = |table: &[Algo]| -> Vec<&'static str> {
            table
                .iter()
                .filter(|a| !matches!(a.status, AlgoStatus::Refused(_)))
                .map(|a| a.name)
                .collect()
        };
        for name in usable(KEX) {
            assert!(KEX_IMPL.iter().any(|n| n.as_ref() == name), "{name}");
        }
        for name in usable(CIPHERS) {
            assert!(CIPHER_IMPL.iter().any(|n| n.as_ref() == name), "{name}");
        }
        for name in usable(MACS) {
            assert!(MAC_IMPL.iter().any(|n| n.as_ref() == name), "{name}");
        }
        for name in usable(HOST_KEY_ALGOS) {
            assert!(Algorithm::new(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn defaults_have_no_mac_then_encrypt_and_end_with_the_kex_extensions() {
        let p = preferred(&SshConfig::default(), &[ed25519()]);
        let macs: Vec<&str> = p.mac.iter().map(|m| m.as_ref()).collect();
        assert_eq!(
            macs,
            [
                "hmac-sha2-512-etm@openssh.com",
                "hmac-sha2-256-etm@openssh.com"
            ]
        );
        let kex: Vec<&str> = p.kex.iter().map(|k| k.as_ref()).collect();
        assert_eq!(kex[0], "mlkem768x25519-sha256");
        assert!(kex.ends_with(&["ext-info-s", "kex-strict-s-v00@openssh.com"]));
        assert_eq!(p.cipher.len(), 6);
    }

    #[test]
    fn configured_lists_are_used_in_their_order() {
        let ssh = SshConfig {
            kex: Some(vec!["mlkem768x25519-sha256".into()]),
            ciphers: Some(vec!["aes128-ctr".into(), "aes256-gcm@openssh.com".into()]),
            macs: Some(vec!["hmac-sha2-256-etm@openssh.com".into()]),
            ..SshConfig::default()
        };
        let p = preferred(&ssh, &[ed25519()]);
        let kex: Vec<&str> = p.kex.iter().map(|k| k.as_ref()).collect();
        assert_eq!(
            kex,
            [
                "mlkem768x25519-sha256",
                "ext-info-s",
                "kex-strict-s-v00@openssh.com"
            ]
        );
        assert_eq!(
            p.cipher.as_ref(),
            [cipher::AES_128_CTR, cipher::AES_256_GCM]
        );
        assert_eq!(p.mac.as_ref(), [mac::HMAC_SHA256_ETM]);
    }

    /// Restricting host key algorithms keeps accepting users' keys of other kinds (the same
    /// list is server-sig-algs), without announcing a host key algorithm that was left out.
    #[test]
    fn host_key_algorithms_restrict_host_keys_only() {
        let ssh = SshConfig {
            host_key_algos: Some(vec!["ssh-ed25519".into()]),
            ..SshConfig::default()
        };
        let keys = key_algorithms(&ssh, &[ed25519()]);
        assert_eq!(keys[0], Algorithm::Ed25519);
        assert!(keys.contains(&Algorithm::Rsa {
            hash: Some(HashAlg::Sha512)
        }));
        assert!(keys.contains(&Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256
        }));
        // An ed25519 host key fits only ssh-ed25519, so nothing else is announced for it.
        assert_eq!(keys.iter().filter(|a| fits(&ed25519(), a)).count(), 1);
        // SHA-1 ssh-rsa is never accepted.
        assert!(!keys.contains(&Algorithm::Rsa { hash: None }));
    }
}
