//! `docker:` section, with ContainerSSH's key names (`connection`, `execution.container`,
//! `execution.host`, `execution.mode`, `imagePullPolicy`, `timeouts`).
use std::collections::BTreeMap;
use std::time::Duration;

use bollard::models;
use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::config::{default_subsystems, ExecutionMode, UnusedKeys};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerConfig {
    #[serde(default)]
    pub connection: DockerConnection,
    #[serde(default)]
    pub execution: Execution,
    #[serde(default)]
    pub timeouts: DockerTimeouts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerConnection {
    /// `unix:///var/run/docker.sock` or `tcp://host:2376`. Defaults to `DOCKER_HOST`, then the local socket.
    #[serde(default = "default_docker_host")]
    pub host: String,
    /// CA certificate for a TCP engine with TLS: a PEM file path or PEM text.
    #[serde(default)]
    pub cacert: String,
    /// Client certificate (PEM file path or PEM text).
    #[serde(default)]
    pub cert: String,
    /// Client private key (PEM file path or PEM text).
    #[serde(default)]
    pub key: String,
    /// Start non-terminal programs through the gateway's helper instead of `docker exec`
    /// (`auto`: when the engine is on a local socket and the gateway is not in a container).
    #[serde(default)]
    pub direct_start: DirectStart,
    /// Where the gateway keeps each container's directory for direct start (default
    /// `/run/containerssh`, or `$TMPDIR/containerssh-UID` when not root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_dir: Option<String>,
}

/// `docker.connection.directStart`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectStart {
    #[default]
    Auto,
    On,
    Off,
}

impl Default for DockerConnection {
    fn default() -> Self {
        Self {
            host: default_docker_host(),
            cacert: String::new(),
            cert: String::new(),
            key: String::new(),
            direct_start: DirectStart::default(),
            runtime_dir: None,
        }
    }
}

fn default_docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    #[serde(default)]
    pub container: ContainerSettings,
    #[serde(default)]
    pub host: HostSettings,
    /// `connection`: one container per SSH connection, sessions run as execs in it.
    /// `session`: one container per session channel.
    #[serde(default)]
    pub mode: ExecutionMode,
    /// The container's main process; it only keeps the container alive.
    #[serde(default = "default_idle_command")]
    pub idle_command: Vec<String>,
    /// The shell started for `shell` requests and used as `<shell> -c <command>` for exec.
    #[serde(default = "default_shell_command")]
    pub shell_command: Vec<String>,
    /// Subsystem name → program inside the container.
    #[serde(default = "default_subsystems")]
    pub subsystems: BTreeMap<String, String>,
    /// Refuse exec and subsystem requests (interactive shells only).
    #[serde(default)]
    pub disable_command: bool,
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// Credentials for pulling the image from its registry (Docker's `AuthConfig`).
    #[serde(default)]
    pub auth: Option<RegistryAuth>,
    /// Networks to connect the container to (Docker's `NetworkingConfig`: aliases, addresses).
    #[serde(default)]
    pub network: Option<models::NetworkingConfig>,
    /// The image platform to run (OCI's `Platform`), for engines that run several.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Authentication metadata name → environment variable of the container, or ContainerSSH's
    /// `true`: every entry under its own name (sensitive metadata is never exposed).
    #[serde(default)]
    pub expose_auth_metadata_as_env: MetadataEnv,
    /// Authentication metadata name → container label (`containerssh.*` is reserved).
    #[serde(default)]
    pub expose_auth_metadata_as_labels: BTreeMap<String, String>,
    /// Containers started ahead of logins from this (the file's) configuration.
    #[serde(default, skip_serializing_if = "crate::config::PoolSettings::is_off")]
    pub pool: crate::config::PoolSettings,
}

impl Default for Execution {
    fn default() -> Self {
        Self {
            container: ContainerSettings::default(),
            host: HostSettings::default(),
            mode: ExecutionMode::default(),
            idle_command: default_idle_command(),
            shell_command: default_shell_command(),
            subsystems: default_subsystems(),
            disable_command: false,
            image_pull_policy: PullPolicy::default(),
            auth: None,
            network: None,
            platform: None,
            expose_auth_metadata_as_env: MetadataEnv::default(),
            expose_auth_metadata_as_labels: BTreeMap::new(),
            pool: crate::config::PoolSettings::default(),
        }
    }
}

fn default_idle_command() -> Vec<String> {
    // Sleeps in short steps so that a container whose gateway died stops by itself soon after
    // the reaper or `docker rm -f` removes it; the loop is cheap (one wake-up an hour).
    vec![
        "/bin/sh".into(),
        "-c".into(),
        "while :; do sleep 3600; done".into(),
    ]
}
fn default_shell_command() -> Vec<String> {
    vec!["/bin/sh".into()]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    #[serde(alias = "always")]
    Always,
    #[default]
    #[serde(alias = "ifNotPresent", alias = "if-not-present")]
    IfNotPresent,
    #[serde(alias = "never")]
    Never,
}

