//! The backends this gateway knows and the clients of the process.
//!
//! A backend is one module that provides a [`BackendType`] (its name, its config section, how
//! its settings are read, checked and connected) and implements [`Backend`] and
//! [`super::Workload`]; adding one is that module plus one line in [`REGISTRY`] (and its
//! section's field in `Config`, where ContainerSSH's file format names it). Nothing else in the
//! gateway names a backend.
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::{Workload, WorkloadOwner, WorkloadSettings};
use crate::config::{Config, UnusedKeys};
use crate::observe::Metrics;

/// Every backend, the file's default first.
pub static REGISTRY: &[&BackendType] = &[
    &super::docker::BACKEND,
    &super::kubernetes::BACKEND,
    &super::sshproxy::BACKEND,
];

/// What the gateway needs to know of one backend before it has a client for it.
pub struct BackendType {
    /// The name `backend:` selects it by.
    pub name: &'static str,
    /// Other names accepted for it (ContainerSSH's older ones).
    pub aliases: &'static [&'static str],
    /// Its section of the configuration (file and config-server answers).
    pub section: &'static str,
    /// What its workloads are called in logs ("containers", "pods").
    pub workloads: &'static str,
    /// The workload settings of `config` (the file's, or a connection's merged answer).
    pub settings: fn(&Config) -> Arc<dyn WorkloadSettings>,
    /// Rewrites accepted alternative spellings in its section of the raw configuration (file
    /// or answer) before it is read; problems go to `problems`.
    pub normalise: fn(&mut serde_json::Value, &mut Vec<String>),
    /// ContainerSSH keys of its section that mean nothing here (removed with one warning).
    pub unused_keys: UnusedKeys,
    /// Problems with its section of `config`.
    pub validate: fn(&Config) -> Vec<String>,
    /// Why a connection's configuration may not be used when it changes what one client
    /// serves for every connection (the engine's address, say); `None` if it may.
    pub fixed_per_connection: fn(file: &Config, connection: &Config) -> Option<String>,
    /// Connects its client (once per process, when the file or a config server first picks
    /// it), removes what an earlier run left and starts its warm pool.
    pub connect: fn(Arc<Config>, String, Option<Arc<Metrics>>) -> ConnectFuture,
}

pub type ConnectFuture = BoxFuture<'static, anyhow::Result<Arc<dyn Backend>>>;

