//! `kubernetes:` section, with ContainerSSH's key names (`connection`, `pod.metadata`,
//! `pod.spec`, `pod.consoleContainerNumber`, `pod.mode`, `timeouts`). The pod spec is
//! Kubernetes' own `PodSpec` (every field as `kubectl` knows it); the gateway adds its
//! secure defaults where the spec leaves a field unset.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde::{Deserialize, Serialize};

use crate::config::{default_subsystems, is_env_name, ExecutionMode, PoolSettings, UnusedKeys};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesConfig {
    #[serde(default)]
    pub connection: KubernetesConnection,
    #[serde(default)]
    pub pod: KubernetesPod,
    #[serde(default)]
    pub timeouts: KubernetesTimeouts,
}

/// How the gateway reaches the API server. With nothing but the defaults set and a service
/// account token mounted, the in-cluster configuration is used; `kubeconfig` names a file instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesConnection {
    /// `host`, `host:port` or `https://host:port` of the API server.
    #[serde(default = "default_api_host")]
    pub host: String,
    /// The API root below the host; must end in `/api`.
    #[serde(default = "default_api_path")]
    pub path: String,
    /// A kubeconfig file (its current context) instead of the keys below.
    #[serde(default)]
    pub kubeconfig: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// Name the server certificate must carry, when it differs from the host.
    #[serde(default)]
    pub server_name: String,
    /// Client certificate, key and CA as files...
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub key_file: String,
    #[serde(default)]
    pub cacert_file: String,
    /// ...or as PEM text.
    #[serde(default)]
    pub cert: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub cacert: String,
    #[serde(default)]
    pub bearer_token: String,
    /// Re-read regularly, so rotated service account tokens keep working.
    #[serde(default)]
    pub bearer_token_file: String,
    /// Steady rate of API requests per second (client-side throttle).
    #[serde(default = "default_qps")]
    pub qps: f32,
    /// Requests that may go above `qps` in a burst.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

impl Default for KubernetesConnection {
    fn default() -> Self {
        Self {
            host: default_api_host(),
            path: default_api_path(),
            kubeconfig: String::new(),
            username: String::new(),
            password: String::new(),
            server_name: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            cacert_file: String::new(),
            cert: String::new(),
            key: String::new(),
            cacert: String::new(),
            bearer_token: String::new(),
            bearer_token_file: String::new(),
            qps: default_qps(),
            burst: default_burst(),
        }
    }
}

fn default_api_host() -> String {
    "kubernetes.default.svc".into()
}
fn default_api_path() -> String {
    "/api".into()
}
// ContainerSSH (client-go) uses 5 and 10: at about five requests a login, that throttles a
// gateway to one login a second, so the defaults are higher.
fn default_qps() -> f32 {
    50.0
}
fn default_burst() -> u32 {
    100
}

impl KubernetesConnection {
    /// True when no server or credentials are set (the in-cluster configuration then applies);
    /// the rate limit says nothing about where the API server is.
    pub fn is_default(&self) -> bool {
        let location = |c: &Self| {
            let mut c = c.clone();
            c.qps = default_qps();
            c.burst = default_burst();
            serde_json::to_value(c).ok()
        };
        location(self) == location(&Self::default())
    }
}