/// Registry credentials, as Docker's `AuthConfig` (and ContainerSSH's `docker.execution.auth`)
/// spell them. Never logged: `Debug` shows only the user and the server.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegistryAuth(pub bollard::auth::DockerCredentials);

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.0.username)
            .field("serveraddress", &self.0.serveraddress)
            .finish_non_exhaustive()
    }
}

/// OCI's image platform, as ContainerSSH takes it (`docker.execution.platform`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, rename = "os.version", alias = "osversion")]
    pub os_version: String,
    #[serde(default, rename = "os.features", alias = "osfeatures")]
    pub os_features: Vec<String>,
    #[serde(default)]
    pub variant: String,
}

impl Platform {
    /// Docker's form, `os/architecture[/variant]`; empty when neither is set.
    pub fn docker_form(&self) -> String {
        if self.os.is_empty() && self.architecture.is_empty() {
            return String::new();
        }
        let os = if self.os.is_empty() {
            "linux"
        } else {
            &self.os
        };
        let mut form = format!("{os}/{}", self.architecture);
        if !self.variant.is_empty() {
            form.push('/');
            form.push_str(&self.variant);
        }
        form
    }
}

/// Docker's container `Config`, the subset that makes sense for a gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSettings {
    #[serde(default = "default_image")]
    pub image: String,
    /// "KEY=value" entries.
    #[serde(default)]
    pub env: Vec<String>,
    /// Replaces the image's entrypoint when not empty (as in Docker: `idleCommand` is then its
    /// arguments); empty keeps the image's.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// User (name or uid[:gid]) that every process runs as.
    #[serde(default)]
    pub user: String,
    #[serde(default, alias = "workingdir", alias = "workingDir")]
    pub working_dir: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub domainname: String,
    /// Extra labels; the gateway's own `containerssh.*` labels cannot be overridden.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        Self {
            image: default_image(),
            env: Vec::new(),
            entrypoint: Vec::new(),
            user: String::new(),
            working_dir: String::new(),
            hostname: String::new(),
            domainname: String::new(),
            labels: BTreeMap::new(),
        }
    }
}

fn default_image() -> String {
    "containerssh/containerssh-guest-image".into()
}

