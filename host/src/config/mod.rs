//! The gateway's configuration: one YAML (or JSON) file with ContainerSSH's key names where the
//! feature exists. Loading collects every problem (unknown keys with their path, type errors,
//! semantic checks) so that `containerssh validate` can print them all at once.
mod audit;
mod compat;
pub(crate) mod duration;
mod load;
mod merge;
mod pool;
mod ssh;
mod unused_keys;
mod workload;

pub use audit::*;
// Each backend keeps its own section's types; they are part of the file's format.
pub use crate::backend::docker::config::*;
pub use crate::backend::kubernetes::config::*;
pub use crate::backend::sshproxy::config::SshProxyConfig;
pub use crate::backend::BackendName;
pub use load::{
    deserialize_strict, from_connection_value, from_value, load_file, parse_str, ConfigError,
};
pub use merge::{merge_answer, Merged};
pub use pool::{PoolSettings, MAX_POOL_SIZE};
pub use ssh::*;
pub use unused_keys::UnusedKeys;
pub use workload::*;

use serde::{Deserialize, Serialize};

use crate::plugin::PluginSettings;

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub ssh: SshConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// The authentication plugin (required unless `oauth2` is the only login). ContainerSSH's
    /// webhook forms of `auth:` are translated into the built-in webhook-auth plugin.
    pub auth: Option<PluginSettings>,
    /// Login with GitHub or an OpenID Connect provider (keyboard-interactive); ContainerSSH's
    /// `auth.keyboardInteractive.oauth2` block is moved here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<crate::oauth2::OAuth2Config>,
    /// Kerberos logins: passwords checked with the KDC, `gssapi-with-mic`; ContainerSSH's
    /// `auth.password.kerberos` / `auth.gssapi.kerberos` blocks are moved here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kerberos: Option<crate::kerberos::KerberosConfig>,
    /// A configuration plugin asked once per connection after authentication for settings of
    /// that connection. ContainerSSH's `configserver: {url: ...}` becomes built-in webhook-config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configserver: Option<PluginSettings>,
    /// How a config server's answer is merged: `explicit` (every value given overrides,
    /// false/0/"" included) or `nonzero` (ContainerSSH's way: zero values are ignored).
    #[serde(default)]
    pub config_merge: MergeMode,
    /// ContainerSSH's `security` section: which SSH requests are allowed. Enforced by the
    /// request filter (built-in security-policy plugin unless `filter` names another).
    #[serde(default = "empty_object")]
    pub security: serde_json::Value,
    /// A custom request-filter plugin instead of the built-in security-policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<PluginSettings>,
    /// Names this gateway's containers and pods (label `containerssh.instance`), so that it
    /// removes what an earlier run of itself left and nothing of other gateways. Default:
    /// `<hostname>_<ssh.listen>`.
    #[serde(default)]
    pub instance_id: String,
    /// Where precompiled plugins are cached; unset picks a default, "" disables the cache.
    #[serde(default)]
    pub plugin_cache_dir: Option<String>,
    /// Which backend runs the sessions: `docker`, `kubernetes` or `sshproxy` (see
    /// `backend::registry`).
    #[serde(default)]
    pub backend: BackendName,
    #[serde(default)]
    pub docker: DockerConfig,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    /// ContainerSSH's SSH proxy backend: connections passed on to another SSH server.
    #[serde(default)]
    pub sshproxy: SshProxyConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub health: HealthConfig,
    /// Country codes of client addresses (ContainerSSH's `geoip`: `dummy` or `maxmind`).
    #[serde(default)]
    pub geoip: crate::observe::geoip::GeoIpConfig,
}

