//! `sshproxy:` section, with ContainerSSH's key names: the SSH server every connection is
//! passed on to, how the gateway logs in there, and which host keys it trusts.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::UnusedKeys;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshProxyConfig {
    /// Host name or address of the backing SSH server.
    #[serde(default)]
    pub server: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Log in upstream with the name the client logged in with.
    #[serde(default)]
    pub username_pass_through: bool,
    /// The name to log in upstream with (unless `usernamePassThrough`).
    #[serde(default)]
    pub username: String,
    /// A password to offer upstream.
    #[serde(default)]
    pub password: String,
    /// A private key to offer upstream: PEM / OpenSSH text, or a file path.
    #[serde(default)]
    pub private_key: String,
    /// The upstream host keys trusted, as `SHA256:...` fingerprints (`ssh-keygen -lf`).
    #[serde(default)]
    pub allowed_host_key_fingerprints: Vec<String>,
    /// How long connecting and logging in upstream may take.
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// The identification string sent upstream.
    #[serde(default = "default_client_version")]
    pub client_version: String,
}

impl Default for SshProxyConfig {
    fn default() -> Self {
        Self {
            server: String::new(),
            port: default_port(),
            username_pass_through: false,
            username: String::new(),
            password: String::new(),
            private_key: String::new(),
            allowed_host_key_fingerprints: Vec::new(),
            timeout: default_timeout(),
            client_version: default_client_version(),
        }
    }
}

fn default_port() -> u16 {
    22
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_client_version() -> String {
    "SSH-2.0-ContainerSSH".into()
}

impl SshProxyConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.server.is_empty() {
            problems.push("sshproxy.server: the backing SSH server is required".into());
        }
        if self.port == 0 {
            problems.push("sshproxy.port: must be 1 to 65535".into());
        }
        if self.username.is_empty() && !self.username_pass_through {
            problems
                .push("sshproxy.username: required unless usernamePassThrough is set".to_string());
        }
        if self.password.is_empty() && self.private_key.is_empty() {
            problems.push(
                "sshproxy: set password or privateKey to log in to the backing server".into(),
            );
        }
        if self.allowed_host_key_fingerprints.is_empty() {
            problems.push(
                "sshproxy.allowedHostKeyFingerprints: list the backing server's host key fingerprints (SHA256:..., from ssh-keygen -lf)".into(),
            );
        }
        for fp in &self.allowed_host_key_fingerprints {
            let valid = fp.strip_prefix("SHA256:").is_some_and(|b64| {
                !b64.is_empty()
                    && b64
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
            });
            if !valid {
                problems.push(format!(
                    "sshproxy.allowedHostKeyFingerprints: {fp:?} is not a SHA256:... fingerprint"
                ));
            }
        }
        if !client_version_is_valid(&self.client_version) {
            problems.push(format!(
                "sshproxy.clientVersion: {:?} must look like SSH-2.0-Name (RFC 4253 section 4.2)",
                self.client_version
            ));
        }
        problems
    }
}

/// Why a connection's settings (a config server's answer) may not be used: one that sends the
/// user to another server must bring its own credentials (the file's are for the file's
/// server), and may not name key files on the gateway's disk.
pub fn credentials_stay(file: &SshProxyConfig, connection: &SshProxyConfig) -> Option<String> {
    let elsewhere = file.server != connection.server || file.port != connection.port;
    let inherited = (!file.password.is_empty() && connection.password == file.password)
        || (!file.private_key.is_empty() && connection.private_key == file.private_key);
    if elsewhere && inherited {
        return Some(
            "sshproxy: an answer that changes server or port must bring its own password or privateKey".into(),
        );
    }
    let key = &connection.private_key;
    if *key != file.private_key && !key.is_empty() && !key.trim_start().starts_with("-----") {
        return Some(
            "sshproxy.privateKey: an answer must give the key itself, not a file path".into(),
        );
    }
    None
}

/// `SSH-2.0-<softwareversion>[ <comments>]`, printable ASCII, as RFC 4253 §4.2 allows.
fn client_version_is_valid(version: &str) -> bool {
    let Some(rest) = version.strip_prefix("SSH-2.0-") else {
        return false;
    };
    let (software, comments) = rest.split_once(' ').unwrap_or((rest, ""));
    !software.is_empty()
        && software.chars().all(|c| c.is_ascii_graphic() && c != '-')
        && comments.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && version.len() <= 253
}

/// ContainerSSH keys of the `sshproxy` section that have no meaning here: the algorithm lists
/// (the backing connection offers the gateway's own modern set; ContainerSSH's lists name
/// older algorithms such as ssh-dss that it does not speak).
pub(super) const UNUSED_KEYS: UnusedKeys = &[(
    "sshproxy",
    &["ciphers", "kex", "macs", "hostKeyAlgos"],
    "the connection to the backing server uses the gateway's own algorithm set",
)];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_as_containerssh_checks_them() {
        let good = SshProxyConfig {
            server: "10.0.0.5".into(),
            username: "alice".into(),
            password: "pw".into(),
            allowed_host_key_fingerprints: vec!["SHA256:abc+/123".into()],
            ..Default::default()
        };
        assert!(good.validate().is_empty(), "{:?}", good.validate());
        let bad = SshProxyConfig {
            port: 0,
            allowed_host_key_fingerprints: vec!["MD5:aa:bb".into()],
            client_version: "OpenSSH_9".into(),
            ..Default::default()
        };
        let problems = bad.validate().join("\n");
        for key in [
            "sshproxy.server",
            "sshproxy.port",
            "sshproxy.username",
            "password or privateKey",
            "\"MD5:aa:bb\"",
            "sshproxy.clientVersion",
        ] {
            assert!(problems.contains(key), "{key} missing in {problems}");
        }
        assert!(client_version_is_valid("SSH-2.0-ContainerSSH"));
        assert!(client_version_is_valid("SSH-2.0-Gateway_1.0 some comment"));
        assert!(!client_version_is_valid("SSH-1.99-x"));
    }

    #[test]
    fn an_answer_cannot_take_the_files_credentials_elsewhere() {
        let file = SshProxyConfig {
            server: "a".into(),
            password: "secret".into(),
            ..Default::default()
        };
        assert_eq!(credentials_stay(&file, &file), None);
        let elsewhere = SshProxyConfig {
            server: "b".into(),
            ..file.clone()
        };
        assert!(credentials_stay(&file, &elsewhere).is_some());
        let own = SshProxyConfig {
            password: "theirs".into(),
            ..elsewhere.clone()
        };
        assert_eq!(credentials_stay(&file, &own), None);
        let key_file = SshProxyConfig {
            private_key: "/etc/ssh/ssh_host_ed25519_key".into(),
            ..own
        };
        assert!(credentials_stay(&file, &key_file).is_some());
    }
}