impl fmt::Debug for BackendType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// The registered backend called `name` (or one of its aliases), case-insensitively.
pub fn backend_type(name: &str) -> Option<&'static BackendType> {
    REGISTRY.iter().copied().find(|t| {
        t.name.eq_ignore_ascii_case(name) || t.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

/// The names `backend:` accepts, for error messages.
pub fn backend_names() -> String {
    REGISTRY
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The client of one backend in this process.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Creates a workload for `owner` from `settings` (this backend's own). Cancelling
    /// `cancel` (its connection ended) stops an image pull or the wait for the start; whatever
    /// was already created is removed before this returns.
    async fn create_workload(
        &self,
        settings: &dyn WorkloadSettings,
        owner: &WorkloadOwner,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Arc<dyn Workload>>;
    /// Removes workloads of this instance left by an earlier run; how many.
    async fn reap_orphans(&self) -> anyhow::Result<usize>;
    /// Shutdown has begun: the warm pool starts no more members.
    fn stop_refilling(&self);
    /// Stops the warm pool and removes its members nobody took, within `deadline`.
    async fn stop_pool(&self, deadline: Duration);
    /// Removes every workload still live, joining removals already under way.
    async fn remove_all(&self);
    /// Waits for every removal in flight.
    async fn removals_finished(&self);
    /// Workloads created and not (yet) removed.
    fn live_count(&self) -> usize;
}

/// Reaps what an earlier run left (logged) before a backend serves anyone.
pub async fn reap_at_start(backend: &dyn Backend, kind: &BackendType) {
    report_orphans(backend.reap_orphans().await, kind.workloads);
}

/// The backend clients: the file's backend is connected at start (so a wrong address stops
/// the gateway at once); another one is connected when a config server first picks it.
pub struct Backends {
    config: Arc<Config>,
    instance: String,
    clients: HashMap<&'static str, OnceCell<Arc<dyn Backend>>>,
    metrics: Option<Arc<Metrics>>,
}

/// How long shutdown waits for a warm pool's refill to stop, and then for its members' removal.
const POOL_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

impl Backends {
    pub async fn connect(
        config: Arc<Config>,
        instance: String,
        metrics: Option<Arc<Metrics>>,
    ) -> anyhow::Result<Self> {
        let backends = Self {
            clients: REGISTRY.iter().map(|t| (t.name, OnceCell::new())).collect(),
            config,
            instance,
            metrics,
        };
        backends.client(backends.config.backend.kind()).await?;
        Ok(backends)
    }

    async fn client(&self, kind: &'static BackendType) -> anyhow::Result<&Arc<dyn Backend>> {
        let Some(cell) = self.clients.get(kind.name) else {
            anyhow::bail!("backend {} is not registered", kind.name);
        };
        cell.get_or_try_init(|| {
            (kind.connect)(
                self.config.clone(),
                self.instance.clone(),
                self.metrics.clone(),
            )
        })
        .await
    }

    /// Creates a workload for `owner` with the backend `settings` belong to.
    pub async fn create_workload(
        &self,
        settings: &dyn WorkloadSettings,
        owner: &WorkloadOwner,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Arc<dyn Workload>> {
        self.client(settings.backend())
            .await?
            .create_workload(settings, owner, cancel)
            .await
    }

    fn connected(&self) -> impl Iterator<Item = (&'static BackendType, &Arc<dyn Backend>)> {
        REGISTRY.iter().copied().filter_map(|kind| {
            self.clients
                .get(kind.name)
                .and_then(OnceCell::get)
                .map(|client| (kind, client))
        })
    }

    /// Shutdown has begun: warm pools start no more members.
    pub fn stop_refilling(&self) {
        for (_, client) in self.connected() {
            client.stop_refilling();
        }
    }

    /// Shutdown: removes whatever is left (joining removals already under way rather than
    /// repeating them), then anything carrying this instance's label, and waits for every
    /// removal still running. Returns how many workloads could not be removed.
    pub async fn remove_everything(&self) -> usize {
        let mut left = 0;
        for (kind, client) in self.connected() {
            client.stop_pool(POOL_SHUTDOWN_DEADLINE).await;
            client.remove_all().await;
            report_orphans(client.reap_orphans().await, kind.workloads);
            client.removals_finished().await;
            left += client.live_count();
        }
        left
    }

    /// Workloads created and not (yet) removed.
    pub fn live_count(&self) -> usize {
        self.connected().map(|(_, c)| c.live_count()).sum()
    }
}

fn report_orphans(reaped: anyhow::Result<usize>, what: &str) {
    match reaped {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed {what} left by an earlier run"),
        Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot look for leftover {what}"),
    }
}

/// The `backend:` setting: a registered backend, stored by its canonical name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BackendName(&'static BackendType);

impl BackendName {
    pub fn kind(&self) -> &'static BackendType {
        self.0
    }

    pub fn as_str(&self) -> &'static str {
        self.0.name
    }
}

impl PartialEq for BackendType {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for BackendType {}

impl Default for BackendName {
    fn default() -> Self {
        Self(REGISTRY[0])
    }
}

impl fmt::Debug for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl std::str::FromStr for BackendName {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        backend_type(name)
            .map(Self)
            .ok_or_else(|| format!("unknown backend `{name}` (one of: {})", backend_names()))
    }
}

impl serde::Serialize for BackendName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name)
    }
}

impl<'de> serde::Deserialize<'de> for BackendName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_resolve_to_registered_backends() {
        for t in REGISTRY {
            assert_eq!(t.name.parse::<BackendName>().unwrap().as_str(), t.name);
            for alias in t.aliases {
                assert_eq!(alias.parse::<BackendName>().unwrap().as_str(), t.name);
            }
        }
        assert_eq!(
            "dockerrun".parse::<BackendName>().unwrap().as_str(),
            "docker"
        );
        assert_eq!(
            "KubeRun".parse::<BackendName>().unwrap().as_str(),
            "kubernetes"
        );
        let e = "podman2".parse::<BackendName>().unwrap_err();
        assert!(e.contains("docker, kubernetes, sshproxy"), "{e}");
        assert_eq!(BackendName::default().as_str(), "docker");
    }

    #[test]
    fn every_backend_has_its_own_name_and_section() {
        let mut seen = std::collections::HashSet::new();
        for t in REGISTRY {
            assert!(seen.insert(t.name), "{} registered twice", t.name);
            assert!(seen.insert(t.section) || t.section == t.name);
            for alias in t.aliases {
                assert!(seen.insert(alias), "alias {alias} taken twice");
            }
        }
    }
}
