//! The quick-start auth plugin: users with password hashes (bcrypt, argon2id or SHA-crypt,
//! checked natively by the gateway) and authorized keys, all from the plugin's own config.
//! Plain-text passwords are refused.
use std::collections::BTreeMap;

use containerssh_plugin_sdk::auth::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub users: BTreeMap<String, User>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct User {
    /// A bcrypt (`$2b$...`), argon2id (`$argon2id$...`) or SHA-crypt (`$5$`, `$6$`) hash.
    #[serde(default)]
    pub password: Option<String>,
    /// Public keys in authorized_keys form ("ssh-ed25519 AAAA... comment").
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    /// Environment variables for the user's container.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

impl User {
    fn grant(&self, username: &str) -> AuthGrant {
        let mut grant = AuthGrant::for_user(username);
        grant.environment = self
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        grant
    }
}

/// Checks `password` against a bcrypt, argon2id or SHA-crypt hash, natively in the gateway
/// (plugin API 0.2's password-hash import). Anything else is a configuration error.
#[cfg(target_arch = "wasm32")]
pub fn password_matches(hash: &str, password: &[u8]) -> Result<bool, String> {
    verify_password(hash, password)
}

/// The same check in-process, for unit tests on the build machine (the host import exists
/// only inside the gateway).
#[cfg(not(target_arch = "wasm32"))]
pub fn password_matches(hash: &str, password: &[u8]) -> Result<bool, String> {
    if hash.starts_with("$2") {
        bcrypt::verify(password, hash).map_err(|e| format!("bad bcrypt hash: {e}"))
    } else if hash.starts_with("$argon2") {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let parsed = PasswordHash::new(hash).map_err(|e| format!("bad argon2 hash: {e}"))?;
        Ok(argon2::Argon2::default()
            .verify_password(password, &parsed)
            .is_ok())
    } else {
        Err(
            "password must be a bcrypt ($2b$...) or argon2 ($argon2id$...) hash, not plain text"
                .into(),
        )
    }
}

/// "type base64 [comment]" → "type base64": keys compare without their comments.
pub fn key_identity(key: &str) -> Option<(&str, &str)> {
    let mut parts = key.split_whitespace();
    Some((parts.next()?, parts.next()?))
}

fn lookup(username: &str) -> Result<Option<User>, AuthResult> {
    let mut config: Config = plugin_config().map_err(|e| {
        log(LogLevel::Error, &e);
        AuthResult::Failure(e)
    })?;
    Ok(config.users.remove(username))
}

pub struct StaticUsers;

impl Authenticator for StaticUsers {
    fn password(conn: ConnectionInfo, password: Vec<u8>) -> AuthResult {
        let user = match lookup(&conn.username) {
            Ok(Some(u)) => u,
            Ok(None) => return AuthResult::Failure("unknown user".into()),
            Err(denied) => return denied,
        };
        let Some(hash) = user.password.as_deref() else {
            return AuthResult::Failure("no password set for this user".into());
        };
        match password_matches(hash, &password) {
            Ok(true) => AuthResult::Success(user.grant(&conn.username)),
            Ok(false) => AuthResult::Failure("wrong password".into()),
            Err(e) => {
                log(LogLevel::Error, &format!("user {}: {e}", conn.username));
                AuthResult::Failure(e)
            }
        }
    }

    fn public_key(conn: ConnectionInfo, public_key: String) -> AuthResult {
        let user = match lookup(&conn.username) {
            Ok(Some(u)) => u,
            Ok(None) => return AuthResult::Failure("unknown user".into()),
            Err(denied) => return denied,
        };
        let offered = key_identity(&public_key);
        if offered.is_some()
            && user
                .authorized_keys
                .iter()
                .any(|k| key_identity(k) == offered)
        {
            AuthResult::Success(user.grant(&conn.username))
        } else {
            AuthResult::Failure("key not authorized".into())
        }
    }
}

containerssh_plugin_sdk::export_authenticator!(StaticUsers);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_and_argon2_hashes_verify() {
        let b = bcrypt::hash("pw", 4).unwrap();
        assert_eq!(password_matches(&b, b"pw"), Ok(true));
        assert_eq!(password_matches(&b, b"nope"), Ok(false));
        // argon2id of "pw" with salt "c29tZXNhbHQ" (generated offline).
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::from_b64("c29tZXNhbHQxMjM0NTY").unwrap();
        let a = argon2::Argon2::default()
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert_eq!(password_matches(&a, b"pw"), Ok(true));
        assert_eq!(password_matches(&a, b"px"), Ok(false));
        assert!(password_matches("plain", b"plain").is_err());
    }

    #[test]
    fn keys_compare_without_comments() {
        assert_eq!(
            key_identity("ssh-ed25519 AAAA x@y"),
            key_identity("ssh-ed25519 AAAA other")
        );
        assert_ne!(
            key_identity("ssh-ed25519 AAAA"),
            key_identity("ssh-ed25519 BBBB")
        );
        assert_eq!(key_identity("garbage"), None);
    }
}
