//! Docker backend (bollard): one client per process, containers labelled with the connection id
//! and the gateway instance, removed on disconnect, orphans reaped at start and on shutdown.
mod client;
mod container;
mod files;
mod process;

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use bollard::query_parameters::RemoveContainerOptions;
use bollard::Docker;

pub use container::host_config;

use crate::backend::{LiveSet, Process, ProcessSpec, Workload, WorkloadOwner};
use crate::config::{DockerConfig, DockerTimeouts, Execution};

/// The Docker backend of one gateway process.
#[derive(Clone)]
pub struct DockerBackend {
    docker: Docker,
    instance: Arc<str>,
    timeouts: DockerTimeouts,
    /// Containers created and not yet removed, so shutdown can remove what is left.
    live: LiveSet,
    _tls_material: Option<Arc<tempfile::TempDir>>,
}

impl DockerBackend {
    pub async fn connect(config: &DockerConfig, instance: &str) -> anyhow::Result<Self> {
        let connected = client::connect(&config.connection).await?;
        Ok(Self {
            docker: connected.docker,
            _tls_material: connected.tls_material.map(Arc::new),
            instance: instance.into(),
            timeouts: config.timeouts.clone(),
            live: LiveSet::default(),
        })
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Removes containers of this instance left behind by an earlier run. Returns how many.
    pub async fn reap_orphans(&self) -> anyhow::Result<usize> {
        let ids = container::list_owned(&self.docker, &self.instance).await?;
        let live = self.live.snapshot();
        let mut removed = 0;
        for id in ids.into_iter().filter(|id| !live.contains(id)) {
            if remove_container(&self.docker, &id, &self.timeouts, "").await {
                tracing::info!(container = %short(&id), "removed orphaned container");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes every container this process still has (shutdown path).
    pub async fn remove_all(&self) {
        for id in self.live.snapshot() {
            if remove_container(&self.docker, &id, &self.timeouts, "").await {
                self.live.remove(&id);
            }
        }
    }

    pub fn live_count(&self) -> usize {
        self.live.count()
    }

    /// Creates and starts a container for `owner`, honouring the pull policy and timeouts.
    pub async fn create_workload(
        &self,
        exec: &Execution,
        owner: &WorkloadOwner,
    ) -> anyhow::Result<Arc<dyn Workload>> {
        let started = std::time::Instant::now();
        let work = async {
            container::ensure_image(
                &self.docker,
                &exec.container.image,
                exec.image_pull_policy,
                &owner.connection_id,
            )
            .await?;
            let body = container::container_body(exec, owner, &self.instance);
            let name = match owner.session {
                Some(s) => format!("containerssh-{}-{s}", owner.connection_id),
                None => format!("containerssh-{}", owner.connection_id),
            };
            let created = self
                .docker
                .create_container(
                    Some(bollard::query_parameters::CreateContainerOptions {
                        name: Some(name),
                        ..Default::default()
                    }),
                    body,
                )
                .await
                .with_context(|| {
                    format!("cannot create a container from {}", exec.container.image)
                })?;
            self.live.insert(&created.id);
            let workload = Arc::new(DockerWorkload {
                backend: self.clone(),
                id: created.id.clone(),
                user: exec.container.user.clone(),
                connection_id: owner.connection_id.clone(),
            });
            if let Err(e) = files::place(
                &self.docker,
                &created.id,
                &exec.container.user,
                &owner.files,
            )
            .await
            {
                workload.remove().await;
                return Err(e);
            }
            if let Err(e) = self
                .docker
                .start_container(
                    &created.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
            {
                workload.remove().await;
                return Err(e).context("cannot start the container");
            }
            Ok::<_, anyhow::Error>(workload)
        };
        let workload = tokio::time::timeout(self.timeouts.container_start, work)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "container did not start within {:?} (docker.timeouts.containerStart)",
                    self.timeouts.container_start
                )
            })??;
        tracing::info!(
            connection_id = %owner.connection_id,
            container = %short(&workload.id),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "container started"
        );
        Ok(workload)
    }
}

/// Removes a container by force; true if it is gone (or was already). `connection_id` is for
/// the log ("" for containers of no live connection).
async fn remove_container(
    docker: &Docker,
    id: &str,
    timeouts: &DockerTimeouts,
    connection_id: &str,
) -> bool {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match tokio::time::timeout(
        timeouts.container_stop,
        docker.remove_container(id, Some(options)),
    )
    .await
    {
        Ok(Ok(())) => true,
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => true,
        Ok(Err(e)) => {
            tracing::error!(connection_id, container = %short(id), error = %e, "cannot remove container");
            false
        }
        Err(_) => {
            tracing::error!(connection_id, container = %short(id), "removing the container timed out");
            false
        }
    }
}

pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// One container.
pub struct DockerWorkload {
    backend: DockerBackend,
    id: String,
    user: String,
    connection_id: String,
}

#[async_trait]
impl Workload for DockerWorkload {
    fn id(&self) -> &str {
        &self.id
    }

    async fn start_process(&self, spec: ProcessSpec) -> anyhow::Result<Process> {
        let timeout = self.backend.timeouts.command_start;
        tokio::time::timeout(
            timeout,
            process::start(
                &self.backend.docker,
                &self.id,
                &self.user,
                spec,
                &self.backend.timeouts,
                &self.connection_id,
            ),
        )
        .await
        .map_err(|_| anyhow::anyhow!("command did not start within {timeout:?}"))?
    }

    async fn remove(&self) {
        if remove_container(
            &self.backend.docker,
            &self.id,
            &self.backend.timeouts,
            &self.connection_id,
        )
        .await
        {
            self.backend.live.remove(&self.id);
            tracing::info!(connection_id = %self.connection_id, container = %short(&self.id), "container removed");
        }
    }
}