/// Docker's `HostConfig`: the hardening options of the guide. The guide also shows the resource
/// options nested under `resources:`; the loader lifts that block into this one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSettings {
    #[serde(default, alias = "usernsMode")]
    pub usernsmode: Option<String>,
    #[serde(default, alias = "storageOpt")]
    pub storageopt: Option<BTreeMap<String, StringOrNumber>>,
    /// Mount point → tmpfs options, e.g. `/tmp: rw,noexec,nosuid,size=65536k`.
    #[serde(default)]
    pub tmpfs: Option<BTreeMap<String, String>>,
    #[serde(default, alias = "readonlyrootfs")]
    pub readonly_rootfs: Option<bool>,
    #[serde(default)]
    pub memory: Option<i64>,
    #[serde(default, alias = "memoryreservation")]
    pub memory_reservation: Option<i64>,
    #[serde(default, alias = "memoryswap")]
    pub memory_swap: Option<i64>,
    #[serde(default, alias = "memoryswappiness")]
    pub memory_swappiness: Option<i64>,
    #[serde(default, alias = "oomkilldisable")]
    pub oom_kill_disable: Option<bool>,
    #[serde(default, alias = "oomscoreadj")]
    pub oom_score_adj: Option<i64>,
    #[serde(default, alias = "cpusetcpus")]
    pub cpuset_cpus: Option<String>,
    #[serde(default, alias = "cpusetmems")]
    pub cpuset_mems: Option<String>,
    #[serde(default, alias = "cpuperiod")]
    pub cpu_period: Option<i64>,
    #[serde(default, alias = "cpuquota")]
    pub cpu_quota: Option<i64>,
    #[serde(default, alias = "cpurealtimeperiod")]
    pub cpu_realtime_period: Option<i64>,
    #[serde(default, alias = "cpurealtimeruntime", alias = "cpuRealtimeRuntime")]
    pub cpu_realtime_quota: Option<i64>,
    #[serde(default, alias = "cpushares")]
    pub cpu_shares: Option<i64>,
    /// Maximum number of processes. Unset means the gateway's default of 1024; -1 or 0 is unlimited.
    #[serde(default, alias = "pidslimit")]
    pub pids_limit: Option<i64>,
    #[serde(default, alias = "networkdisabled")]
    pub network_disabled: Option<bool>,
    /// e.g. `none`, `bridge`, `host` or a network name.
    #[serde(default, alias = "networkmode")]
    pub network_mode: Option<String>,
    /// Capabilities to keep. All others are dropped unless `capDrop` is set explicitly.
    #[serde(default, alias = "capadd")]
    pub cap_add: Option<Vec<String>>,
    /// Capabilities to drop; defaults to `["ALL"]`.
    #[serde(default, alias = "capdrop")]
    pub cap_drop: Option<Vec<String>>,
    /// Extra security options; `no-new-privileges` is always added unless `allowPrivilegeEscalation` is true.
    #[serde(default, alias = "securityopt")]
    pub security_opt: Option<Vec<String>>,
    #[serde(default)]
    pub allow_privilege_escalation: bool,
    /// Bind mounts / volumes in Docker's "src:dst[:opts]" form.
    #[serde(default)]
    pub binds: Option<Vec<String>>,
    #[serde(default, alias = "shmsize")]
    pub shm_size: Option<i64>,
    /// Run an init process (tini) as PID 1 that reaps zombies.
    #[serde(default)]
    pub init: Option<bool>,
    #[serde(default)]
    pub runtime: Option<String>,
    #[serde(default)]
    pub dns: Option<Vec<String>>,
    #[serde(default, alias = "extrahosts")]
    pub extra_hosts: Option<Vec<String>>,
    #[serde(default)]
    pub privileged: Option<bool>,
    // Docker's remaining HostConfig options, in Docker's own types (nested keys as Docker or
    // ContainerSSH's YAML write them: `Target` or `target`), passed to the engine as they are.
    /// Mounts in Docker's form; `/.containerssh` is the gateway's.
    #[serde(default)]
    pub mounts: Option<Vec<models::Mount>>,
    #[serde(default)]
    pub ulimits: Option<Vec<models::ResourcesUlimits>>,
    #[serde(default)]
    pub devices: Option<Vec<models::DeviceMapping>>,
    #[serde(default, alias = "devicecgrouprules")]
    pub device_cgroup_rules: Option<Vec<String>>,
    #[serde(default, alias = "devicerequests")]
    pub device_requests: Option<Vec<models::DeviceRequest>>,
    #[serde(default, alias = "blkioweight")]
    pub blkio_weight: Option<u16>,
    #[serde(default, alias = "blkioweightdevice")]
    pub blkio_weight_device: Option<Vec<models::ResourcesBlkioWeightDevice>>,
    #[serde(default, alias = "blkiodevicereadbps")]
    pub blkio_device_read_bps: Option<Vec<models::ThrottleDevice>>,
    #[serde(default, alias = "blkiodevicewritebps")]
    pub blkio_device_write_bps: Option<Vec<models::ThrottleDevice>>,
    #[serde(default, alias = "blkiodevicereadiops")]
    pub blkio_device_read_iops: Option<Vec<models::ThrottleDevice>>,
    #[serde(default, alias = "blkiodevicewriteiops")]
    pub blkio_device_write_iops: Option<Vec<models::ThrottleDevice>>,
    #[serde(default, alias = "nanocpus")]
    pub nano_cpus: Option<i64>,
    #[serde(default, alias = "cgroupparent")]
    pub cgroup_parent: Option<String>,
    #[serde(default)]
    pub cgroup: Option<String>,
    #[serde(default, alias = "cgroupnsmode")]
    pub cgroupns_mode: Option<models::HostConfigCgroupnsModeEnum>,
    #[serde(default, alias = "cpucount")]
    pub cpu_count: Option<i64>,
    #[serde(default, alias = "cpupercent")]
    pub cpu_percent: Option<i64>,
    #[serde(default, alias = "iomaximumiops")]
    pub io_maximum_iops: Option<i64>,
    #[serde(default, alias = "iomaximumbandwidth")]
    pub io_maximum_bandwidth: Option<i64>,
    #[serde(default, alias = "logconfig")]
    pub log_config: Option<models::HostConfigLogConfig>,
    #[serde(default, alias = "portbindings")]
    pub port_bindings: Option<models::PortMap>,
    #[serde(default, alias = "publishallports")]
    pub publish_all_ports: Option<bool>,
    #[serde(default, alias = "volumedriver")]
    pub volume_driver: Option<String>,
    #[serde(default, alias = "volumesfrom")]
    pub volumes_from: Option<Vec<String>>,
    #[serde(default)]
    pub links: Option<Vec<String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, alias = "dnsoptions")]
    pub dns_options: Option<Vec<String>>,
    #[serde(default, alias = "dnssearch")]
    pub dns_search: Option<Vec<String>>,
    #[serde(default, alias = "groupadd")]
    pub group_add: Option<Vec<String>>,
    #[serde(default, alias = "ipcmode")]
    pub ipc_mode: Option<String>,
    #[serde(default, alias = "pidmode")]
    pub pid_mode: Option<String>,
    #[serde(default, alias = "utsmode")]
    pub uts_mode: Option<String>,
    #[serde(default)]
    pub sysctls: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub isolation: Option<models::HostConfigIsolationEnum>,
    #[serde(default, alias = "maskedpaths")]
    pub masked_paths: Option<Vec<String>>,
    #[serde(default, alias = "readonlypaths")]
    pub readonly_paths: Option<Vec<String>>,
}