/// Prometheus endpoint (ContainerSSH's `metrics` keys, its HTTP server's TLS settings included).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsConfig {
    #[serde(default)]
    pub enable: bool,
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
    #[serde(default = "default_metrics_path")]
    pub path: String,
    /// HTTPS: the server certificate (chain), PEM text or a file path. Needs `key`.
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub cert: Option<String>,
    /// The certificate's private key, PEM text or a file path.
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<String>,
    /// Mutual TLS: clients must present a certificate this CA (PEM text or a file) signed.
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub clientcacert: Option<String>,
    /// Lowest TLS version, "1.2" or "1.3" (the default).
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_version: Option<String>,
    /// Key exchange groups (ContainerSSH's names), a list or "a:b". Empty: all supported.
    #[serde(
        default,
        deserialize_with = "crate::plugin::tls::list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub curves: Vec<String>,
    /// Cipher suites (IANA, OpenSSL or GnuTLS names), a list or "a:b". Empty: all supported.
    #[serde(
        default,
        deserialize_with = "crate::plugin::tls::list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cipher: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enable: false,
            listen: default_metrics_listen(),
            path: default_metrics_path(),
            cert: None,
            key: None,
            clientcacert: None,
            tls_version: None,
            curves: Vec::new(),
            cipher: Vec::new(),
        }
    }
}

impl MetricsConfig {
    /// The endpoint's TLS settings.
    pub fn tls(&self) -> crate::observe::ServerTls {
        crate::observe::ServerTls {
            cert: self.cert.clone(),
            key: self.key.clone(),
            clientcacert: self.clientcacert.clone(),
            tls_version: self.tls_version.clone(),
            curves: self.curves.clone(),
            cipher: self.cipher.clone(),
        }
    }
}

/// A string setting where ContainerSSH's zero value `""` (and `null`) means unset.
fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.trim().is_empty()))
}

fn default_metrics_listen() -> String {
    "0.0.0.0:9100".into()
}
fn default_metrics_path() -> String {
    "/metrics".into()
}

/// Health check endpoint: 200 while serving, 503 while shutting down. Its TLS keys mean what
/// `metrics`'s do; `client` is how `--healthcheck` asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthConfig {
    #[serde(default)]
    pub enable: bool,
    #[serde(default = "default_health_listen")]
    pub listen: String,
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub cert: Option<String>,
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<String>,
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub clientcacert: Option<String>,
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_version: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::plugin::tls::list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub curves: Vec<String>,
    #[serde(
        default,
        deserialize_with = "crate::plugin::tls::list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cipher: Vec<String>,
    /// ContainerSSH's `health.client`: how `--healthcheck` asks the endpoint.
    #[serde(default)]
    pub client: HealthClientConfig,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enable: false,
            listen: default_health_listen(),
            cert: None,
            key: None,
            clientcacert: None,
            tls_version: None,
            curves: Vec::new(),
            cipher: Vec::new(),
            client: HealthClientConfig::default(),
        }
    }
}

impl HealthConfig {
    /// The endpoint's TLS settings.
    pub fn tls(&self) -> crate::observe::ServerTls {
        crate::observe::ServerTls {
            cert: self.cert.clone(),
            key: self.key.clone(),
            clientcacert: self.clientcacert.clone(),
            tls_version: self.tls_version.clone(),
            curves: self.curves.clone(),
            cipher: self.cipher.clone(),
        }
    }
}

/// `health.client` (ContainerSSH's HTTP client settings): what `--healthcheck` asks and how.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthClientConfig {
    /// The URL to ask. Unset, or ContainerSSH's default `http://127.0.0.1:7000/`: `/health`
    /// on `health.listen`, over HTTPS when `health.cert` is set.
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    /// How long the check may take; `0` (unset) is 5 s.
    #[serde(
        default,
        with = "duration",
        skip_serializing_if = "std::time::Duration::is_zero"
    )]
    pub timeout: std::time::Duration,
    /// CA of the endpoint's certificate (PEM text or a file). Unset: the endpoint must present
    /// exactly `health.cert` (with a `url`: the system's trusted CAs).
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub cacert: Option<String>,
    /// Client certificate (and `key`) for an endpoint that asks for one (`health.clientcacert`).
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub cert: Option<String>,
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<String>,
    /// Lowest TLS version of the check ("1.2", the default here, or "1.3").
    #[serde(
        default,
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_version: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::plugin::tls::list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub curves: Vec<String>,
    #[serde(
        default,
        deserialize_with = "crate::plugin::tls::list_or_colon_string",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cipher: Vec<String>,
}

