//! `ssh:` section: listener, host keys, banner and connection limits.
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshConfig {
    /// Address and port to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Host private key files (OpenSSH format). A missing file is generated (ed25519) on first start.
    #[serde(default = "default_hostkeys")]
    pub hostkeys: Vec<PathBuf>,
    /// Text shown to the client before authentication.
    #[serde(default)]
    pub banner: String,
    /// Server identification suffix after "SSH-2.0-".
    #[serde(default = "default_server_version")]
    pub server_version: String,
    /// Time a client has to authenticate.
    #[serde(default = "default_login_grace_time", with = "humantime_serde")]
    pub login_grace_time: Duration,
    /// Close a connection with no traffic for this long (0 disables).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Send an SSH keepalive after this much silence from the client.
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// On SIGTERM, how long running sessions may continue before their containers are removed.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Maximum number of connections at once (authenticated or not).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Maximum number of connections that have not authenticated yet (like MaxStartups);
    /// further connections are closed at once.
    #[serde(default = "default_max_unauthenticated")]
    pub max_unauthenticated: usize,
    /// Failed-login rate limits.
    #[serde(default)]
    pub auth_rate_limit: AuthRateLimit,
}

/// Failed logins allowed per source IP and per user name within `window`; once reached, further
/// attempts are refused without asking the auth plugin until old failures age out. 0 disables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthRateLimit {
    #[serde(default = "default_failures_per_ip")]
    pub max_failures_per_ip: usize,
    #[serde(default = "default_failures_per_user")]
    pub max_failures_per_user: usize,
    #[serde(default = "default_rate_window", with = "humantime_serde")]
    pub window: Duration,
}

impl Default for AuthRateLimit {
    fn default() -> Self {
        Self {
            max_failures_per_ip: default_failures_per_ip(),
            max_failures_per_user: default_failures_per_user(),
            window: default_rate_window(),
        }
    }
}

fn default_failures_per_ip() -> usize {
    30
}
fn default_failures_per_user() -> usize {
    10
}
fn default_rate_window() -> Duration {
    Duration::from_secs(300)
}
fn default_max_unauthenticated() -> usize {
    100
}

/// Authentication attempts allowed per connection (as OpenSSH's MaxAuthTries default).
pub const MAX_AUTH_ATTEMPTS: usize = 6;

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            hostkeys: default_hostkeys(),
            banner: String::new(),
            server_version: default_server_version(),
            login_grace_time: default_login_grace_time(),
            idle_timeout: default_idle_timeout(),
            keepalive_interval: default_keepalive(),
            shutdown_timeout: default_drain_timeout(),
            max_connections: default_max_connections(),
            max_unauthenticated: default_max_unauthenticated(),
            auth_rate_limit: AuthRateLimit::default(),
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:2222".into()
}
fn default_hostkeys() -> Vec<PathBuf> {
    vec![PathBuf::from("ssh_host_ed25519_key")]
}
fn default_server_version() -> String {
    format!("containerssh_{}", env!("CARGO_PKG_VERSION"))
}
fn default_login_grace_time() -> Duration {
    Duration::from_secs(120)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(0)
}
fn default_keepalive() -> Duration {
    Duration::from_secs(30)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    1000
}

impl SshConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "ssh.listen: {:?} is not an address:port such as 0.0.0.0:2222",
                self.listen
            ));
        }
        if self.hostkeys.is_empty() {
            problems.push("ssh.hostkeys: at least one host key file is needed".into());
        }
        if self.server_version.is_empty()
            || self
                .server_version
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '-')
        {
            problems.push(format!(
                "ssh.serverVersion: {:?} must be non-empty, printable, without spaces or '-'",
                self.server_version
            ));
        }
        if self.login_grace_time.is_zero() {
            problems.push("ssh.loginGraceTime: must be above zero".into());
        }
        if self.max_unauthenticated == 0 {
            problems.push("ssh.maxUnauthenticated: must be at least 1".into());
        }
        if self.auth_rate_limit.window.is_zero() {
            problems.push("ssh.authRateLimit.window: must be above zero".into());
        }
        if self.max_connections == 0 {
            problems.push("ssh.maxConnections: must be at least 1".into());
        }
        problems
    }
}
