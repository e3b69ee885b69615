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
    #[serde(default = "default_login_grace_time", with = "crate::config::duration")]
    pub login_grace_time: Duration,
    /// Close a connection with no traffic for this long (0 disables).
    #[serde(default = "default_idle_timeout", with = "crate::config::duration")]
    pub idle_timeout: Duration,
    /// Send an SSH keepalive after this much silence from the client.
    #[serde(default = "default_keepalive", with = "crate::config::duration")]
    pub keepalive_interval: Duration,
    /// Unanswered keepalives after which the connection is closed (ContainerSSH's
    /// `clientAliveCountMax`).
    #[serde(default = "default_keepalive_count_max")]
    pub keepalive_count_max: usize,
    /// On SIGTERM, how long running sessions may continue before their containers are removed.
    #[serde(default = "default_drain_timeout", with = "crate::config::duration")]
    pub shutdown_timeout: Duration,
    /// Maximum number of connections at once (authenticated or not).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Maximum number of connections that have not authenticated yet (like MaxStartups);
    /// further connections are closed at once.
    #[serde(default = "default_max_unauthenticated")]
    pub max_unauthenticated: usize,
    /// Of those, how many may come from one source (an IPv4 address or an IPv6 /64), like
    /// OpenSSH's PerSourceMaxStartups, so that one source cannot take every slot. 0: no limit.
    #[serde(default = "default_max_unauthenticated_per_source")]
    pub max_unauthenticated_per_source: usize,
    /// Failed-login rate limits.
    #[serde(default)]
    pub auth_rate_limit: AuthRateLimit,
    /// PROXY protocol headers from trusted load balancers.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// Ciphers offered, in order of preference (ContainerSSH's `ciphers`). Unset: [`CIPHERS`]'s defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphers: Option<Vec<String>>,
    /// Key exchange algorithms offered (ContainerSSH's `kex`). Unset: [`KEX`]'s defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kex: Option<Vec<String>>,
    /// MACs offered (ContainerSSH's `macs`). Unset: [`MACS`]'s defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs: Option<Vec<String>>,
    /// Host key algorithms offered (ContainerSSH's `hostKeyAlgos`). Unset: [`HOST_KEY_ALGOS`]'s defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_algos: Option<Vec<String>>,
}

