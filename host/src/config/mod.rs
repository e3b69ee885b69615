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
    /// The authentication plugin (required). ContainerSSH's webhook forms of `auth:` are
    /// translated into the built-in webhook-auth plugin.
    pub auth: Option<PluginSettings>,
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
}

/// Prometheus endpoint (ContainerSSH's `metrics` keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsConfig {
    #[serde(default)]
    pub enable: bool,
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
    #[serde(default = "default_metrics_path")]
    pub path: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enable: false,
            listen: default_metrics_listen(),
            path: default_metrics_path(),
        }
    }
}

fn default_metrics_listen() -> String {
    "0.0.0.0:9100".into()
}
fn default_metrics_path() -> String {
    "/metrics".into()
}

/// Health check endpoint: 200 while serving, 503 while shutting down.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthConfig {
    #[serde(default)]
    pub enable: bool,
    #[serde(default = "default_health_listen")]
    pub listen: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enable: false,
            listen: default_health_listen(),
        }
    }
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
    /// trace, debug, info, warning (warn), error. `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// Semantic checks that serde cannot express. Every problem is returned, none is fatal here.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.auth {
            None => {
                problems.push("auth: an authentication plugin is required (auth.plugin)".into())
            }
            Some(auth) => problems.extend(auth.validate().into_iter().map(|p| format!("auth.{p}"))),
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
        if !matches!(
            self.log.level.as_str(),
            "trace"
                | "debug"
                | "info"
                | "notice"
                | "warn"
                | "warning"
                | "error"
                | "critical"
                | "alert"
                | "emergency"
        ) {
            problems.push(format!(
                "log.level: unknown level {:?} (trace, debug, info, notice, warning, error, critical, alert, emergency)",
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
        problems.extend(self.audit.validate());
        problems.extend(self.ssh.validate());
        problems.extend(self.validate_connection());
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
