//! Password-hash verification for plugins (the `password-hash` import of plugin API 0.2): done
//! natively, in constant time, on the blocking pool, at most one check per core at a time so a
//! burst of logins cannot crowd out the rest of the gateway's blocking work.
use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

/// Longest hash string accepted (bcrypt is 60 bytes, argon2id with big parameters about 100).
const MAX_HASH_LEN: usize = 512;

fn slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Arc::new(Semaphore::new(cores))
        })
        .clone()
}

/// `Ok(true)` on a match, `Ok(false)` on a mismatch, `Err` for a hash that cannot be read.
pub async fn verify(hash: String, password: Vec<u8>) -> Result<bool, String> {
    if hash.len() > MAX_HASH_LEN {
        return Err(format!("the hash is longer than {MAX_HASH_LEN} bytes"));
    }
    let Ok(_slot) = slots().acquire_owned().await else {
        return Err("password checks are shutting down".into());
    };
    tokio::task::spawn_blocking(move || verify_now(&hash, &password))
        .await
        .unwrap_or_else(|e| Err(format!("the password check failed: {e}")))
}

/// The check itself (blocking: tens of milliseconds for a bcrypt cost of 10).
pub fn verify_now(hash: &str, password: &[u8]) -> Result<bool, String> {
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        bcrypt::verify(password, hash).map_err(|e| format!("unreadable bcrypt hash: {e}"))
    } else if hash.starts_with("$argon2") {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let parsed = PasswordHash::new(hash).map_err(|e| format!("unreadable argon2 hash: {e}"))?;
        if parsed.hash.is_none() || parsed.salt.is_none() {
            return Err("unreadable argon2 hash: no salt or no hash".into());
        }
        match argon2::Argon2::default().verify_password(password, &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(e) => Err(format!("unreadable argon2 hash: {e}")),
        }
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        // SHA-crypt takes the password as text; bytes that are not UTF-8 cannot match a hash
        // made from text.
        let Ok(text) = std::str::from_utf8(password) else {
            return Ok(false);
        };
        let checked = if hash.starts_with("$5$") {
            sha_crypt::sha256_check(text, hash)
        } else {
            sha_crypt::sha512_check(text, hash)
        };
        match checked {
            Ok(()) => Ok(true),
            Err(e) => match format!("{e:?}") {
                // The crate does not export its error type; its Debug names the case.
                m if m == "HashMismatch" => Ok(false),
                m => Err(format!("unreadable SHA-crypt hash: {m}")),
            },
        }
    } else {
        Err("not a bcrypt ($2b$), argon2 ($argon2id$) or SHA-crypt ($5$, $6$) hash".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_matches_and_mismatches() {
        let bcrypt = bcrypt::hash("secret", 4).expect("hash");
        assert_eq!(verify_now(&bcrypt, b"secret"), Ok(true));
        assert_eq!(verify_now(&bcrypt, b"wrong"), Ok(false));

        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let argon = argon2::Argon2::default()
            .hash_password(b"secret", &salt)
            .expect("hash")
            .to_string();
        assert_eq!(verify_now(&argon, b"secret"), Ok(true));
        assert_eq!(verify_now(&argon, b"wrong"), Ok(false));

        // `mkpasswd -m sha-512 -S saltsalt secret`
        let sha512 =
            sha_crypt::sha512_simple("secret", &sha_crypt::Sha512Params::default()).expect("hash");
        assert_eq!(verify_now(&sha512, b"secret"), Ok(true));
        assert_eq!(verify_now(&sha512, b"wrong"), Ok(false));
        assert_eq!(verify_now(&sha512, &[0xff, 0xfe]), Ok(false));
    }

    #[test]
    fn unreadable_hashes_are_errors_not_mismatches() {
        assert!(verify_now("secret", b"secret").is_err());
        assert!(verify_now("$2b$10$short", b"secret").is_err());
        assert!(verify_now("$argon2id$nonsense", b"secret").is_err());
    }

    #[tokio::test]
    async fn overlong_hashes_are_refused_before_any_work() {
        let long = format!("$2b${}", "a".repeat(MAX_HASH_LEN));
        assert!(verify(long, b"x".to_vec()).await.is_err());
    }
}