fn default_health_listen() -> String {
    "0.0.0.0:7000".into()
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMode {
    Explicit,
    #[default]
    Nonzero,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogConfig {
    /// trace, debug, info, warning (warn), error, ContainerSSH's other syslog names (notice,
    /// crit, alert, emerg, ...) or its numbers 0 (emergency) to 7 (debug). `RUST_LOG`
    /// overrides it.
    #[serde(default = "default_log_level", deserialize_with = "log_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// `stdout` (the process's standard error, as before), `file` or `syslog`.
    #[serde(default)]
    pub destination: LogDestination,
    /// With `destination: file`: appended to, created with mode 0640.
    #[serde(default = "default_log_file")]
    pub file: std::path::PathBuf,
    /// With `destination: syslog`.
    #[serde(default)]
    pub syslog: SyslogConfig,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::default(),
            destination: LogDestination::default(),
            file: default_log_file(),
            syslog: SyslogConfig::default(),
        }
    }
}

/// Where log lines go (ContainerSSH's `log.destination`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogDestination {
    /// Standard error (ContainerSSH's name for the console destination).
    #[default]
    Stdout,
    File,
    Syslog,
}

/// ContainerSSH's `log.syslog`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyslogConfig {
    /// A Unix datagram socket (`/dev/log`) or `host:port` for UDP.
    #[serde(default = "default_syslog_destination")]
    pub destination: String,
    /// `kern`, `user`, `mail`, `daemon`, `auth`, `syslog`, `lpr`, `news`, `uucp`, `cron`,
    /// `authpriv`, `ftp`, `local0` to `local7`.
    #[serde(default = "default_syslog_facility")]
    pub facility: String,
    #[serde(default = "default_syslog_tag")]
    pub tag: String,
    /// Add the process id to the tag (`tag[pid]`).
    #[serde(default)]
    pub pid: bool,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        Self {
            destination: default_syslog_destination(),
            facility: default_syslog_facility(),
            tag: default_syslog_tag(),
            pid: false,
        }
    }
}

fn default_log_file() -> std::path::PathBuf {
    "/var/log/containerssh/containerssh.log".into()
}
fn default_syslog_destination() -> String {
    "/dev/log".into()
}
fn default_syslog_facility() -> String {
    "auth".into()
}
fn default_syslog_tag() -> String {
    "ContainerSSH".into()
}

fn default_log_level() -> String {
    "info".into()
}

