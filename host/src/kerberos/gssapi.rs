//! `gssapi-with-mic` logins (RFC 4462): accepting the client's Kerberos ticket with the keytab.
//! (Being written.)
use super::config::KerberosConfig;

/// Accepts GSSAPI security contexts with the keytab's keys.
pub struct Acceptor {}

impl Acceptor {
    pub fn new(_config: &KerberosConfig) -> anyhow::Result<Self> {
        anyhow::bail!("kerberos.gssapi: not supported yet")
    }
}
