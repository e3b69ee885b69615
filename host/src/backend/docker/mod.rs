//! Docker backend (bollard): one client per process, containers labelled with the connection id
//! and the gateway instance, removed on disconnect, orphans reaped at start and on shutdown.
mod client;
pub mod config;
mod container;
mod files;
mod pool;
mod process;
mod spawner;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context};
use async_trait::async_trait;
use bollard::query_parameters::RemoveContainerOptions;
use bollard::Docker;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

pub use container::host_config;

use crate::backend::forward::{
    ForwardError, ForwardListener, ForwardStream, ForwardTarget, ListenTarget,
};
use crate::backend::pool::WarmPool;
use crate::backend::registry::{reap_at_start, Backend, BackendType, ConnectFuture};
use crate::backend::settings::downcast;
use crate::backend::{
    helper, same, ContainerCommands, LiveSet, Process, ProcessSpec, ProgramSpec, Workload,
    WorkloadOwner, WorkloadSettings, HELPER_PATH,
};
use crate::config::{Config, DockerConfig, DockerTimeouts, Execution, ExecutionMode};
use crate::observe::Metrics;

/// The Docker backend's registration (`backend: docker`, ContainerSSH's `dockerrun`).
pub static BACKEND: BackendType = BackendType {
    name: "docker",
    aliases: &["dockerrun"],
    section: "docker",
    workloads: "containers",
    settings: |config| Arc::new(config.docker.execution.clone()),
    normalise: config::normalise,
    unused_keys: config::UNUSED_KEYS,
    validate: |config| config.docker.validate(),
    fixed_per_connection: |file, connection| {
        (!same(&file.docker.connection, &connection.docker.connection))
            .then(|| "docker.connection cannot be changed per connection".to_string())
    },
    connect,
};

fn connect(config: Arc<Config>, instance: String, metrics: Option<Arc<Metrics>>) -> ConnectFuture {
    Box::pin(async move {
        let backend = DockerBackend::connect(&config.docker, &instance).await?;
        reap_at_start(&backend, &BACKEND).await;
        backend.start_pool(&config.docker.execution, metrics);
        Ok(Arc::new(backend) as Arc<dyn Backend>)
    })
}