/// `storageopt: {size: 524288000}` is a number in the guide, a string in Docker's API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StringOrNumber {
    String(String),
    Number(i64),
}

impl std::fmt::Display for StringOrNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::String(s) => f.write_str(s),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

/// The default pids limit: a fork bomb stays inside its container.
pub const DEFAULT_PIDS_LIMIT: i64 = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerTimeouts {
    /// Creating and starting a container, including an image pull.
    #[serde(default = "default_container_start", with = "crate::config::duration")]
    pub container_start: Duration,
    /// Removing a container.
    #[serde(default = "default_container_stop", with = "crate::config::duration")]
    pub container_stop: Duration,
    /// Creating and starting a process inside the container.
    #[serde(default = "default_command_start", with = "crate::config::duration")]
    pub command_start: Duration,
    /// Delivering a signal.
    #[serde(default = "default_signal", with = "crate::config::duration")]
    pub signal: Duration,
    /// Resizing a terminal.
    #[serde(default = "default_signal", with = "crate::config::duration")]
    pub window: Duration,
}

impl Default for DockerTimeouts {
    fn default() -> Self {
        Self {
            container_start: default_container_start(),
            container_stop: default_container_stop(),
            command_start: default_command_start(),
            signal: default_signal(),
            window: default_signal(),
        }
    }
}

fn default_container_start() -> Duration {
    Duration::from_secs(60)
}
fn default_container_stop() -> Duration {
    Duration::from_secs(60)
}
fn default_command_start() -> Duration {
    Duration::from_secs(60)
}
fn default_signal() -> Duration {
    Duration::from_secs(60)
}

/// `docker.execution.exposeAuthMetadataAsEnv`: named entries (`{entry: VARIABLE}`, as on
/// Kubernetes), or ContainerSSH's switch: `true` puts every entry in the environment under its
/// own name (entries whose names are not variable names are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetadataEnv {
    Every(bool),
    Named(BTreeMap<String, String>),
}

impl Default for MetadataEnv {
    fn default() -> Self {
        MetadataEnv::Named(BTreeMap::new())
    }
}

