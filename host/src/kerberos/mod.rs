//! Kerberos logins (ContainerSSH's `kerberos` methods): SSH passwords checked with the KDC, and
//! `gssapi-with-mic` with the client's ticket. Both use the system's MIT Kerberos libraries
//! (libkrb5.so.3, libgssapi_krb5.so.2), loaded at start only when Kerberos is configured, so
//! the gateway builds and runs without them otherwise. The keytab makes both safe: a password
//! login's ticket is verified with it (a forged KDC cannot vouch), and GSSAPI tickets are
//! accepted only for its principals.
pub mod config;
pub mod gssapi;
mod krb5;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;

pub use config::KerberosConfig;

use crate::plugin::{AuthGrant, AuthOutcome};

/// Most password checks talking to the KDC at once (each holds a blocking thread).
const MAX_CONCURRENT_CHECKS: usize = 16;
/// How long one password check may take (the KDC's answers included).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The metadata entry naming the principal a login was vouched for by.
pub const PRINCIPAL_METADATA: &str = "KERBEROS_PRINCIPAL";

/// Why a Kerberos login did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum KerberosError {
    /// Wrong password, unknown principal, a name that is not the user's: a failed login.
    #[error("{0}")]
    Denied(String),
    /// The KDC or the keytab could not be used: not the user's fault.
    #[error("{0}")]
    Unavailable(String),
}

impl From<KerberosError> for AuthOutcome {
    fn from(e: KerberosError) -> Self {
        match e {
            KerberosError::Denied(why) => AuthOutcome::Failure(why),
            KerberosError::Unavailable(why) => AuthOutcome::Unavailable(why),
        }
    }
}

/// The configured Kerberos logins; shared by every connection.
pub struct Kerberos {
    config: KerberosConfig,
    krb5: Arc<krb5::Krb5>,
    checks: Arc<Semaphore>,
    pub gssapi: Option<gssapi::Acceptor>,
}

impl Kerberos {
    /// Loads the libraries and checks the keytab and configuration (blocking: call off the
    /// async workers).
    pub fn new(config: &KerberosConfig) -> anyhow::Result<Arc<Self>> {
        if config.clock_skew != std::time::Duration::from_secs(300) {
            tracing::warn!(clock_skew = ?config.clock_skew, "kerberos.clockSkew is not applied: MIT Kerberos takes clockskew from the Kerberos configuration ([libdefaults] clockskew in configPath for passwords, KRB5_CONFIG or /etc/krb5.conf for GSSAPI)");
        }
        // GSSAPI needs it too: whose account a ticket's principal opens is the
        // configuration's answer (default realm, auth_to_local).
        let krb5 = Arc::new(krb5::Krb5::load(config).context("kerberos")?);
        let gssapi = if config.gssapi {
            Some(gssapi::Acceptor::new(config).context("kerberos.gssapi")?)
        } else {
            None
        };
        Ok(Arc::new(Self {
            config: config.clone(),
            krb5,
            checks: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS)),
            gssapi,
        }))
    }

    pub fn config(&self) -> &KerberosConfig {
        &self.config
    }

    pub fn checks_passwords(&self) -> bool {
        self.config.password
    }

    /// The local user name of a ticket's `principal` (blocking: reads the configuration).
    pub fn local_name(&self, principal: &str) -> Result<String, KerberosError> {
        self.krb5.local_name(principal)
    }

    /// Asks the KDC for `user`'s ticket with `password` and verifies it with the keytab.
    pub async fn check_password(
        &self,
        user: &str,
        password: &[u8],
    ) -> Result<AuthGrant, KerberosError> {
        if !self.config.password {
            return Err(KerberosError::Unavailable(
                "Kerberos password logins are off".into(),
            ));
        }
        let krb5 = self.krb5.clone();
        // A principal name of the default realm only: `alice@OTHER` or `host/x` are not
        // user names (they would pick another realm or a service's key).
        if user.is_empty() || user.contains(['@', '/', '\\', '\0']) || user.len() > 256 {
            return Err(KerberosError::Denied(format!(
                "{user:?} is not a Kerberos user name"
            )));
        }
        if password.is_empty() || password.contains(&0) {
            return Err(KerberosError::Denied("empty password or NUL in it".into()));
        }
        let slot = self
            .checks
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| KerberosError::Unavailable("shutting down".into()))?;
        let user_name = user.to_string();
        // Wiped when dropped.
        let password = zeroize::Zeroizing::new(password.to_vec());
        // The slot goes with the thread: a check that outlives its timeout still holds it, so
        // stuck KDC calls never exceed the limit.
        let check = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            krb5.check_password(&user_name, &password)
        });
        let checked = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(Ok(result)) => result?,
            Ok(Err(e)) => {
                return Err(KerberosError::Unavailable(format!(
                    "the Kerberos check failed: {e}"
                )));
            }
            Err(_) => {
                return Err(KerberosError::Unavailable(
                    "the KDC did not answer in time".into(),
                ));
            }
        };
        let principal = format!("{user}@{}", self.krb5.realm());
        Ok(self.grant(user, &principal, checked.credentials))
    }

    /// The grant of a Kerberos login: the user name, the principal that vouched for it
    /// (metadata `KERBEROS_PRINCIPAL`, for config servers and authz webhooks) and, with
    /// `credentialCachePath`, the user's credentials as a file in the container
    /// (`KRB5CCNAME` points at it).
    pub fn grant(&self, user: &str, principal: &str, credentials: Option<Vec<u8>>) -> AuthGrant {
        let mut grant = AuthGrant {
            authenticated_username: user.to_string(),
            metadata: vec![(PRINCIPAL_METADATA.to_string(), principal.to_string())],
            environment: Vec::new(),
            files: Vec::new(),
            sensitive: Vec::new(),
        };
        let path = &self.config.credential_cache_path;
        if let (Some(credentials), false) = (credentials, path.is_empty()) {
            grant.files.push((path.clone(), credentials));
            grant.sensitive.push(path.clone());
            grant
                .environment
                .push(("KRB5CCNAME".into(), format!("FILE:{path}")));
        }
        grant
    }
}