impl WorkloadSettings for Execution {
    fn backend(&self) -> &'static BackendType {
        &BACKEND
    }
    fn mode(&self) -> ExecutionMode {
        self.mode
    }
    fn disable_command(&self) -> bool {
        self.disable_command
    }
    fn has_subsystem(&self, name: &str) -> bool {
        self.subsystems.contains_key(name)
    }
    fn describe(&self) -> String {
        self.container.image.clone()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Execution {
    fn commands(&self) -> ContainerCommands {
        ContainerCommands {
            shell: self.shell_command.clone(),
            subsystems: self.subsystems.clone(),
        }
    }
}

#[async_trait]
impl Backend for DockerBackend {
    async fn create_workload(
        &self,
        settings: &dyn WorkloadSettings,
        owner: &WorkloadOwner,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Arc<dyn Workload>> {
        let execution = downcast::<Execution>(settings, &BACKEND)?;
        DockerBackend::create_workload(self, execution, owner, cancel).await
    }
    /// Removes containers of this instance left behind by an earlier run. Returns how many.
    /// Containers this process created are left to their own removal (shared, not repeated,
    /// if it is already running).
    async fn reap_orphans(&self) -> anyhow::Result<usize> {
        let ids = container::list_owned(&self.docker, &self.instance).await?;
        let live = self.live.snapshot();
        self.sweep_runtime_dirs().await;
        let removed = futures::stream::iter(ids.into_iter().filter(|id| !live.contains(id)))
            .map(|id| async move {
                let gone = self.live.remove_once(&id, self.removal(&id, "")).await;
                if gone {
                    tracing::info!(container = %short(&id), "removed orphaned container");
                }
                gone
            })
            .buffer_unordered(PARALLEL_REMOVALS)
            .filter(|gone| std::future::ready(*gone))
            .count()
            .await;
        Ok(removed)
    }

    fn stop_refilling(&self) {
        if let Some(p) = self.pool.get() {
            p.stop_refilling();
        }
    }

    /// Stops refilling and removes the members nobody took (shutdown).
    async fn stop_pool(&self, deadline: std::time::Duration) {
        if let Some(p) = self.pool.get() {
            p.shutdown(deadline).await;
        }
    }

    /// Removes every container this process still has (shutdown path), joining removals
    /// already in flight instead of repeating them.
    async fn remove_all(&self) {
        futures::stream::iter(self.live.snapshot())
            .map(|id| async move { self.live.remove_once(&id, self.removal(&id, "")).await })
            .buffer_unordered(PARALLEL_REMOVALS)
            .for_each(|_| std::future::ready(()))
            .await;
        self.sweep_runtime_dirs().await;
    }

    /// Waits for the removals in flight (shutdown); then, if every container is gone, the
    /// instance's direct-start directory goes too.
    async fn removals_finished(&self) {
        self.live.removals_finished().await;
        if let Some(runtime) = &self.runtime {
            if self.live.count() == 0 && lock(&self.slot_dirs).is_empty() {
                runtime.remove().await;
            }
        }
    }

    fn live_count(&self) -> usize {
        self.live.count()
    }
}

/// The Docker backend of one gateway process.
#[derive(Clone)]
pub struct DockerBackend {
    docker: Docker,
    instance: Arc<str>,
    timeouts: DockerTimeouts,
    /// Containers created and not yet removed, so shutdown can remove what is left.
    live: LiveSet,
    /// The warm pool, if `docker.execution.pool` asks for one (set once, after the reaping).
    pool: Arc<OnceLock<WarmPool<pool::DockerPoolMembers>>>,
    /// Direct start's directories, when the engine is local (`spawner`).
    runtime: Option<Arc<spawner::RuntimeDir>>,
    /// Each live container's directory there, removed with the container.
    slot_dirs: Arc<Mutex<HashMap<String, PathBuf>>>,
    _tls_material: Option<Arc<tempfile::TempDir>>,
}

impl DockerBackend {
    pub async fn connect(config: &DockerConfig, instance: &str) -> anyhow::Result<Self> {
        let connected = client::connect(&config.connection).await?;
        let runtime = match spawner::RuntimeDir::open(&config.connection, instance).await? {
            Ok(dir) => {
                tracing::info!(runtime_dir = ?dir, "programs without a terminal start directly (docker.connection.directStart)");
                Some(Arc::new(dir))
            }
            Err(why) => {
                tracing::info!(reason = %why, "programs start with docker exec");
                None
            }
        };
        Ok(Self {
            docker: connected.docker,
            _tls_material: connected.tls_material.map(Arc::new),
            instance: instance.into(),
            timeouts: config.timeouts.clone(),
            live: LiveSet::default(),
            pool: Arc::default(),
            runtime,
            slot_dirs: Arc::default(),
        })
    }

    /// Removes direct-start directories no live container has.
    async fn sweep_runtime_dirs(&self) {
        if let Some(runtime) = &self.runtime {
            let keep = lock(&self.slot_dirs).values().cloned().collect();
            runtime.sweep(keep).await;
        }
    }

    /// A direct-start directory for container `name`, if direct start applies.
    async fn slot(&self, name: &str, connection_id: &str) -> Option<spawner::Slot> {
        let runtime = self.runtime.as_ref()?;
        match runtime.slot(name).await {
            Ok(slot) => Some(slot),
            Err(e) => {
                tracing::warn!(
                    connection_id,
                    error = format!("{e:#}"),
                    "direct start unavailable for this container; programs start with docker exec"
                );
                None
            }
        }
    }

    /// Starts the warm pool of `execution.pool` (the file's settings); nothing if it is off.
    pub fn start_pool(&self, execution: &Execution, metrics: Option<Arc<Metrics>>) {
        if execution.pool.is_off() || self.pool.get().is_some() {
            return;
        }
        // Members are started by a backend without a pool, so they are never taken from one.
        let mut cold = self.clone();
        cold.pool = Arc::default();
        let members = pool::DockerPoolMembers::new(cold, execution.clone());
        let key = crate::backend::pool::settings_key(execution);
        let _ = self.pool.set(WarmPool::start(
            members,
            execution.pool.clone(),
            key,
            metrics,
        ));
    }

    /// A pooled container for these settings, if the pool has one that fits.
    async fn take_pooled(
        &self,
        exec: &Execution,
        owner: &WorkloadOwner,
    ) -> Option<Arc<dyn Workload>> {
        let key = crate::backend::pool::settings_key(exec);
        let member = self.pool.get()?.take_matching(&key, pool::poolable)?;
        match self.adopt(member, exec, owner).await {
            Ok(workload) => Some(workload),
            Err(e) => {
                tracing::warn!(connection_id = %owner.connection_id, error = format!("{e:#}"), "pooled container unusable; starting one");
                None
            }
        }
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The removal of container `id` (or a container name), to run once.
    fn removal(
        &self,
        id: &str,
        connection_id: &str,
    ) -> impl Future<Output = bool> + Send + 'static {
        let docker = self.docker.clone();
        let timeout = self.timeouts.container_stop;
        let id = id.to_string();
        let connection_id = connection_id.to_string();
        let slot_dirs = self.slot_dirs.clone();
        async move {
            let gone = remove_container(&docker, &id, timeout, &connection_id).await;
            if gone && !connection_id.is_empty() {
                tracing::info!(connection_id = %connection_id, container = %short(&id), "container removed");
            }
            if gone {
                let dir = lock(&slot_dirs).remove(&id);
                if let Some(dir) = dir {
                    remove_dir(dir).await;
                }
            }
            gone
        }
    }

    /// Creates and starts a container for `owner`, honouring the pull policy and timeouts.
    /// Cancelling `cancel` (the connection ended) stops an image pull at once; a container
    /// already created is removed before this returns, so nothing is left behind.
    pub async fn create_workload(
        &self,
        exec: &Execution,
        owner: &WorkloadOwner,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Arc<dyn Workload>> {
        if let Some(workload) = self.take_pooled(exec, owner).await {
            return Ok(workload);
        }
        Ok(self.create_container(exec, owner, cancel).await?)
    }

    /// Creates and starts a new container for `owner` (no pool).
    async fn create_container(
        &self,
        exec: &Execution,
        owner: &WorkloadOwner,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Arc<DockerWorkload>> {
        let started = std::time::Instant::now();
        let limit = self.timeouts.container_start;
        let deadline = tokio::time::Instant::now() + limit;
        let too_slow = || {
            anyhow::anyhow!(
                "container did not start within {limit:?} (docker.timeouts.containerStart)"
            )
        };
        let platform = exec
            .platform
            .as_ref()
            .map(config::Platform::docker_form)
            .unwrap_or_default();
        // Nothing exists yet: the image check and pull may simply be abandoned.
        let image = container::ensure_image(
            &self.docker,
            &exec.container.image,
            exec.image_pull_policy,
            exec.auth.as_ref(),
            &platform,
            &owner.connection_id,
        );
        tokio::select! {
            ready = tokio::time::timeout_at(deadline, image) => ready.map_err(|_| too_slow())??,
            _ = cancel.cancelled() => bail!("the connection ended while the image was being pulled"),
        }
        let name = match owner.session {
            Some(s) => format!("containerssh-{}-{s}", owner.connection_id),
            None => format!("containerssh-{}", owner.connection_id),
        };
        let slot = self.slot(&name, &owner.connection_id).await;
        let body = container::container_body(exec, owner, &self.instance, slot.as_ref());
        // The create request is not abandoned for a cancellation (the engine would carry it
        // out anyway, unseen); past the deadline, the container it may have made is removed by
        // its name.
        let create = self.docker.create_container(
            Some(bollard::query_parameters::CreateContainerOptions {
                name: Some(name.clone()),
                platform: platform.clone(),
            }),
            body,
        );
        let created = match tokio::time::timeout_at(deadline, create).await {
            Ok(Ok(created)) => created,
            Ok(Err(e)) => {
                if let Some(slot) = slot {
                    remove_dir(slot.dir).await;
                }
                return Err(e).with_context(|| {
                    format!("cannot create a container from {}", exec.container.image)
                });
            }
            Err(_) => {
                // The container may exist (by name): it is removed, and never started, so its
                // directory can go now.
                self.live
                    .begin_removal(&name, self.removal(&name, &owner.connection_id));
                if let Some(slot) = slot {
                    remove_dir(slot.dir).await;
                }
                return Err(too_slow());
            }
        };
        self.live.insert(&created.id);
        if let Some(slot) = &slot {
            lock(&self.slot_dirs).insert(created.id.clone(), slot.dir.clone());
        }
        let workload = Arc::new(DockerWorkload::new(
            self.clone(),
            created.id.clone(),
            exec,
            &owner.connection_id,
            slot.is_some(),
        ));
        let start = async {
            files::place(
                &self.docker,
                &created.id,
                &exec.container.user,
                &owner.files,
            )
            .await?;
            self.docker
                .start_container(
                    &created.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .context("cannot start the container")
        };
        let outcome = tokio::select! {
            done = tokio::time::timeout_at(deadline, start) => done.map_err(|_| too_slow()).and_then(|r| r),
            _ = cancel.cancelled() => Err(anyhow::anyhow!("the connection ended while its container was starting")),
        };
        if let Err(e) = outcome {
            workload.remove().await;
            return Err(e);
        }
        if let Some(slot) = slot {
            let accepted = tokio::select! {
                accepted = slot.accept(spawner::CONNECT_LIMIT) => accepted,
                _ = cancel.cancelled() => {
                    workload.remove().await;
                    bail!("the connection ended while its container was starting");
                }
            };
            match accepted {
                Ok(spawner) => {
                    let _ = workload.spawner.set(spawner);
                }
                Err(e) => {
                    tracing::warn!(connection_id = %owner.connection_id, container = %short(&workload.id),
                        error = format!("{e:#}"), "programs in this container start with docker exec (does the image's entrypoint run its arguments?)");
                }
            }
        }
        tracing::info!(
            connection_id = %owner.connection_id,
            container = %short(&workload.id),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "container started"
        );
        Ok(workload)
    }
}

/// Containers removed at once at shutdown and when reaping.
const PARALLEL_REMOVALS: usize = 16;

/// Removes a container by force; true if it is gone (or was already, or another removal of it
/// is under way). `connection_id` is for the log ("" for containers of no live connection).
async fn remove_container(
    docker: &Docker,
    id: &str,
    timeout: std::time::Duration,
    connection_id: &str,
) -> bool {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match tokio::time::timeout(timeout, docker.remove_container(id, Some(options))).await {
        Ok(Ok(())) => true,
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => true,
        // Someone else (another gateway process sharing the instance id, or a request this one
        // abandoned) is removing it: it will be gone.
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        })) if message.contains("already in progress") => {
            tracing::debug!(connection_id, container = %short(id), "container removal already under way");
            true
        }
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a container's direct-start directory (off the async workers).
async fn remove_dir(dir: PathBuf) {
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
}

/// Starts `spec`: through the container's helper when it has one and no terminal is wanted,
/// else as a `docker exec`.
async fn start_process(
    docker: &Docker,
    container: &str,
    user: &str,
    spawner: Option<Arc<spawner::Spawner>>,
    spec: ProcessSpec,
    timeouts: &DockerTimeouts,
    connection_id: &str,
) -> anyhow::Result<Process> {
    let limit = timeouts.command_start;
    let work = async {
        if let (Some(spawner), None) = (&spawner, &spec.tty) {
            if let Some(process) = spawner.start(&spec).await? {
                return Ok(process);
            }
        }
        process::start(docker, container, user, spec, timeouts, connection_id).await
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| anyhow::anyhow!("command did not start within {limit:?}"))?
}

impl DockerWorkload {
    /// A workload for container `id`; `direct` if its directory (with the helper) is mounted.
    fn new(
        backend: DockerBackend,
        id: String,
        exec: &Execution,
        connection_id: &str,
        direct: bool,
    ) -> Self {
        let helper = tokio::sync::OnceCell::new();
        if direct {
            // The helper is in the mounted directory already.
            let _ = helper.set(());
        }
        Self {
            backend,
            id,
            user: exec.container.user.clone(),
            commands: exec.commands(),
            connection_id: connection_id.to_string(),
            gone: AtomicBool::new(false),
            helper_volume: !direct && container::helper_volume(exec),
            direct,
            helper,
            spawner: OnceLock::new(),
        }
    }

    /// Starts processes in this container for the helper (which outlive no borrow of it).
    fn starter(&self) -> helper::Starter {
        let (docker, id, user) = (
            self.backend.docker.clone(),
            self.id.clone(),
            self.user.clone(),
        );
        let (timeouts, connection_id) = (self.backend.timeouts.clone(), self.connection_id.clone());
        let spawner = self.spawner.get().cloned();
        Arc::new(move |spec| {
            let (docker, id, user) = (docker.clone(), id.clone(), user.clone());
            let (timeouts, connection_id) = (timeouts.clone(), connection_id.clone());
            let spawner = spawner.clone();
            Box::pin(async move {
                start_process(
                    &docker,
                    &id,
                    &user,
                    spawner,
                    spec,
                    &timeouts,
                    &connection_id,
                )
                .await
            })
        })
    }

    /// Puts the forwarding helper in the container, once.
    async fn place_helper(&self) -> Result<(), ForwardError> {
        let docker = &self.backend.docker;
        self.helper
            .get_or_try_init(|| files::place_helper(docker, &self.id, self.helper_volume))
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(connection_id = %self.connection_id, container = %short(&self.id),
                    error = format!("{e:#}"), "cannot place the forwarding helper");
                ForwardError::Unavailable(format!("{e:#}"))
            })
    }
}

/// One container.
pub struct DockerWorkload {
    backend: DockerBackend,
    id: String,
    user: String,
    /// How session commands run (the connection's shell and subsystems).
    commands: ContainerCommands,
    connection_id: String,
    /// Set once the container is known to be gone: later removals return at once.
    gone: AtomicBool,
    /// Whether the forwarding helper goes into its own volume (read-only root file system).
    helper_volume: bool,
    /// Set once the forwarding helper is in place.
    helper: tokio::sync::OnceCell<()>,
    /// Its direct-start directory (with the helper) is mounted at `/.containerssh`.
    direct: bool,
    /// The helper that starts programs directly, once it has connected (`spawner`).
    spawner: OnceLock<Arc<spawner::Spawner>>,
}

#[async_trait]
impl Workload for DockerWorkload {
    fn id(&self) -> &str {
        &self.id
    }

    async fn start_program(&self, program: ProgramSpec) -> anyhow::Result<Process> {
        let spec = self.commands.process(program)?;
        start_process(
            &self.backend.docker,
            &self.id,
            &self.user,
            self.spawner.get().cloned(),
            spec,
            &self.backend.timeouts,
            &self.connection_id,
        )
        .await
    }

    async fn open_forward(&self, target: &ForwardTarget) -> Result<ForwardStream, ForwardError> {
        if let Some(spawner) = self.spawner.get() {
            return spawner.connect(target).await;
        }
        self.place_helper().await?;
        helper::open(self.starter(), HELPER_PATH, target).await
    }

    async fn open_listener(
        &self,
        target: &ListenTarget,
    ) -> Result<Box<dyn ForwardListener>, ForwardError> {
        self.place_helper().await?;
        helper::listen(self.starter(), HELPER_PATH, target).await
    }

    async fn remove(&self) {
        if self.gone.load(Ordering::Acquire) {
            return;
        }
        let removal = self.backend.removal(&self.id, &self.connection_id);
        if self.backend.live.remove_once(&self.id, removal).await {
            self.gone.store(true, Ordering::Release);
        }
    }
}