impl MetadataEnv {
    /// `VARIABLE=value` for each entry of `metadata` (the non-sensitive ones) to expose.
    pub fn variables(&self, metadata: &[(String, String)]) -> Vec<String> {
        match self {
            MetadataEnv::Every(false) => Vec::new(),
            MetadataEnv::Every(true) => metadata
                .iter()
                .filter(|(key, _)| crate::config::is_env_name(key))
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
            MetadataEnv::Named(named) => named
                .iter()
                .filter_map(|(key, name)| {
                    let (_, value) = metadata.iter().find(|(k, _)| k == key)?;
                    Some(format!("{name}={value}"))
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, MetadataEnv::Every(false))
            || matches!(self, MetadataEnv::Named(n) if n.is_empty())
    }
}

impl DockerConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let execution = &self.execution;
        let named = match &execution.expose_auth_metadata_as_env {
            MetadataEnv::Named(named) => Some(named),
            MetadataEnv::Every(_) => None,
        };
        for (key, name) in named.into_iter().flatten() {
            if !crate::config::is_env_name(name) {
                problems.push(format!(
                    "docker.execution.exposeAuthMetadataAsEnv.{key}: {name:?} is not an environment variable name"
                ));
            }
        }
        for (key, label) in &execution.expose_auth_metadata_as_labels {
            if label.is_empty() || label.starts_with("containerssh.") {
                problems.push(format!(
                    "docker.execution.exposeAuthMetadataAsLabels.{key}: {label:?} is empty or a reserved containerssh.* label"
                ));
            }
        }
        let host = &self.connection.host;
        if !(host.starts_with("unix://")
            || host.starts_with("tcp://")
            || host.starts_with("https://"))
        {
            problems.push(format!(
                "docker.connection.host: {host:?} must start with unix://, tcp:// or https://"
            ));
        }
        let tls = [
            &self.connection.cacert,
            &self.connection.cert,
            &self.connection.key,
        ];
        let tls_set = tls.iter().filter(|v| !v.is_empty()).count();
        if tls_set != 0 && tls_set != 3 {
            problems.push(
                "docker.connection: cacert, cert and key must be set together for TLS".into(),
            );
        }
        if tls_set == 3 && host.starts_with("unix://") {
            problems.push("docker.connection: TLS certificates need a tcp:// host".into());
        }
        let exec = &self.execution;
        if exec.container.image.trim().is_empty() {
            problems.push("docker.execution.container.image: must not be empty".into());
        }
        for entry in &exec.container.env {
            if !entry.contains('=') {
                problems.push(format!(
                    "docker.execution.container.env: {entry:?} is not KEY=value"
                ));
            }
        }
        if exec.idle_command.is_empty() {
            problems.push("docker.execution.idleCommand: must not be empty".into());
        }
        if exec.shell_command.is_empty() {
            problems.push("docker.execution.shellCommand: must not be empty".into());
        }
        if let Some(tmpfs) = &exec.host.tmpfs {
            for path in tmpfs.keys() {
                if !path.starts_with('/') {
                    problems.push(format!(
                        "docker.execution.host.tmpfs: {path:?} is not an absolute path"
                    ));
                }
            }
        }
        if let Some(platform) = &exec.platform {
            if platform.architecture.is_empty() && !platform.docker_form().is_empty() {
                problems.push(
                    "docker.execution.platform.architecture: must be set with platform.os".into(),
                );
            }
        }
        let gateways =
            |key: String| format!("{key}: {} is the gateway's", crate::backend::HELPER_DIR);
        for (i, mount) in exec.host.mounts.iter().flatten().enumerate() {
            let target = mount.target.as_deref().unwrap_or_default();
            let key = format!("docker.execution.host.mounts[{i}].Target");
            if !target.starts_with('/') {
                problems.push(format!("{key}: {target:?} is not an absolute path"));
            } else if is_gateway_path(target) {
                problems.push(gateways(key));
            }
        }
        for (i, bind) in exec.host.binds.iter().flatten().enumerate() {
            // "source:target[:options]"
            if bind.split(':').nth(1).is_some_and(is_gateway_path) {
                problems.push(gateways(format!("docker.execution.host.binds[{i}]")));
            }
        }
        for target in exec.host.tmpfs.iter().flat_map(|t| t.keys()) {
            if is_gateway_path(target) {
                problems.push(gateways(format!("docker.execution.host.tmpfs.{target}")));
            }
        }
        if let Some(swappiness) = exec.host.memory_swappiness {
            if !(0..=100).contains(&swappiness) {
                problems.push("docker.execution.host.memorySwappiness: must be 0..100".into());
            }
        }
        for (key, value) in [
            ("memory", exec.host.memory),
            ("memoryReservation", exec.host.memory_reservation),
            ("cpuPeriod", exec.host.cpu_period),
            ("cpuQuota", exec.host.cpu_quota),
        ] {
            if matches!(value, Some(v) if v < 0) {
                problems.push(format!("docker.execution.host.{key}: must not be negative"));
            }
        }
        problems
    }
}
/// Whether a path in the container is (or is under) the gateway's own directory, however it
/// is spelled (`//.containerssh/`, `/x/../.containerssh`).
fn is_gateway_path(path: &str) -> bool {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let helper = crate::backend::HELPER_DIR.trim_start_matches('/');
    parts.first() == Some(&helper)
}

/// Accepted spellings rewritten before typed parsing: the hardening guide nests resource limits
/// under `docker.execution.host.resources`; Docker's API (and this schema) has them directly in
/// `host`.
pub(super) fn normalise(config: &mut Value, problems: &mut Vec<String>) {
    let Some(execution) = config
        .pointer_mut("/docker/execution")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    containerssh_execution(execution, problems);
    if let Some((_, network)) = execution
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case("network"))
    {
        network_key_case(network);
    }
    let Some(host) = execution.get_mut("host").and_then(Value::as_object_mut) else {
        return;
    };
    match host.remove("resources") {
        Some(Value::Object(map)) => {
            for (k, v) in map {
                if host.contains_key(&k) {
                    problems.push(format!(
                        "docker.execution.host.resources.{k}: also set in docker.execution.host; set it once"
                    ));
                } else {
                    host.insert(k, v);
                }
            }
        }
        Some(Value::Null) | None => {}
        Some(_) => problems.push("docker.execution.host.resources: must be a map".into()),
    }
    for (key, value) in host.iter_mut() {
        if DOCKER_TYPED_KEYS
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key))
        {
            docker_key_case(value);
        }
    }
}

/// The `host` options whose values are Docker's own structures.
const DOCKER_TYPED_KEYS: &[&str] = &[
    "mounts",
    "ulimits",
    "devices",
    "deviceRequests",
    "blkioWeightDevice",
    "blkioDeviceReadBps",
    "blkioDeviceWriteBps",
    "blkioDeviceReadIOps",
    "blkioDeviceWriteIOps",
    "logConfig",
    "portBindings",
];

