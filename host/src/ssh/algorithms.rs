//! The russh server configuration: modern algorithms only, no compression, keepalives on.
use std::borrow::Cow;
use std::sync::Arc;

use russh::keys::ssh_key::{Algorithm, EcdsaCurve, HashAlg};
use russh::keys::PrivateKey;
use russh::server::Config;
use russh::{cipher, kex, mac, MethodKind, MethodSet, Preferred, SshId};

use crate::config::{SshConfig, MAX_AUTH_ATTEMPTS};

const KEX: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::DH_G16_SHA512,
    kex::DH_G18_SHA512,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];

const CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];

const MACS: &[mac::Name] = &[
    mac::HMAC_SHA512_ETM,
    mac::HMAC_SHA256_ETM,
    mac::HMAC_SHA512,
    mac::HMAC_SHA256,
];

/// Host and client key algorithms; SHA-1 `ssh-rsa` signatures are not offered.
const KEYS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP384,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP521,
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha512),
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha256),
    },
];

pub fn server_config(ssh: &SshConfig, keys: Vec<PrivateKey>) -> Arc<Config> {
    let methods = MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]);
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
        keepalive_max: 3,
        nodelay: true,
        preferred: Preferred {
            kex: Cow::Borrowed(KEX),
            key: Cow::Borrowed(KEYS),
            host_key_certificates: Cow::Borrowed(&[]),
            cipher: Cow::Borrowed(CIPHERS),
            mac: Cow::Borrowed(MACS),
            compression: Cow::Borrowed(&[russh::compression::NONE]),
        },
        ..Default::default()
    })
}
