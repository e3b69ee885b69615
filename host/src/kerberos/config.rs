//! The `kerberos` section: ContainerSSH's `auth.password.kerberos` / `auth.gssapi.kerberos`
//! blocks (one Kerberos setup; a ContainerSSH file's blocks are moved here when their method
//! is `kerberos`).
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KerberosConfig {
    /// SSH passwords are checked with the KDC (a ticket is asked for with the password and
    /// verified with the keytab, so a forged KDC cannot let anyone in).
    #[serde(default)]
    pub password: bool,
    /// `gssapi-with-mic` logins: the client's Kerberos ticket, accepted with the keytab.
    #[serde(default)]
    pub gssapi: bool,
    /// The service keys the gateway accepts tickets for (and verifies password logins with).
    #[serde(default = "default_keytab")]
    pub keytab: PathBuf,
    /// Which keytab entry: `any` (every entry), `host` (`host/<this host's name>`) or a
    /// principal `service/name[@REALM]`.
    #[serde(default = "default_acceptor")]
    pub acceptor: String,
    /// The SSH user name must be the principal's local name (a principal of the default
    /// realm without instance, or what `auth_to_local` in `configPath` maps it to).
    #[serde(default = "yes")]
    pub enforce_username: bool,
    /// Where the user's Kerberos credentials are written in the container (`KRB5CCNAME` is
    /// set to it); empty: not written.
    #[serde(default = "default_credential_cache_path")]
    pub credential_cache_path: String,
    /// The Kerberos configuration: realm and KDCs for password logins; the default realm and
    /// `auth_to_local` rules that give a GSSAPI principal its user name.
    #[serde(default = "default_config_path")]
    pub config_path: PathBuf,
    /// The largest clock difference accepted.
    #[serde(default = "default_clock_skew", with = "crate::config::duration")]
    pub clock_skew: Duration,
}

fn yes() -> bool {
    true
}
fn default_keytab() -> PathBuf {
    PathBuf::from("/etc/krb5.keytab")
}
fn default_acceptor() -> String {
    "any".into()
}
fn default_credential_cache_path() -> String {
    "/tmp/krb5cc".into()
}
fn default_config_path() -> PathBuf {
    PathBuf::from("/etc/containerssh/krb5.conf")
}
fn default_clock_skew() -> Duration {
    Duration::from_secs(300)
}

impl Default for KerberosConfig {
    fn default() -> Self {
        Self {
            password: false,
            gssapi: false,
            keytab: default_keytab(),
            acceptor: default_acceptor(),
            enforce_username: true,
            credential_cache_path: default_credential_cache_path(),
            config_path: default_config_path(),
            clock_skew: default_clock_skew(),
        }
    }
}

impl KerberosConfig {
    /// Every problem, each naming its key under `kerberos.` (reads the files' metadata).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.password && !self.gssapi {
            problems.push(
                "password/gssapi: neither is on; turn on at least one (or remove the section)"
                    .into(),
            );
        }
        let readable_file = |path: &std::path::Path| match std::fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(format!("{} is not a file", path.display())),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        };
        if let Err(why) = readable_file(&self.keytab) {
            problems.push(format!("keytab: {why}"));
        }
        // Both methods need it: passwords for the realm's KDCs, GSSAPI for the default
        // realm that decides whose account a principal opens.
        if let Err(why) = readable_file(&self.config_path) {
            problems.push(format!("configPath: {why}"));
        }
        match self.acceptor.as_str() {
            "any" | "host" => {}
            other if other.contains('/') && !other.chars().any(char::is_whitespace) => {}
            other => problems.push(format!(
                "acceptor: {other:?} is not any, host or a service/name principal"
            )),
        }
        if !self.credential_cache_path.is_empty() && !self.credential_cache_path.starts_with('/') {
            problems.push(format!(
                "credentialCachePath: {:?} must be an absolute path in the container (or empty)",
                self.credential_cache_path
            ));
        }
        problems
    }
}