/// Field names of Docker's structures under [`DOCKER_TYPED_KEYS`].
const DOCKER_FIELDS: &[&str] = &[
    "Target",
    "Source",
    "Type",
    "ReadOnly",
    "Consistency",
    "BindOptions",
    "Propagation",
    "NonRecursive",
    "CreateMountpoint",
    "ReadOnlyNonRecursive",
    "ReadOnlyForceRecursive",
    "VolumeOptions",
    "NoCopy",
    "Labels",
    "DriverConfig",
    "Name",
    "Options",
    "Subpath",
    "ImageOptions",
    "TmpfsOptions",
    "SizeBytes",
    "Mode",
    "Soft",
    "Hard",
    "PathOnHost",
    "PathInContainer",
    "CgroupPermissions",
    "Path",
    "Rate",
    "Weight",
    "Config",
    "HostIp",
    "HostPort",
    "Driver",
    "Count",
    "DeviceIDs",
    "Capabilities",
];

/// Docker's `EndpointSettings` (and its `IPAMConfig`) field names.
const ENDPOINT_FIELDS: &[&str] = &[
    "IPAMConfig",
    "IPv4Address",
    "IPv6Address",
    "LinkLocalIPs",
    "Links",
    "MacAddress",
    "Aliases",
    "DriverOpts",
    "GwPriority",
    "NetworkID",
    "EndpointID",
    "Gateway",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "DNSNames",
];

/// `network` with Docker's key spelling: `EndpointsConfig` maps network names (kept as
/// written) to endpoint settings.
fn network_key_case(network: &mut Value) {
    let Some(map) = network.as_object_mut() else {
        return;
    };
    let Some(key) = map
        .keys()
        .find(|k| k.eq_ignore_ascii_case("EndpointsConfig"))
        .cloned()
    else {
        return;
    };
    let Some(mut endpoints) = map.remove(&key) else {
        return;
    };
    for settings in endpoints
        .as_object_mut()
        .into_iter()
        .flat_map(|e| e.values_mut())
    {
        fields_case(settings, ENDPOINT_FIELDS, &["DriverOpts"]);
    }
    map.insert("EndpointsConfig".into(), endpoints);
}

/// Renames the keys of `value` (and of the objects and lists inside it) that match one of
/// `fields` case-insensitively to that spelling, leaving the insides of `free_maps` alone.
fn fields_case(value: &mut Value, fields: &[&str], free_maps: &[&str]) {
    match value {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| fields_case(item, fields, free_maps)),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut value) in entries {
                let key = fields
                    .iter()
                    .find(|f| f.eq_ignore_ascii_case(&key))
                    .map_or(key, |f| f.to_string());
                if !free_maps.contains(&key.as_str()) {
                    fields_case(&mut value, fields, free_maps);
                }
                map.insert(key, value);
            }
        }
        _ => {}
    }
}

/// Docker's structures written with ContainerSSH's YAML keys (Go's YAML decoder lowercases
/// field names: `readonly`, `bindoptions`) get Docker's spelling. The free-form maps inside
/// them (`Labels`, `Options`, `Config`) keep their keys.
fn docker_key_case(value: &mut Value) {
    fields_case(value, DOCKER_FIELDS, &["Labels", "Options", "Config"]);
}

/// ContainerSSH's own form of a `docker.execution` setting: Docker's `networkDisabled` in
/// `container`, which is `host.networkDisabled` here.
fn containerssh_execution(
    execution: &mut serde_json::Map<String, Value>,
    problems: &mut Vec<String>,
) {
    let Some(container) = execution
        .get_mut("container")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let Some(key) = container
        .keys()
        .find(|k| k.eq_ignore_ascii_case("networkDisabled"))
        .cloned()
    else {
        return;
    };
    match container.remove(&key) {
        Some(Value::Bool(true)) => {
            let host = execution
                .entry("host")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(host) = host.as_object_mut() {
                let set = host
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("networkDisabled"))
                    .map(|(_, v)| v.clone());
                match set {
                    None => {
                        host.insert("networkDisabled".into(), Value::Bool(true));
                    }
                    Some(Value::Bool(true)) => {}
                    Some(_) => problems.push(format!(
                        "docker.execution.container.{key}: also set in docker.execution.host; set it once"
                    )),
                }
            }
        }
        Some(Value::Bool(false) | Value::Null) | None => {}
        Some(_) => problems.push(format!(
            "docker.execution.container.{key}: must be true or false"
        )),
    }
}