/// The pod of one connection (or session) and how programs run in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesPod {
    #[serde(default)]
    pub metadata: PodMetadata,
    #[serde(default = "default_pod_spec")]
    pub spec: PodSpec,
    /// Which container of `spec.containers` programs run in.
    #[serde(default)]
    pub console_container_number: usize,
    #[serde(default)]
    pub mode: ExecutionMode,
    /// The console container's main process; it only keeps the pod alive and exits on TERM.
    #[serde(default = "default_idle_command")]
    pub idle_command: Vec<String>,
    #[serde(default = "default_shell_command")]
    pub shell_command: Vec<String>,
    #[serde(default = "default_subsystems")]
    pub subsystems: BTreeMap<String, String>,
    /// Refuse exec and subsystem requests (interactive shells only).
    #[serde(default)]
    pub disable_command: bool,
    /// ContainerSSH's guest agent is never used (nothing needs it); both keys are accepted so
    /// ContainerSSH configurations load unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_agent: Option<bool>,
    /// Authentication metadata name → environment variable of every program.
    #[serde(default)]
    pub expose_auth_metadata_as_env: BTreeMap<String, String>,
    /// Authentication metadata name → pod label (the value must be a valid label value).
    #[serde(default)]
    pub expose_auth_metadata_as_labels: BTreeMap<String, String>,
    /// Authentication metadata name → pod annotation.
    #[serde(default)]
    pub expose_auth_metadata_as_annotations: BTreeMap<String, String>,
    /// Pods started ahead of logins from this (the file's) configuration.
    #[serde(default, skip_serializing_if = "PoolSettings::is_off")]
    pub pool: PoolSettings,
}

impl Default for KubernetesPod {
    fn default() -> Self {
        Self {
            metadata: PodMetadata::default(),
            spec: default_pod_spec(),
            console_container_number: 0,
            mode: ExecutionMode::default(),
            idle_command: default_idle_command(),
            shell_command: default_shell_command(),
            subsystems: default_subsystems(),
            disable_command: false,
            agent_path: None,
            disable_agent: None,
            expose_auth_metadata_as_env: BTreeMap::new(),
            expose_auth_metadata_as_labels: BTreeMap::new(),
            expose_auth_metadata_as_annotations: BTreeMap::new(),
            pool: PoolSettings::default(),
        }
    }
}

