//! The Docker backend's warm pool: containers created and started from the file's
//! `docker.execution` ahead of logins. A login whose effective execution settings are the file's
//! takes one: it is renamed after the connection, the login's files are placed in it, and from
//! then on it is that connection's container like any other (removed on disconnect).
//!
//! Docker cannot change a container's labels once created, so a pooled container keeps the
//! `containerssh.connection-id` label of its pool slot (`pool-<hex>`); its name says which
//! connection holds it, and the log records the pairing.
use std::sync::Arc;

use anyhow::Context;
use bollard::query_parameters::RenameContainerOptions;
use tokio_util::sync::CancellationToken;

use super::{files, short, DockerBackend, DockerWorkload};
use crate::backend::pool::{slot_id, uses_any, BoxFuture, MissReason, PoolBackend};
use crate::backend::{Workload, WorkloadOwner};
use crate::config::Execution;

/// A started container nobody holds yet.
pub struct PooledContainer {
    id: String,
    /// Its helper, when programs start directly.
    spawner: Option<Arc<super::spawner::Spawner>>,
    direct: bool,
}

/// Starts members from the file's execution settings.
pub struct DockerPoolMembers {
    /// A backend without a pool of its own (members are started cold).
    backend: DockerBackend,
    execution: Execution,
}

impl DockerPoolMembers {
    pub fn new(backend: DockerBackend, execution: Execution) -> Self {
        Self { backend, execution }
    }
}

impl PoolBackend for DockerPoolMembers {
    type Member = PooledContainer;

    fn kind(&self) -> &'static str {
        "docker"
    }

    fn start(&self, cancel: CancellationToken) -> BoxFuture<anyhow::Result<PooledContainer>> {
        let backend = self.backend.clone();
        let execution = self.execution.clone();
        Box::pin(async move {
            let owner = WorkloadOwner {
                connection_id: slot_id(),
                username: String::new(),
                remote_address: String::new(),
                session: None,
                files: Vec::new(),
                metadata: Vec::new(),
            };
            let workload = backend
                .create_container(&execution, &owner, &cancel)
                .await?;
            Ok(PooledContainer {
                id: workload.id().to_string(),
                spawner: workload.spawner.get().cloned(),
                direct: workload.direct,
            })
        })
    }

    fn discard(&self, member: PooledContainer) -> BoxFuture<()> {
        let backend = self.backend.clone();
        Box::pin(async move {
            let removal = backend.removal(&member.id, "");
            backend.live.remove_once(&member.id, removal).await;
        })
    }
}

/// Whether a container started before the login can serve these settings: labels and the
/// container environment from the login's metadata can only be set when it is created.
pub fn poolable(key: &serde_json::Value) -> Result<(), MissReason> {
    if uses_any(
        key,
        &["exposeAuthMetadataAsLabels", "exposeAuthMetadataAsEnv"],
    ) {
        Err(MissReason::NotPoolable)
    } else {
        Ok(())
    }
}

impl DockerBackend {
    /// Makes `member` the container of `owner`: named after the connection, the login's files
    /// placed before any program starts. On failure the member is removed.
    pub(super) async fn adopt(
        &self,
        member: PooledContainer,
        execution: &Execution,
        owner: &WorkloadOwner,
    ) -> anyhow::Result<Arc<dyn Workload>> {
        let started = std::time::Instant::now();
        let workload = Arc::new(DockerWorkload::new(
            self.clone(),
            member.id,
            execution,
            &owner.connection_id,
            member.direct,
        ));
        if let Some(spawner) = member.spawner {
            let _ = workload.spawner.set(spawner);
        }
        let name = match owner.session {
            Some(s) => format!("containerssh-{}-{s}", owner.connection_id),
            None => format!("containerssh-{}", owner.connection_id),
        };
        let prepare = async {
            self.docker
                .rename_container(&workload.id, RenameContainerOptions { name })
                .await
                .context("cannot rename the pooled container")?;
            files::place(
                &self.docker,
                &workload.id,
                &execution.container.user,
                &owner.files,
            )
            .await
        };
        match tokio::time::timeout(self.timeouts.container_start, prepare).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                workload.remove().await;
                return Err(e);
            }
            Err(_) => {
                workload.remove().await;
                anyhow::bail!("preparing the pooled container timed out");
            }
        }
        tracing::info!(
            connection_id = %owner.connection_id,
            container = %short(&workload.id),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "container taken from the warm pool"
        );
        Ok(workload)
    }
}
