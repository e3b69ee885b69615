//! Which backend runs a connection's workloads and with what settings (the file's, or a config
//! server's answer for that connection), and the backend clients of the process.
use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::docker::DockerBackend;
use super::kubernetes::KubernetesBackend;
use super::{Workload, WorkloadOwner};
use crate::config::{BackendKind, Config, Execution, ExecutionMode, KubernetesPod};
use crate::observe::Metrics;

/// The backend of one connection and its workload settings.
#[derive(Debug, Clone)]
pub enum WorkloadSettings {
    Docker(Box<Execution>),
    Kubernetes(Box<KubernetesPod>),
}

impl WorkloadSettings {
    pub fn from_config(config: &Config) -> Self {
        match config.backend {
            BackendKind::Docker => Self::Docker(Box::new(config.docker.execution.clone())),
            BackendKind::Kubernetes => Self::Kubernetes(Box::new(config.kubernetes.pod.clone())),
        }
    }

    pub fn mode(&self) -> ExecutionMode {
        match self {
            Self::Docker(e) => e.mode,
            Self::Kubernetes(p) => p.mode,
        }
    }

    /// The shell for `shell` requests, and `<shell> -c <command>` for exec.
    pub fn shell_command(&self) -> &[String] {
        match self {
            Self::Docker(e) => &e.shell_command,
            Self::Kubernetes(p) => &p.shell_command,
        }
    }

    pub fn subsystems(&self) -> &BTreeMap<String, String> {
        match self {
            Self::Docker(e) => &e.subsystems,
            Self::Kubernetes(p) => &p.subsystems,
        }
    }

    pub fn disable_command(&self) -> bool {
        match self {
            Self::Docker(e) => e.disable_command,
            Self::Kubernetes(p) => p.disable_command,
        }
    }

    /// The image programs run in (for logs).
    pub fn image(&self) -> String {
        match self {
            Self::Docker(e) => e.container.image.clone(),
            Self::Kubernetes(p) => p
                .spec
                .containers
                .get(p.console_container_number)
                .and_then(|c| c.image.clone())
                .unwrap_or_default(),
        }
    }
}

/// The backend clients: the file's backend is connected at start (so a wrong address stops
/// the gateway at once); another one is connected when a config server first picks it.
pub struct Backends {
    config: Arc<Config>,
    instance: String,
    docker: OnceCell<DockerBackend>,
    kubernetes: OnceCell<KubernetesBackend>,
    metrics: Option<Arc<Metrics>>,
}

/// How long shutdown waits for a warm pool's refill to stop, and then for its members' removal.
const POOL_SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

impl Backends {
    pub async fn connect(
        config: Arc<Config>,
        instance: String,
        metrics: Option<Arc<Metrics>>,
    ) -> anyhow::Result<Self> {
        let backends = Self {
            config,
            instance,
            docker: OnceCell::new(),
            kubernetes: OnceCell::new(),
            metrics,
        };
        match backends.config.backend {
            BackendKind::Docker => backends.docker().await.map(|_| ())?,
            BackendKind::Kubernetes => backends.kubernetes().await.map(|_| ())?,
        }
        Ok(backends)
    }

    async fn docker(&self) -> anyhow::Result<&DockerBackend> {
        self.docker
            .get_or_try_init(|| async {
                let backend = DockerBackend::connect(&self.config.docker, &self.instance).await?;
                report_orphans(backend.reap_orphans().await, "containers");
                backend.start_pool(&self.config.docker.execution, self.metrics.clone());
                Ok(backend)
            })
            .await
    }

    async fn kubernetes(&self) -> anyhow::Result<&KubernetesBackend> {
        self.kubernetes
            .get_or_try_init(|| async {
                let backend =
                    KubernetesBackend::connect(&self.config.kubernetes, &self.instance).await?;
                report_orphans(backend.reap_orphans().await, "pods");
                backend.start_pool(&self.config.kubernetes.pod, self.metrics.clone());
                Ok(backend)
            })
            .await
    }

    /// Creates a workload for `owner`. Cancelling `cancel` (its connection ended) stops an
    /// image pull or the wait for the start; whatever was already created is removed.
    pub async fn create_workload(
        &self,
        settings: &WorkloadSettings,
        owner: &WorkloadOwner,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Arc<dyn Workload>> {
        match settings {
            WorkloadSettings::Docker(execution) => {
                self.docker()
                    .await?
                    .create_workload(execution, owner, cancel)
                    .await
            }
            WorkloadSettings::Kubernetes(pod) => {
                self.kubernetes()
                    .await?
                    .create_workload(pod, owner, cancel)
                    .await
            }
        }
    }

    /// Shutdown has begun: warm pools start no more members.
    pub fn stop_refilling(&self) {
        if let Some(docker) = self.docker.get() {
            docker.stop_refilling();
        }
        if let Some(kubernetes) = self.kubernetes.get() {
            kubernetes.stop_refilling();
        }
    }

    /// Shutdown: removes whatever is left (joining removals already under way rather than
    /// repeating them), then anything carrying this instance's label, and waits for every
    /// removal still running. Returns how many workloads could not be removed.
    pub async fn remove_everything(&self) -> usize {
        let mut left = 0;
        if let Some(docker) = self.docker.get() {
            docker.stop_pool(POOL_SHUTDOWN_DEADLINE).await;
            docker.remove_all().await;
            report_orphans(docker.reap_orphans().await, "containers");
            docker.removals_finished().await;
            left += docker.live_count();
        }
        if let Some(kubernetes) = self.kubernetes.get() {
            kubernetes.stop_pool(POOL_SHUTDOWN_DEADLINE).await;
            kubernetes.remove_all().await;
            report_orphans(kubernetes.reap_orphans().await, "pods");
            kubernetes.removals_finished().await;
            left += kubernetes.live_count();
        }
        left
    }

    /// Workloads created and not (yet) removed.
    pub fn live_count(&self) -> usize {
        self.docker.get().map_or(0, |d| d.live_count())
            + self.kubernetes.get().map_or(0, |k| k.live_count())
    }
}

fn report_orphans(reaped: anyhow::Result<usize>, what: &str) {
    match reaped {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed {what} left by an earlier run"),
        Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot look for leftover {what}"),
    }
}