/// The parts of the pod's metadata an operator sets; name and the gateway's own labels are
/// the gateway's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadata {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Prefix of pod names; the connection id (and session number) follow.
    #[serde(default = "default_generate_name")]
    pub generate_name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Default for PodMetadata {
    fn default() -> Self {
        Self {
            namespace: default_namespace(),
            generate_name: default_generate_name(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }
}

fn default_namespace() -> String {
    "default".into()
}
fn default_generate_name() -> String {
    "containerssh-".into()
}

fn default_pod_spec() -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "shell".into(),
            image: Some("containerssh/containerssh-guest-image".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn default_idle_command() -> Vec<String> {
    // PID 1 ignores signals it has no handler for; the trap lets pod deletion finish at once
    // instead of waiting out the grace period.
    vec![
        "/bin/sh".into(),
        "-c".into(),
        "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done".into(),
    ]
}
fn default_shell_command() -> Vec<String> {
    vec!["/bin/sh".into()]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesTimeouts {
    /// Creating the pod until its console container runs (image pull included).
    #[serde(default = "sixty_seconds", with = "crate::config::duration")]
    pub pod_start: Duration,
    /// Deleting the pod until it is gone.
    #[serde(default = "sixty_seconds", with = "crate::config::duration")]
    pub pod_stop: Duration,
    /// Starting a program in the pod.
    #[serde(default = "sixty_seconds", with = "crate::config::duration")]
    pub command_start: Duration,
    #[serde(default = "sixty_seconds", with = "crate::config::duration")]
    pub signal: Duration,
    #[serde(default = "sixty_seconds", with = "crate::config::duration")]
    pub window: Duration,
    /// One API request (not the streams of running programs).
    #[serde(default = "fifteen_seconds", with = "crate::config::duration")]
    pub http: Duration,
}

impl Default for KubernetesTimeouts {
    fn default() -> Self {
        Self {
            pod_start: sixty_seconds(),
            pod_stop: sixty_seconds(),
            command_start: sixty_seconds(),
            signal: sixty_seconds(),
            window: sixty_seconds(),
            http: fifteen_seconds(),
        }
    }
}

fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn fifteen_seconds() -> Duration {
    Duration::from_secs(15)
}

/// Kubernetes label values: at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric())
}

impl KubernetesConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let c = &self.connection;
        if c.host.trim().is_empty() {
            problems.push("kubernetes.connection.host: must not be empty".into());
        }
        if !c.path.ends_with("/api") {
            problems.push(format!(
                "kubernetes.connection.path: {:?} must end in /api",
                c.path
            ));
        }
        if !c.cert.is_empty() && !c.cert_file.is_empty() {
            problems.push("kubernetes.connection: set cert or certFile, not both".into());
        }
        if !c.key.is_empty() && !c.key_file.is_empty() {
            problems.push("kubernetes.connection: set key or keyFile, not both".into());
        }
        if !c.cacert.is_empty() && !c.cacert_file.is_empty() {
            problems.push("kubernetes.connection: set cacert or cacertFile, not both".into());
        }
        let has_cert = !(c.cert.is_empty() && c.cert_file.is_empty());
        let has_key = !(c.key.is_empty() && c.key_file.is_empty());
        if has_cert != has_key {
            problems.push(
                "kubernetes.connection: a client certificate needs its key (and the other way round)"
                    .into(),
            );
        }
        if !c.bearer_token.is_empty() && !c.bearer_token_file.is_empty() {
            problems
                .push("kubernetes.connection: set bearerToken or bearerTokenFile, not both".into());
        }
        if c.username.is_empty() != c.password.is_empty() {
            problems.push("kubernetes.connection: username and password go together".into());
        }
        if !(c.qps > 0.0 && c.qps.is_finite()) {
            problems.push("kubernetes.connection.qps: must be above 0".into());
        }
        if c.burst == 0 {
            problems.push("kubernetes.connection.burst: must be at least 1".into());
        }
        let pod = &self.pod;
        if pod.metadata.namespace.trim().is_empty() {
            problems.push("kubernetes.pod.metadata.namespace: must not be empty".into());
        }
        if pod.spec.containers.is_empty() {
            problems
                .push("kubernetes.pod.spec.containers: at least one container is needed".into());
        }
        for (i, container) in pod.spec.containers.iter().enumerate() {
            if container
                .image
                .as_deref()
                .is_none_or(|i| i.trim().is_empty())
            {
                problems.push(format!(
                    "kubernetes.pod.spec.containers[{i}].image: must not be empty"
                ));
            }
        }
        if pod.console_container_number >= pod.spec.containers.len()
            && !pod.spec.containers.is_empty()
        {
            problems.push(format!(
                "kubernetes.pod.consoleContainerNumber: {} but the spec has {} container(s)",
                pod.console_container_number,
                pod.spec.containers.len()
            ));
        }
        if let Some(policy) = &pod.spec.restart_policy {
            if policy != "Never" {
                problems.push(format!(
                    "kubernetes.pod.spec.restartPolicy: {policy:?}; only \"Never\" is allowed (a restarted pod would lose its sessions)"
                ));
            }
        }
        if pod.idle_command.is_empty() {
            problems.push("kubernetes.pod.idleCommand: must not be empty".into());
        }
        if pod.shell_command.is_empty() {
            problems.push("kubernetes.pod.shellCommand: must not be empty".into());
        }
        for (key, label) in &pod.expose_auth_metadata_as_labels {
            if label.is_empty() || label.len() > 63 {
                problems.push(format!(
                    "kubernetes.pod.exposeAuthMetadataAsLabels.{key}: {label:?} is not a label name"
                ));
            }
        }
        for (key, name) in &pod.expose_auth_metadata_as_env {
            if !is_env_name(name) {
                problems.push(format!(
                    "kubernetes.pod.exposeAuthMetadataAsEnv.{key}: {name:?} is not an environment variable name"
                ));
            }
        }
        let gen = &pod.metadata.generate_name;
        if gen.len() > 20
            || !gen
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            problems.push(format!(
                "kubernetes.pod.metadata.generateName: {gen:?} must be at most 20 characters of a-z, 0-9 and -"
            ));
        }
        problems
    }
}