/// ContainerSSH keys of the `docker` section that have no meaning here (removed with a warning).
pub(super) const UNUSED_KEYS: UnusedKeys = &[
    (
        "docker.execution",
        &["agentPath", "disableAgent"],
        "the gateway needs no guest agent in the image",
    ),
    (
        "docker.execution",
        &["containerName", "containername"],
        "containers are named containerssh-<connection id>",
    ),
    (
        "docker.execution",
        &["exposeAuthMetadataAsAnnotations"],
        "Docker containers have no annotations (use exposeAuthMetadataAsLabels)",
    ),
    (
        "docker.execution.container",
        &[
            "AttachStdin",
            "AttachStdout",
            "AttachStderr",
            "Tty",
            "OpenStdin",
            "StdinOnce",
            "Cmd",
            "ArgsEscaped",
        ],
        "the gateway attaches programs itself and runs idleCommand as the main process",
    ),
    (
        "docker.execution.container",
        &[
            "ExposedPorts",
            "Volumes",
            "Healthcheck",
            "MacAddress",
            "OnBuild",
            "StopSignal",
            "StopTimeout",
            "Shell",
        ],
        "not used for gateway containers (network settings are in docker.execution.host)",
    ),
    (
        "docker.execution.host",
        &["AutoRemove", "RestartPolicy"],
        "containers live as long as their connection or session; the gateway removes them",
    ),
    (
        "docker.execution.host",
        &["ContainerIDFile", "ConsoleSize"],
        "Docker CLI settings; terminal sizes come from the client",
    ),
    (
        "docker.execution.host",
        &["KernelMemory", "KernelMemoryTCP"],
        "removed from Docker's API",
    ),
    (
        "docker.timeouts",
        &["http"],
        "Docker API calls are bounded by the other docker.timeouts",
    ),
];

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn parsed(text: &str) -> Result<crate::config::Config, Vec<String>> {
        let text = format!("auth:\n  plugin: builtin:static-users\n{text}");
        crate::config::parse_str(&text, false).map_err(|e| e.problems)
    }

    #[test]
    fn containerssh_forms_of_execution_settings_are_taken() {
        // ContainerSSH 0.5/0.6's switch, off: nothing exposed.
        let c = parsed("docker:\n  execution:\n    exposeAuthMetadataAsEnv: false\n").unwrap();
        assert!(c.docker.execution.expose_auth_metadata_as_env.is_empty());
        // On: every entry under its own name (those that are variable names).
        let c = parsed("docker:\n  execution:\n    exposeAuthMetadataAsEnv: true\n").unwrap();
        let every = &c.docker.execution.expose_auth_metadata_as_env;
        let metadata = [
            ("GITHUB_LOGIN".to_string(), "alice".to_string()),
            ("not a name".to_string(), "x".to_string()),
        ];
        assert_eq!(
            every.variables(&metadata),
            vec!["GITHUB_LOGIN=alice".to_string()]
        );
        // Docker's container-level switch (ContainerSSH's hardening guide) is honoured.
        let c =
            parsed("docker:\n  execution:\n    container:\n      networkdisabled: true\n").unwrap();
        assert_eq!(c.docker.execution.host.network_disabled, Some(true));
        let c = parsed("docker:\n  execution:\n    container:\n      NetworkDisabled: false\n")
            .unwrap();
        assert_eq!(c.docker.execution.host.network_disabled, None);
        let e = parsed("docker:\n  execution:\n    container:\n      networkdisabled: true\n    host:\n      networkDisabled: false\n").unwrap_err();
        assert!(
            e[0].starts_with("docker.execution.container.networkdisabled: also set"),
            "{e:?}"
        );
        let mut answer = json!({"docker": {"execution": {"container": {"networkDisabled": true}}}});
        let mut problems = Vec::new();
        super::normalise(&mut answer, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            answer,
            json!({"docker": {"execution": {"container": {}, "host": {"networkDisabled": true}}}})
        );
    }

    /// Docker's other HostConfig options, as ContainerSSH's YAML writes them (lowercased field
    /// names, nested too), reach the container's HostConfig.
    #[test]
    fn docker_host_options_in_containerssh_yaml_reach_the_container() {
        let c = parsed(
            "docker:
  execution:
    auth:
      username: robot
      password: s3cret
      serveraddress: registry.example.com
    host:
      mounts:
        - type: bind
          source: /srv/shared
          target: /shared
          readonly: true
          bindoptions: {propagation: rslave}
        - type: volume
          target: /cache
          volumeoptions: {labels: {type: cache}, driverconfig: {name: local, options: {o: bind}}}
      ulimits: [{name: nofile, soft: 1024, hard: 2048}]
      blkioweight: 300
      blkiodevicereadbps: [{path: /dev/vda, rate: 1048576}]
      nanocpus: 500000000
      sysctls: {net.ipv4.ip_forward: '0'}
      logconfig: {type: none, config: {Type: kept}}
      portbindings: {22/tcp: [{hostip: 127.0.0.1, hostport: '2200'}]}
      devices: [{pathonhost: /dev/null, pathincontainer: /dev/extra, cgrouppermissions: r}]
      pidmode: ''
      autoremove: true
      restartpolicy: {name: always}
",
        )
        .unwrap();
        let exec = &c.docker.execution;
        let auth = exec.auth.as_ref().unwrap();
        assert_eq!(auth.0.username.as_deref(), Some("robot"));
        assert!(!format!("{exec:?}").contains("s3cret"));
        let host = crate::backend::docker::container::host_config(exec);
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts[0].target.as_deref(), Some("/shared"));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[0].typ, Some(bollard::models::MountType::BIND));
        assert_eq!(
            mounts[0].bind_options.as_ref().unwrap().propagation,
            Some(bollard::models::MountBindOptionsPropagationEnum::RSLAVE)
        );
        let volume = mounts[1].volume_options.as_ref().unwrap();
        assert_eq!(volume.labels.as_ref().unwrap()["type"], "cache");
        let driver = volume.driver_config.as_ref().unwrap();
        assert_eq!(driver.options.as_ref().unwrap()["o"], "bind");
        assert_eq!(host.ulimits.unwrap()[0].hard, Some(2048));
        assert_eq!(host.blkio_weight, Some(300));
        assert_eq!(host.blkio_device_read_bps.unwrap()[0].rate, Some(1048576));
        assert_eq!(host.nano_cpus, Some(500000000));
        assert_eq!(host.sysctls.unwrap()["net.ipv4.ip_forward"], "0");
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("none"));
        assert_eq!(log.config.unwrap()["Type"], "kept");
        let ports = host.port_bindings.unwrap();
        let binding = &ports["22/tcp"].as_ref().unwrap()[0];
        assert_eq!(binding.host_port.as_deref(), Some("2200"));
        assert_eq!(
            host.devices.unwrap()[0].path_in_container.as_deref(),
            Some("/dev/extra")
        );
        // The gateway keeps removing its containers itself.
        assert_eq!(host.auto_remove, Some(false));
        assert!(host.restart_policy.is_none());
    }

    #[test]
    fn network_and_platform_are_taken_in_either_spelling() {
        let c = parsed("docker:\n  execution:\n    network:\n      endpointsconfig:\n        aliases:\n          aliases: [shell]\n          ipamconfig: {ipv4address: 10.0.0.7}\n          driveropts: {aliases: x}\n    platform: {os: linux, architecture: arm64, variant: v8}\n").unwrap();
        let exec = &c.docker.execution;
        let endpoints = exec
            .network
            .as_ref()
            .unwrap()
            .endpoints_config
            .as_ref()
            .unwrap();
        // The network's name is kept as written, even when it looks like a field.
        let settings = &endpoints["aliases"];
        assert_eq!(
            settings.aliases.as_deref(),
            Some(&["shell".to_string()][..])
        );
        let ipam = settings.ipam_config.as_ref().unwrap();
        assert_eq!(ipam.ipv4_address.as_deref(), Some("10.0.0.7"));
        assert_eq!(settings.driver_opts.as_ref().unwrap()["aliases"], "x");
        let platform = exec.platform.as_ref().unwrap();
        assert_eq!(platform.docker_form(), "linux/arm64/v8");
        let e = parsed("docker:\n  execution:\n    platform: {os: linux}\n").unwrap_err();
        assert!(
            e[0].starts_with("docker.execution.platform.architecture"),
            "{e:?}"
        );
    }

    #[test]
    fn docker_host_options_are_checked() {
        let e = parsed("docker:\n  execution:\n    host:\n      mounts: [{type: bind, source: /x, target: /.containerssh/y}]\n").unwrap_err();
        assert!(e[0].contains("is the gateway's"), "{e:?}");
        for sneaky in [
            "mounts: [{type: bind, source: /x, target: /x/../.containerssh}]",
            "binds: ['/x://.containerssh/helper:ro']",
            "tmpfs: {/.containerssh/./: size=1m}",
        ] {
            let e = parsed(&format!(
                "docker:\n  execution:\n    host:\n      {sneaky}\n"
            ))
            .unwrap_err();
            assert!(e[0].contains("is the gateway's"), "{sneaky}: {e:?}");
        }
        assert!(parsed(
            "docker:\n  execution:\n    host:\n      binds: ['/x:/.containerssh-not:ro']\n"
        )
        .is_ok());
        let e = parsed("docker:\n  execution:\n    host:\n      mounts: [{type: bind, source: /x, target: relative}]\n").unwrap_err();
        assert!(e[0].contains("not an absolute path"), "{e:?}");
        let e =
            parsed("docker:\n  execution:\n    host:\n      mounts: [{typ: bind, target: /x}]\n")
                .unwrap_err();
        assert!(
            e[0].starts_with("docker.execution.host.mounts[0].typ: unknown key"),
            "{e:?}"
        );
        let e = parsed("docker:\n  execution:\n    auth:\n      user: x\n").unwrap_err();
        assert!(
            e[0].starts_with("docker.execution.auth.user: unknown key"),
            "{e:?}"
        );
    }
}
