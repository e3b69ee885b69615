//! Kubernetes backend (kube): a pod per connection (sessions run as execs in it) or per session,
//! labelled with the connection id and the gateway instance, deleted on disconnect and when it
//! fails to start, orphans reaped by label at start and on shutdown.
mod client;
pub mod config;
pub mod exec;
mod files;
mod forward;
mod lifecycle;
pub mod pod;
mod pool;
mod spdy;
mod throttle;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context};
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::backend::forward::{
    ForwardError, ForwardListener, ForwardStream, ForwardTarget, ListenTarget,
};
use crate::backend::pool::WarmPool;
use crate::backend::registry::{reap_at_start, Backend, BackendType, ConnectFuture};
use crate::backend::settings::downcast;
use crate::backend::{
    helper, same, signal_number, signal_script, ContainerCommands, ExitReason, LiveSet, Process,
    ProcessControl, ProcessSpec, ProgramSpec, Workload, WorkloadOwner, WorkloadSettings,
    LABEL_INSTANCE, LABEL_MANAGED, MARKER_ENV,
};
use crate::config::{
    is_env_name, Config, ExecutionMode, KubernetesConfig, KubernetesPod, KubernetesTimeouts,
};
use crate::observe::Metrics;
use exec::Target;
use throttle::Throttle;

/// The Kubernetes backend's registration (`backend: kubernetes`, ContainerSSH's `kuberun`).
pub static BACKEND: BackendType = BackendType {
    name: "kubernetes",
    aliases: &["kuberun"],
    section: "kubernetes",
    workloads: "pods",
    settings: |config| Arc::new(config.kubernetes.pod.clone()),
    normalise: |_, _| {},
    unused_keys: config::UNUSED_KEYS,
    validate: |config| config.kubernetes.validate(),
    fixed_per_connection: |file, connection| {
        let (file, connection) = (&file.kubernetes, &connection.kubernetes);
        (!same(&file.connection, &connection.connection)
            || !same(&file.timeouts, &connection.timeouts))
        .then(|| {
            "kubernetes.connection and kubernetes.timeouts cannot be changed per connection"
                .to_string()
        })
    },
    connect,
};

fn connect(config: Arc<Config>, instance: String, metrics: Option<Arc<Metrics>>) -> ConnectFuture {
    Box::pin(async move {
        let backend = KubernetesBackend::connect(&config.kubernetes, &instance).await?;
        reap_at_start(&backend, &BACKEND).await;
        backend.start_pool(&config.kubernetes.pod, metrics);
        Ok(Arc::new(backend) as Arc<dyn Backend>)
    })
}