/// ContainerSSH keys of the `kubernetes` section that have no meaning here (removed with a warning).
pub(super) const UNUSED_KEYS: UnusedKeys = &[
    (
        "kubernetes.pod.metadata",
        &["creationTimestamp"],
        "the API server sets it",
    ),
    (
        "kubernetes.pod",
        &["createMissingPods"],
        "it applies to mode persistent only, which is not supported",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_env_names_are_checked() {
        assert!(is_label_value("abc-1.2_x"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-abc"));
        assert!(!is_label_value("a:b"));
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(is_env_name("SSH_ORIGINAL_COMMAND"));
        assert!(!is_env_name("-u"));
        assert!(!is_env_name("1A"));
        assert!(!is_env_name("A=B"));
    }

    #[test]
    fn defaults_are_valid_and_in_cluster() {
        let config = KubernetesConfig::default();
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        assert!(config.connection.is_default());
        let mut faster = config.connection.clone();
        faster.qps = 100.0;
        assert!(
            faster.is_default(),
            "a rate limit keeps the in-cluster configuration"
        );
        faster.bearer_token = "t".into();
        assert!(!faster.is_default());
        assert_eq!(config.pod.spec.containers[0].name, "shell");
    }

    #[test]
    fn containerssh_yaml_loads_and_typos_in_the_pod_spec_are_caught() {
        let yaml = r#"
auth: {plugin: "builtin:static-users"}
backend: kubernetes
kubernetes:
  connection:
    host: 10.0.0.1:6443
    cacertFile: /etc/k8s/ca.crt
    bearerTokenFile: /var/run/token
    qps: 20
    burst: 40
  pod:
    metadata:
      namespace: ssh
      labels: {team: blue}
    consoleContainerNumber: 1
    mode: session
    disableAgent: true
    spec:
      serviceAccountName: restricted
      containers:
      - name: sidecar
        image: side:1
      - name: shell
        image: guest:2
        imagePullPolicy: Never
        resources: {limits: {memory: 128Mi, cpu: 500m}}
  timeouts: {podStart: 2m, http: 5s}
"#;
        let config = crate::config::parse_str(yaml, false).unwrap();
        let k = &config.kubernetes;
        assert_eq!(k.connection.qps, 20.0);
        assert_eq!(k.pod.metadata.namespace, "ssh");
        assert_eq!(k.pod.mode, ExecutionMode::Session);
        assert_eq!(k.pod.spec.containers[1].image.as_deref(), Some("guest:2"));
        assert_eq!(
            k.pod.spec.service_account_name.as_deref(),
            Some("restricted")
        );
        assert_eq!(k.timeouts.pod_start, Duration::from_secs(120));
        let settings = crate::backend::settings::from_config(&config);
        assert_eq!(settings.describe(), "guest:2");
        assert_eq!(settings.backend().name, "kubernetes");

        // ContainerSSH 0.6's switch for its persistent mode is accepted and ignored; the mode
        // itself is refused by name.
        let with_switch = yaml.replace("disableAgent: true", "createMissingPods: false");
        assert!(crate::config::parse_str(&with_switch, false).is_ok());
        let persistent = yaml.replace("mode: session", "mode: persistent");
        let problems = crate::config::parse_str(&persistent, false)
            .unwrap_err()
            .problems;
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("kubernetes.pod.mode: unknown variant `persistent`")),
            "{problems:?}"
        );

        let typo = yaml.replace("imagePullPolicy", "imagePulPolicy");
        let problems = crate::config::parse_str(&typo, false).unwrap_err().problems;
        assert!(
            problems
                .iter()
                .any(|p| p.contains("kubernetes.pod.spec.containers[1].imagePulPolicy")),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_settings_are_reported() {
        let mut config = KubernetesConfig::default();
        config.connection.path = "/apis".into();
        config.connection.cert = "-----BEGIN CERTIFICATE-----".into();
        config.pod.console_container_number = 3;
        config.pod.spec.restart_policy = Some("Always".into());
        config.pod.metadata.generate_name = "Bad_Name".into();
        let problems = config.validate().join("\n");
        for expected in [
            "path",
            "needs its key",
            "consoleContainerNumber",
            "restartPolicy",
            "generateName",
        ] {
            assert!(problems.contains(expected), "{expected}: {problems}");
        }
    }
}