/// `log.level` as a name or, as ContainerSSH takes it, a syslog severity number (kept as its
/// digits; `Config::validate` checks the range).
fn log_level<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Level {
        Number(i64),
        Name(String),
    }
    match Level::deserialize(d) {
        Ok(Level::Number(n)) => Ok(n.to_string()),
        Ok(Level::Name(name)) => Ok(name),
        Err(_) => Err(serde::de::Error::custom(
            "expected a level name (debug, info, notice, warning, error, ...) or a number from 0 (emergency) to 7 (debug)",
        )),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// How long a connection may take to log in: `ssh.loginGraceTime`, or an OAuth2 login's
    /// whole time (`oauth2.authTimeout`, the user's time in the browser) if that is longer.
    pub fn login_deadline(&self) -> std::time::Duration {
        let oauth2 = self
            .oauth2
            .as_ref()
            .map(|o| o.auth_timeout + std::time::Duration::from_secs(10))
            .unwrap_or_default();
        self.ssh.login_grace_time.max(oauth2)
    }

    /// Semantic checks that serde cannot express. Every problem is returned, none is fatal here.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.auth {
            None if self.oauth2.is_none() && self.kerberos.is_none() => problems.push(
                "auth: an authentication plugin (auth.plugin), an OAuth2 login (oauth2) or Kerberos (kerberos) is required"
                    .into(),
            ),
            None => {}
            Some(auth) => problems.extend(auth.validate().into_iter().map(|p| format!("auth.{p}"))),
        }
        if let Some(oauth2) = &self.oauth2 {
            problems.extend(oauth2.validate().into_iter().map(|p| format!("oauth2.{p}")));
        }
        if let Some(kerberos) = &self.kerberos {
            problems.extend(
                kerberos
                    .validate()
                    .into_iter()
                    .map(|p| format!("kerberos.{p}")),
            );
        }
        if let Some(server) = &self.configserver {
            problems.extend(
                server
                    .validate()
                    .into_iter()
                    .map(|p| format!("configserver.{p}")),
            );
        }
        if let Some(filter) = &self.filter {
            problems.extend(filter.validate().into_iter().map(|p| format!("filter.{p}")));
        }
        problems.extend(self.geoip.validate());
        if crate::logging::filter_level(&self.log.level).is_none() {
            problems.push(format!(
                "log.level: unknown level {:?} (trace, debug, info, notice, warning, error, critical, alert, emergency, or a syslog severity from 0 = emergency to 7 = debug)",
                self.log.level
            ));
        }
        if self.log.destination == LogDestination::Syslog {
            if crate::logging::facility_code(&self.log.syslog.facility).is_none() {
                problems.push(format!(
                    "log.syslog.facility: unknown facility {:?} (auth, authpriv, daemon, user, local0 to local7, ...)",
                    self.log.syslog.facility
                ));
            }
            let d = &self.log.syslog.destination;
            if crate::logging::syslog_target(d).is_none() {
                problems.push(format!(
                    "log.syslog.destination: {d:?} is neither a socket path (/dev/log) nor an address:port"
                ));
            }
        }
        if self.metrics.enable {
            if self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
                problems.push(format!(
                    "metrics.listen: {:?} is not an address:port",
                    self.metrics.listen
                ));
            }
            if !self.metrics.path.starts_with('/') {
                problems.push("metrics.path: must start with /".into());
            }
        }
        if self.health.enable && self.health.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "health.listen: {:?} is not an address:port",
                self.health.listen
            ));
        }
        problems.extend(self.validate_observability_tls());
        problems.extend(self.audit.validate());
        problems.extend(self.ssh.validate());
        problems.extend(self.validate_connection());
        problems
    }

    /// The TLS settings of the metrics and health endpoints (their files are read), and that
    /// endpoints sharing one address share them too.
    fn validate_observability_tls(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let metrics = self.metrics.tls();
        let health = self.health.tls();
        // An endpoint that is off reads no files, but half a certificate is a mistake anyway.
        if self.metrics.enable {
            problems.extend(
                metrics
                    .validate()
                    .into_iter()
                    .map(|p| format!("metrics.{p}")),
            );
        } else if let Some(p) = metrics.pairing_problem() {
            problems.push(format!("metrics.{p}"));
        }
        if !self.health.enable {
            problems.extend(health.pairing_problem().map(|p| format!("health.{p}")));
        } else {
            problems.extend(health.validate().into_iter().map(|p| format!("health.{p}")));
            if self.metrics.enable && self.metrics.listen == self.health.listen && metrics != health
            {
                problems.push(
                    "health: served on metrics.listen, so its cert, key, clientcacert, tlsVersion, curves and cipher must be those of metrics".into(),
                );
            }
            problems.extend(
                crate::observe::probe::validate(&self.health)
                    .into_iter()
                    .map(|p| format!("health.client.{p}")),
            );
        }
        problems
    }

    /// The checks of the sections a config server may change for one connection (`backend`,
    /// the backend's own section, `security`); they read no files.
    pub fn validate_connection(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.security.is_object() {
            problems.push("security: must be a map".into());
        }
        problems.extend((self.backend.kind().validate)(self));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, String> {
        parse_str(
            &format!("auth:\n  plugin: builtin:static-users\n{yaml}"),
            false,
        )
        .map_err(|e| e.problems.join("; "))
    }

    #[test]
    fn log_levels_may_be_syslog_numbers() {
        for (text, level) in [("7", "7"), ("'6'", "6"), ("0", "0"), ("crit", "crit")] {
            let config = parse(&format!("log:\n  level: {text}\n")).unwrap();
            assert_eq!(config.log.level, level);
        }
        for bad in ["8", "-1", "'12'", "loud", "[7]", "7.5"] {
            let e = parse(&format!("log:\n  level: {bad}\n")).unwrap_err();
            assert!(e.starts_with("log.level: "), "{bad}: {e}");
        }
    }

    #[test]
    fn metrics_and_health_tls_keys_are_read_and_checked() {
        // ContainerSSH's zero values (a dump) mean HTTP.
        let config = parse(
            "metrics:\n  enable: true\n  cert: ''\n  key: ''\n  clientcacert: ''\n  tlsVersion: ''\n  curves: []\n  cipher: null\n\
             health:\n  enable: true\n  client:\n    url: http://127.0.0.1:7000/\n    timeout: 2s\n    cacert: ''\n    allowRedirects: false\n",
        )
        .unwrap();
        assert!(!config.metrics.tls().enabled());
        assert!(!config.health.tls().enabled());
        assert_eq!(
            config.health.client.timeout,
            std::time::Duration::from_secs(2)
        );

        let e = parse("metrics:\n  enable: true\n  cert: /nonexistent/metrics.pem\n").unwrap_err();
        assert!(e.starts_with("metrics.cert: "), "{e}");
        let e = parse("health:\n  enable: true\n  key: /nonexistent/health-key.pem\n").unwrap_err();
        assert!(e.starts_with("health.key: "), "{e}");
        let e = parse(
            "metrics:\n  enable: true\n  cert: /c\n  key: /k\n  curves: x25519:brainpoolP256r1\n  cipher: [TLS_RSA_WITH_RC4_128_SHA]\n  tlsVersion: '1.0'\n",
        )
        .unwrap_err();
        for key in [
            "metrics.cert: cannot read /c",
            "metrics.cipher: \"TLS_RSA_WITH_RC4_128_SHA\"",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = parse(
            "metrics:\n  enable: true\n  cert: /c\n  key: /k\n  curves: x25519:brainpoolP256r1\n",
        )
        .unwrap_err();
        assert!(e.contains("metrics.curves: \"brainpoolP256r1\""), "{e}");
        let e = parse("metrics:\n  enable: true\n  cert: /c\n  key: /k\n  tlsVersion: '1.0'\n")
            .unwrap_err();
        assert!(e.contains("metrics.tlsVersion: \"1.0\""), "{e}");
        let e = parse("health:\n  enable: true\n  client:\n    cert: /nonexistent/c.pem\n")
            .unwrap_err();
        assert!(e.starts_with("health.client.cert: "), "{e}");
        let e = parse("health:\n  enable: true\n  client:\n    nonsense: 1\n").unwrap_err();
        assert!(e.contains("health.client.nonsense: unknown key"), "{e}");
        // A disabled endpoint's files are not read, but half a certificate is still wrong.
        assert!(parse("metrics:\n  cert: /nonexistent/c.pem\n  key: /nonexistent/k.pem\n").is_ok());
        let e = parse("metrics:\n  cert: /nonexistent/metrics.pem\n").unwrap_err();
        assert!(e.starts_with("metrics.cert: "), "{e}");
    }

    #[test]
    fn endpoints_on_one_address_share_their_tls_settings() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let (c, k) = (cert_path.display(), key_path.display());
        let tls = format!("listen: 127.0.0.1:9100\n  cert: {c}\n  key: {k}");
        let config = parse(&format!(
            "metrics:\n  enable: true\n  {tls}\nhealth:\n  enable: true\n  {tls}\n"
        ))
        .unwrap();
        assert!(config.metrics.tls().enabled());
        assert_eq!(config.metrics.tls(), config.health.tls());
        let e = parse(&format!(
            "metrics:\n  enable: true\n  {tls}\nhealth:\n  enable: true\n  listen: 127.0.0.1:9100\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("health: served on metrics.listen"), "{e}");
        // The dump names the files.
        let dumped = serde_json::to_value(&config).unwrap();
        assert_eq!(dumped["metrics"]["cert"], c.to_string());
        assert!(dumped["health"].get("client").is_some());
    }
}