impl WorkloadSettings for KubernetesPod {
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
        self.spec
            .containers
            .get(self.console_container_number)
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl KubernetesPod {
    fn commands(&self) -> ContainerCommands {
        ContainerCommands {
            shell: self.shell_command.clone(),
            subsystems: self.subsystems.clone(),
        }
    }
}

#[async_trait]
impl Backend for KubernetesBackend {
    async fn create_workload(
        &self,
        settings: &dyn WorkloadSettings,
        owner: &WorkloadOwner,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Arc<dyn Workload>> {
        let pod = downcast::<KubernetesPod>(settings, &BACKEND)?;
        KubernetesBackend::create_workload(self, pod, owner, cancel).await
    }
    /// Deletes pods of this instance left behind by an earlier run. Returns how many.
    /// Pods this process created are left to their own removal.
    async fn reap_orphans(&self) -> anyhow::Result<usize> {
        let selector = format!("{LABEL_MANAGED}=true,{LABEL_INSTANCE}={}", self.instance);
        let api = self.api(&self.namespace);
        let names =
            lifecycle::list_names(&api, &self.throttle, &selector, self.timeouts.http).await?;
        let live = self.live.snapshot();
        let namespace = self.namespace.clone();
        let orphans = names
            .into_iter()
            .filter(|name| !live.contains(&format!("{namespace}/{name}")));
        let removed = futures::stream::iter(orphans)
            .map(|name| async move {
                let gone = self.delete(&self.namespace, &name, "").await;
                if gone {
                    tracing::info!(pod = %name, "removed orphaned pod");
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

    /// Stops refilling and deletes the members nobody took (shutdown).
    async fn stop_pool(&self, deadline: std::time::Duration) {
        if let Some(p) = self.pool.get() {
            p.shutdown(deadline).await;
        }
    }

    /// Deletes every pod this process still has (shutdown path), joining deletions already in
    /// flight instead of repeating them.
    async fn remove_all(&self) {
        self.hurry.cancel();
        futures::stream::iter(self.live.snapshot())
            .map(|key| async move {
                if let Some((namespace, name)) = key.split_once('/') {
                    self.delete(namespace, name, "").await;
                }
            })
            .buffer_unordered(PARALLEL_REMOVALS)
            .for_each(|_| std::future::ready(()))
            .await;
    }

    /// Waits for the deletions in flight (shutdown).
    async fn removals_finished(&self) {
        self.live.removals_finished().await;
    }

    fn live_count(&self) -> usize {
        self.live.count()
    }
}

/// The Kubernetes backend of one gateway process.
#[derive(Clone)]
pub struct KubernetesBackend {
    client: Client,
    /// The exec protocol the API server speaks, learnt once for all pods.
    exec_protocol: exec::ExecProtocol,
    instance: Arc<str>,
    timeouts: KubernetesTimeouts,
    throttle: Arc<Throttle>,
    /// The file configuration's namespace, where orphans are looked for.
    namespace: Arc<str>,
    /// Pods created and not yet deleted, as "namespace/name".
    live: LiveSet,
    /// The warm pool, if `kubernetes.pod.pool` asks for one (set once, after the reaping).
    pool: Arc<OnceLock<WarmPool<pool::PodPoolMembers>>>,
    /// Cancelled when shutdown removes everything: deletions still waiting for a graceful end
    /// then force the deletion soon, so shutdown keeps its deadline.
    hurry: CancellationToken,
}

impl KubernetesBackend {
    pub async fn connect(config: &KubernetesConfig, instance: &str) -> anyhow::Result<Self> {
        let client = client::connect(&config.connection, &config.timeouts).await?;
        let version = tokio::time::timeout(config.timeouts.http, client.apiserver_version())
            .await
            .context("kubernetes: the API server did not answer in time")?
            .context("kubernetes: cannot reach the API server")?;
        let exec_protocol = exec::ExecProtocol::for_version(&version.major, &version.minor);
        tracing::info!(version = %version.git_version, exec = exec_protocol.describe(), "connected to the Kubernetes API server");
        Ok(Self {
            client,
            exec_protocol,
            instance: pod::instance_label(instance).into(),
            timeouts: config.timeouts.clone(),
            throttle: Arc::new(Throttle::new(
                config.connection.qps,
                config.connection.burst,
            )),
            namespace: config.pod.metadata.namespace.as_str().into(),
            live: LiveSet::default(),
            pool: Arc::default(),
            hurry: CancellationToken::new(),
        })
    }

    /// Starts the warm pool of `config.pool` (the file's settings); nothing if it is off.
    pub fn start_pool(&self, config: &KubernetesPod, metrics: Option<Arc<Metrics>>) {
        if config.pool.is_off() || self.pool.get().is_some() {
            return;
        }
        // Members are started by a backend without a pool, so they are never taken from one.
        let mut cold = self.clone();
        cold.pool = Arc::default();
        let members = pool::PodPoolMembers::new(cold, config.clone());
        let key = crate::backend::pool::settings_key(config);
        let _ = self
            .pool
            .set(WarmPool::start(members, config.pool.clone(), key, metrics));
    }

    fn api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Deletes a pod and waits until it is gone; true if it is. One deletion per pod at a
    /// time (see `LiveSet`). `connection_id` is for the log ("" for pods of no live connection).
    async fn delete(&self, namespace: &str, name: &str, connection_id: &str) -> bool {
        let key = format!("{namespace}/{name}");
        self.live
            .remove_once(&key, self.deletion(namespace, name, connection_id))
            .await
    }

    /// The deletion of one pod, to run once.
    fn deletion(
        &self,
        namespace: &str,
        name: &str,
        connection_id: &str,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let api = self.api(namespace);
        let throttle = self.throttle.clone();
        let timeouts = self.timeouts.clone();
        let name = name.to_string();
        let connection_id = connection_id.to_string();
        let hurry = self.hurry.clone();
        async move {
            let deleted = lifecycle::delete_and_wait(
                &api,
                &throttle,
                &name,
                timeouts.http,
                timeouts.pod_stop,
                &hurry,
                &connection_id,
            )
            .await;
            match deleted {
                Ok(gone) => {
                    if gone && !connection_id.is_empty() {
                        tracing::info!(connection_id = %connection_id, pod = %name, "pod removed");
                    }
                    gone
                }
                Err(e) => {
                    tracing::error!(connection_id = %connection_id, pod = %name, error = format!("{e:#}"), "cannot delete pod");
                    false
                }
            }
        }
    }

    /// Creates the pod for `owner` and waits until its console container runs. Cancelling
    /// `cancel` (the connection ended) stops the wait; a pod already created is then deleted.
    pub async fn create_workload(
        &self,
        config: &KubernetesPod,
        owner: &WorkloadOwner,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Arc<dyn Workload>> {
        let key = crate::backend::pool::settings_key(config);
        if let Some(member) = self
            .pool
            .get()
            .and_then(|p| p.take_matching(&key, pool::poolable))
        {
            match self.adopt(member, config, owner).await {
                Ok(workload) => return Ok(workload),
                Err(e) => {
                    tracing::warn!(connection_id = %owner.connection_id, error = format!("{e:#}"), "pooled pod unusable; starting one");
                }
            }
        }
        let started = std::time::Instant::now();
        let spec = pod::build(config, owner, &self.instance);
        let namespace = config.metadata.namespace.clone();
        let name = pod::pod_name(config, owner);
        let api = self.api(&namespace);
        self.throttle.acquire().await;
        let created = match tokio::time::timeout(
            self.timeouts.http,
            api.create(&PostParams::default(), &spec),
        )
        .await
        {
            Ok(created) => created
                .with_context(|| format!("cannot create pod {name} in namespace {namespace}"))?,
            Err(_) => {
                // The API server may have created it all the same: its name is known.
                self.live.begin_removal(
                    &format!("{namespace}/{name}"),
                    self.deletion(&namespace, &name, &owner.connection_id),
                );
                bail!("creating the pod timed out");
            }
        };
        self.live.insert(&format!("{namespace}/{name}"));
        let workload = Arc::new(PodWorkload {
            backend: self.clone(),
            target: Target {
                client: self.client.clone(),
                protocol: self.exec_protocol.clone(),
                connection_id: owner.connection_id.clone(),
                namespace: namespace.clone(),
                pod: name.clone(),
                container: pod::console_container(config),
            },
            id: format!("{namespace}/{name}"),
            commands: config.commands(),
            helper: Default::default(),
            gone: AtomicBool::new(false),
        });
        let ready = async {
            lifecycle::wait_running(
                &api,
                &self.throttle,
                &created,
                &workload.target.container,
                self.timeouts.pod_start,
            )
            .await?;
            files::place(&workload.target, &owner.files).await
        };
        let ready = tokio::select! {
            ready = ready => ready,
            _ = cancel.cancelled() => Err(anyhow::anyhow!("the connection ended")),
        };
        if let Err(e) = ready {
            // The client hears why at once; deleting a pod that never ran can take the kubelet
            // a while. The deletion runs on (tracked, and in the live set until the pod is
            // gone, so shutdown still waits).
            let key = workload.id.clone();
            self.live
                .begin_removal(&key, self.deletion(&namespace, &name, &owner.connection_id));
            return Err(e.context(format!("pod {name} did not start")));
        }
        tracing::info!(
            connection_id = %owner.connection_id,
            pod = %name,
            namespace = %namespace,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pod started"
        );
        Ok(workload)
    }
}

/// Pods deleted at once at shutdown and when reaping.
const PARALLEL_REMOVALS: usize = 16;

/// One pod.
pub struct PodWorkload {
    backend: KubernetesBackend,
    target: Target,
    id: String,
    /// How session commands run (the connection's shell and subsystems).
    commands: ContainerCommands,
    /// Set once the forwarding helper is in the pod.
    helper: tokio::sync::OnceCell<()>,
    /// Set once the pod is known to be gone: later removals return at once.
    gone: AtomicBool,
}

impl PodWorkload {
    /// Starts processes in this pod for the helper.
    fn starter(&self) -> helper::Starter {
        let (backend, target) = (self.backend.clone(), self.target.clone());
        Arc::new(move |spec| {
            let (backend, target) = (backend.clone(), target.clone());
            Box::pin(async move { start_process(&backend, &target, spec).await })
        })
    }

    /// Puts the forwarding helper in the pod, once.
    async fn place_helper(&self) -> Result<(), ForwardError> {
        self.backend.throttle.acquire().await;
        self.helper
            .get_or_try_init(|| files::place_helper(&self.target))
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(connection_id = %self.target.connection_id, pod = %self.id,
                    error = format!("{e:#}"), "cannot place the forwarding helper");
                ForwardError::Unavailable(format!("{e:#}"))
            })
    }
}

/// A process in the pod's console container, as an exec.
async fn start_process(
    backend: &KubernetesBackend,
    target: &Target,
    spec: ProcessSpec,
) -> anyhow::Result<Process> {
    let timeout = backend.timeouts.command_start;
    let marker = hex::encode(rand::random::<[u8; 12]>());
    let argv = with_environment(&spec, &marker, &target.connection_id);
    let tty = spec
        .tty
        .as_ref()
        .map(|t| (clamp_size(t.columns), clamp_size(t.rows)));
    backend.throttle.acquire().await;
    let stream = tokio::time::timeout(timeout, exec::open(target, &argv, true, tty))
        .await
        .map_err(|_| anyhow::anyhow!("command did not start within {timeout:?}"))??;
    let control = Arc::new(PodProcess {
        target: target.clone(),
        resize: stream.resize,
        exit: tokio::sync::Mutex::new(stream.exit),
        marker,
        timeouts: backend.timeouts.clone(),
        throttle: backend.throttle.clone(),
    });
    Ok(Process {
        stdin: Box::pin(stream.stdin),
        output: stream.output,
        control,
    })
}

#[async_trait]
impl Workload for PodWorkload {
    fn id(&self) -> &str {
        &self.id
    }

    async fn start_program(&self, program: ProgramSpec) -> anyhow::Result<Process> {
        let spec = self.commands.process(program)?;
        start_process(&self.backend, &self.target, spec).await
    }

    /// To the pod's own localhost through port-forward (nothing needed in the image); other
    /// hosts and Unix sockets through the helper (which needs `sh`, `base64`, `head` and a
    /// writable /tmp in the image).
    async fn open_forward(&self, target: &ForwardTarget) -> Result<ForwardStream, ForwardError> {
        if forward::port_forwardable(target) {
            self.backend.throttle.acquire().await;
            return forward::open(&self.target, target).await;
        }
        self.place_helper().await?;
        helper::open(self.starter(), files::HELPER_PATH, target).await
    }

    async fn open_listener(
        &self,
        target: &ListenTarget,
    ) -> Result<Box<dyn ForwardListener>, ForwardError> {
        self.place_helper().await?;
        helper::listen(self.starter(), files::HELPER_PATH, target).await
    }

    async fn remove(&self) {
        if self.gone.load(Ordering::Acquire) {
            return;
        }
        let gone = self
            .backend
            .delete(
                &self.target.namespace,
                &self.target.pod,
                &self.target.connection_id,
            )
            .await;
        if gone {
            self.gone.store(true, Ordering::Release);
        }
    }
}

/// Exec has no environment parameter: programs start through `env NAME=value... argv`.
/// Names that are not portable are left out (`env` would read `-u` as an option).
fn with_environment(spec: &ProcessSpec, marker: &str, connection_id: &str) -> Vec<String> {
    let mut argv = vec!["env".to_string()];
    for entry in &spec.env {
        match entry.split_once('=') {
            Some((name, _)) if is_env_name(name) => argv.push(entry.clone()),
            _ => {
                tracing::warn!(connection_id, variable = %entry.split('=').next().unwrap_or_default(),
                "environment variable name not passed to the pod")
            }
        }
    }
    if let Some(tty) = &spec.tty {
        argv.push(format!("TERM={}", tty.term));
    }
    argv.push(format!("{MARKER_ENV}={marker}"));
    argv.extend(spec.argv.iter().cloned());
    argv
}

fn clamp_size(n: u32) -> u16 {
    n.clamp(1, u32::from(u16::MAX)) as u16
}

struct PodProcess {
    target: Target,
    resize: Option<tokio::sync::mpsc::Sender<(u16, u16)>>,
    exit: tokio::sync::Mutex<tokio::sync::watch::Receiver<Option<exec::Exit>>>,
    marker: String,
    timeouts: KubernetesTimeouts,
    throttle: Arc<Throttle>,
}

#[async_trait]
impl ProcessControl for PodProcess {
    async fn resize(&self, columns: u32, rows: u32) -> anyhow::Result<()> {
        let sender = self
            .resize
            .as_ref()
            .context("the program has no terminal")?;
        tokio::time::timeout(
            self.timeouts.window,
            sender.send((clamp_size(columns), clamp_size(rows))),
        )
        .await
        .context("resize timed out")?
        .map_err(|_| anyhow::anyhow!("the program's stream is closed"))
    }

    async fn signal(&self, name: &str) -> anyhow::Result<()> {
        let number = signal_number(name).with_context(|| format!("unknown signal {name}"))?;
        let argv = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            signal_script(&self.marker, number),
        ];
        self.throttle.acquire().await;
        tokio::time::timeout(self.timeouts.signal, exec::run(&self.target, &argv))
            .await
            .context("signal delivery timed out")?
            .context("signal delivery failed")
            .map(|_| ())
    }

    async fn exit_reason(&self) -> anyhow::Result<ExitReason> {
        let mut exit = self.exit.lock().await;
        exec::wait_exit(&mut exit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TtySpec;

    #[test]
    fn environment_goes_through_env_with_safe_names_only() {
        let spec = ProcessSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), "echo $A".into()],
            env: vec!["A=1 2".into(), "-u=x".into(), "B=".into()],
            tty: Some(TtySpec {
                term: "xterm".into(),
                columns: 80,
                rows: 24,
            }),
        };
        assert_eq!(
            with_environment(&spec, "m", "c"),
            [
                "env",
                "A=1 2",
                "B=",
                "TERM=xterm",
                "CONTAINERSSH_PROCESS=m",
                "/bin/sh",
                "-c",
                "echo $A"
            ]
        );
    }
}