/// One SSH algorithm name the gateway knows: whether it is offered when the list is not
/// configured, or why it is refused if it is not available at all.
pub struct Algo {
    pub name: &'static str,
    pub status: AlgoStatus,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AlgoStatus {
    /// Offered by default.
    Offered,
    /// Available when configured, not offered by default.
    Optional,
    /// Known, never offered; the text says why.
    Refused(&'static str),
}

const fn algo(name: &'static str, status: AlgoStatus) -> Algo {
    Algo { name, status }
}

use AlgoStatus::{Offered, Optional, Refused};

const SHA1: &str = "it relies on SHA-1";

/// Key exchange algorithms, in the default order of preference.
pub const KEX: &[Algo] = &[
    algo("mlkem768x25519-sha256", Offered),
    algo("curve25519-sha256", Offered),
    algo("curve25519-sha256@libssh.org", Offered),
    algo("diffie-hellman-group16-sha512", Offered),
    algo("diffie-hellman-group18-sha512", Offered),
    algo("diffie-hellman-group14-sha256", Optional),
    algo("diffie-hellman-group15-sha512", Optional),
    algo("diffie-hellman-group17-sha512", Optional),
    algo("ecdh-sha2-nistp256", Optional),
    algo("ecdh-sha2-nistp384", Optional),
    algo("ecdh-sha2-nistp521", Optional),
    algo("diffie-hellman-group1-sha1", Refused(SHA1)),
    algo("diffie-hellman-group14-sha1", Refused(SHA1)),
    algo("diffie-hellman-group-exchange-sha1", Refused(SHA1)),
    algo(
        "diffie-hellman-group-exchange-sha256",
        Refused(
            "group exchange is not implemented; diffie-hellman-group16-sha512 is the fixed-group equivalent",
        ),
    ),
    algo(
        "sntrup761x25519-sha512",
        Refused("it is not implemented; mlkem768x25519-sha256 is the post-quantum choice"),
    ),
    algo(
        "sntrup761x25519-sha512@openssh.com",
        Refused("it is not implemented; mlkem768x25519-sha256 is the post-quantum choice"),
    ),
    algo(
        "ext-info-s",
        Refused("the gateway always announces it itself; leave it out"),
    ),
    algo(
        "kex-strict-s-v00@openssh.com",
        Refused("the gateway always announces it itself; leave it out"),
    ),
];

/// Ciphers, in the default order of preference.
pub const CIPHERS: &[Algo] = &[
    algo("chacha20-poly1305@openssh.com", Offered),
    algo("aes256-gcm@openssh.com", Offered),
    algo("aes128-gcm@openssh.com", Offered),
    algo("aes256-ctr", Offered),
    algo("aes192-ctr", Offered),
    algo("aes128-ctr", Offered),
    algo("aes128-cbc", Refused("CBC mode is not offered")),
    algo("aes192-cbc", Refused("CBC mode is not offered")),
    algo("aes256-cbc", Refused("CBC mode is not offered")),
    algo("3des-cbc", Refused("3DES is broken")),
    algo("tripledescbcID", Refused("3DES is broken")),
    algo("arcfour", Refused("RC4 is broken")),
    algo("arcfour128", Refused("RC4 is broken")),
    algo("arcfour256", Refused("RC4 is broken")),
    algo("none", Refused("it does not encrypt")),
];

/// MACs, in the default order of preference. Encrypt-then-MAC only by default: the older
/// MAC-then-encrypt forms are what ssh-audit warns about.
pub const MACS: &[Algo] = &[
    algo("hmac-sha2-512-etm@openssh.com", Offered),
    algo("hmac-sha2-256-etm@openssh.com", Offered),
    algo("hmac-sha2-512", Optional),
    algo("hmac-sha2-256", Optional),
    algo("hmac-sha1", Refused(SHA1)),
    algo("hmac-sha1-96", Refused(SHA1)),
    algo("hmac-sha1-etm@openssh.com", Refused(SHA1)),
    algo("hmac-md5", Refused("MD5 is broken")),
    algo("none", Refused("it does not authenticate")),
];

/// Host key (signature) algorithms, in the default order of preference. Only those that
/// fit a configured host key are announced.
pub const HOST_KEY_ALGOS: &[Algo] = &[
    algo("ssh-ed25519", Offered),
    algo("ecdsa-sha2-nistp256", Offered),
    algo("ecdsa-sha2-nistp384", Offered),
    algo("ecdsa-sha2-nistp521", Offered),
    algo("rsa-sha2-512", Offered),
    algo("rsa-sha2-256", Offered),
    algo(
        "ssh-rsa",
        Refused("it signs with SHA-1; use rsa-sha2-512 or rsa-sha2-256 with the same RSA key"),
    ),
    algo("ssh-dss", Refused("DSA keys are not supported")),
    algo(
        "ssh-rsa-cert-v01@openssh.com",
        Refused("host certificates are not supported"),
    ),
    algo(
        "ssh-dss-cert-v01@openssh.com",
        Refused("host certificates are not supported"),
    ),
    algo(
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        Refused("host certificates are not supported"),
    ),
    algo(
        "ecdsa-sha2-nistp384-cert-v01@openssh.com",
        Refused("host certificates are not supported"),
    ),
    algo(
        "ecdsa-sha2-nistp521-cert-v01@openssh.com",
        Refused("host certificates are not supported"),
    ),
    algo(
        "ssh-ed25519-cert-v01@openssh.com",
        Refused("host certificates are not supported"),
    ),
];

/// The names of `table` offered by default.
pub fn default_names(table: &[Algo]) -> Vec<String> {
    table
        .iter()
        .filter(|a| a.status == Offered)
        .map(|a| a.name.to_string())
        .collect()
}

/// Problems with one configured algorithm list, each with its key path (`ssh.macs[1]`).
fn check_algorithms(
    key: &str,
    what: &str,
    list: &Option<Vec<String>>,
    table: &[Algo],
) -> Vec<String> {
    let Some(list) = list else {
        return Vec::new();
    };
    if list.is_empty() {
        return vec![format!(
            "ssh.{key}: at least one {what} is needed (leave the key out for the defaults)"
        )];
    }
    let usable = || {
        table
            .iter()
            .filter(|a| !matches!(a.status, Refused(_)))
            .map(|a| a.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut problems = Vec::new();
    for (i, name) in list.iter().enumerate() {
        match table.iter().find(|a| a.name == name) {
            Some(Algo {
                status: Refused(why),
                ..
            }) => problems.push(format!(
                "ssh.{key}[{i}]: {name:?} is not offered by this gateway: {why}"
            )),
            Some(_) if list[..i].contains(name) => {
                problems.push(format!("ssh.{key}[{i}]: {name:?} is listed twice"))
            }
            Some(_) => {}
            None => problems.push(format!(
                "ssh.{key}[{i}]: unknown {what} {name:?} (supported: {})",
                usable()
            )),
        }
    }
    problems
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
    #[serde(default = "default_rate_window", with = "crate::config::duration")]
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
fn default_max_unauthenticated_per_source() -> usize {
    10
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
            keepalive_count_max: default_keepalive_count_max(),
            shutdown_timeout: default_drain_timeout(),
            max_connections: default_max_connections(),
            max_unauthenticated: default_max_unauthenticated(),
            max_unauthenticated_per_source: default_max_unauthenticated_per_source(),
            auth_rate_limit: AuthRateLimit::default(),
            proxy_protocol: ProxyProtocol::default(),
            ciphers: None,
            kex: None,
            macs: None,
            host_key_algos: None,
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
fn default_keepalive_count_max() -> usize {
    3
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
        if self.keepalive_count_max == 0 {
            problems.push("ssh.keepaliveCountMax: must be at least 1".into());
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
        problems.extend(check_algorithms(
            "ciphers",
            "cipher",
            &self.ciphers,
            CIPHERS,
        ));
        problems.extend(check_algorithms(
            "kex",
            "key exchange algorithm",
            &self.kex,
            KEX,
        ));
        problems.extend(check_algorithms("macs", "MAC", &self.macs, MACS));
        problems.extend(check_algorithms(
            "hostKeyAlgos",
            "host key algorithm",
            &self.host_key_algos,
            HOST_KEY_ALGOS,
        ));
        problems.extend(self.check_host_keys());
        problems
    }

    /// With `hostKeyAlgos` set, at least one host key must fit one of them. A missing key file
    /// becomes a new ed25519 key; an unreadable one is left for the start to report.
    fn check_host_keys(&self) -> Option<String> {
        use russh::keys::ssh_key::Algorithm;
        let algos: Vec<Algorithm> = self
            .host_key_algos
            .as_ref()?
            .iter()
            .filter_map(|n| Algorithm::new(n).ok())
            .collect();
        if algos.is_empty() {
            return None; // already reported
        }
        let mut kinds = Vec::new();
        for path in &self.hostkeys {
            let kind = if path.exists() {
                russh::keys::load_secret_key(path, None).ok()?.algorithm()
            } else {
                Algorithm::Ed25519
            };
            let rsa = matches!(kind, Algorithm::Rsa { .. });
            if algos.iter().any(|a| match a {
                Algorithm::Rsa { .. } => rsa,
                other => *other == kind,
            }) {
                return None;
            }
            kinds.push(kind.to_string());
        }
        Some(format!(
            "ssh.hostKeyAlgos: no algorithm fits a host key (ssh.hostkeys are {})",
            kinds.join(", ")
        ))
    }
}

/// `ssh.proxyProtocol`: connections from these networks must start with a PROXY header (v1 or
/// v2), whose client address is then the connection's; everyone else connects directly, and a
/// PROXY header from them is refused. Empty (the default): off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyProtocol {
    /// Addresses or networks of the proxies, e.g. `10.0.0.5/32`, `10.0.0.0/8`, `::1/128`.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a trusted proxy has to send its header.
    #[serde(
        default = "default_proxy_header_timeout",
        with = "crate::config::duration"
    )]
    pub header_timeout: Duration,
}

impl Default for ProxyProtocol {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header_timeout: default_proxy_header_timeout(),
        }
    }
}

fn default_proxy_header_timeout() -> Duration {
    Duration::from_secs(5)
}
