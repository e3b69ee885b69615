//! SSH proxy backend (ContainerSSH's `sshproxy`): each SSH connection is passed on to a backing
//! SSH server. The gateway logs in there (its own key or password, the client's user name with
//! `usernamePassThrough`), trusts only the listed host keys, and runs every session as a
//! session channel upstream with the client's request as it came (shell, exec command,
//! subsystem name), terminal, environment, window changes and signals; the upstream exit
//! status or signal comes back. `-L` and direct-streamlocal are opened from the backing server;
//! `-R` and streamlocal-forward listen there, and the client's agent and X display are offered
//! to sessions that ask for them (the backing server's agent and x11 channels come back).
//! The workload is the backing connection; removing it disconnects.
pub mod config;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use russh::client::{self, AuthResult, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelOpenFailure, Disconnect};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::forward::{
    Accepted, ForwardError, ForwardListener, ForwardStream, ForwardTarget, ListenTarget,
};
use crate::backend::registry::{Backend, BackendType, ConnectFuture};
use crate::backend::settings::downcast;
use crate::backend::{
    sig_from_name, sig_to_name, Command, ExitReason, Output, Process, ProcessControl, ProgramSpec,
    Workload, WorkloadOwner, WorkloadSettings,
};
use crate::config::{Config, ExecutionMode};
use crate::observe::Metrics;
use config::SshProxyConfig;

/// The SSH proxy backend's registration (`backend: sshproxy`).
pub static BACKEND: BackendType = BackendType {
    name: "sshproxy",
    aliases: &[],
    section: "sshproxy",
    workloads: "backing connections",
    settings: |config| Arc::new(config.sshproxy.clone()),
    normalise: |_, _| {},
    unused_keys: config::UNUSED_KEYS,
    validate: |config| config.sshproxy.validate(),
    // No client is shared between connections: a config server may send a user elsewhere,
    // as with ContainerSSH, but not with the file's credentials, and not naming files here.
    fixed_per_connection: |file, connection| {
        config::credentials_stay(&file.sshproxy, &connection.sshproxy)
    },
    connect,
};

fn connect(_: Arc<Config>, _: String, _: Option<Arc<Metrics>>) -> ConnectFuture {
    Box::pin(async { Ok(Arc::new(SshProxyBackend::default()) as Arc<dyn Backend>) })
}

impl WorkloadSettings for SshProxyConfig {
    fn backend(&self) -> &'static BackendType {
        &BACKEND
    }
    /// One backing connection per client connection; its sessions are channels there.
    fn mode(&self) -> ExecutionMode {
        ExecutionMode::Connection
    }
    fn disable_command(&self) -> bool {
        false
    }
    /// The backing server decides which subsystems it has.
    fn has_subsystem(&self, _: &str) -> bool {
        true
    }
    fn describe(&self) -> String {
        format!("ssh://{}:{}", self.server, self.port)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The backing connections of this process, so that shutdown can close what is left.
#[derive(Default)]
pub struct SshProxyBackend {
    live: Arc<Mutex<HashMap<String, Arc<Handle<Upstream>>>>>,
}

#[async_trait]
impl Backend for SshProxyBackend {
    async fn create_workload(
        &self,
        settings: &dyn WorkloadSettings,
        owner: &WorkloadOwner,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Arc<dyn Workload>> {
        let config = downcast::<SshProxyConfig>(settings, &BACKEND)?;
        let started = std::time::Instant::now();
        let routes = Routes::default();
        let ended = CancellationToken::new();
        let login = tokio::time::timeout(config.timeout, log_in(config, owner, &routes, &ended));
        let handle = tokio::select! {
            done = login => done.map_err(|_| {
                anyhow::anyhow!("the backing server did not let the gateway in within {:?} (sshproxy.timeout)", config.timeout)
            })??,
            _ = cancel.cancelled() => bail!("the connection ended while the backing connection was being made"),
        };
        let id = format!("{}@{}:{}", owner.connection_id, config.server, config.port);
        let handle = Arc::new(handle);
        if let Ok(mut live) = self.live.lock() {
            live.insert(id.clone(), handle.clone());
        }
        tracing::info!(connection_id = %owner.connection_id, server = %config.describe(),
            elapsed_ms = started.elapsed().as_millis() as u64, "backing connection made");
        Ok(Arc::new(ProxyWorkload {
            id,
            handle,
            live: self.live.clone(),
            gone: AtomicBool::new(false),
            timeout: config.timeout,
            closing: TaskTracker::new(),
            routes,
            x11: Mutex::new(None),
            ended,
            removed: CancellationToken::new(),
        }))
    }

    async fn reap_orphans(&self) -> anyhow::Result<usize> {
        // A backing connection ends with the process that made it: nothing can be left.
        Ok(0)
    }
    fn stop_refilling(&self) {}
    async fn stop_pool(&self, _: Duration) {}

    async fn remove_all(&self) {
        let all: Vec<_> = match self.live.lock() {
            Ok(mut live) => live.drain().map(|(_, h)| h).collect(),
            Err(_) => return,
        };
        futures::future::join_all(all.iter().map(|handle| disconnect(handle))).await;
    }
    async fn removals_finished(&self) {}

    fn live_count(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }
}

/// Connects, checks the host key and logs in: the key first, then the password.
async fn log_in(
    config: &SshProxyConfig,
    owner: &WorkloadOwner,
    routes: &Routes,
    ended: &CancellationToken,
) -> anyhow::Result<Handle<Upstream>> {
    let user = if config.username_pass_through {
        owner.username.clone()
    } else {
        config.username.clone()
    };
    let client_config = Arc::new(client::Config {
        client_id: russh::SshId::Standard(config.client_version.clone().into()),
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    });
    let check = Upstream {
        allowed: config.allowed_host_key_fingerprints.clone(),
        routes: routes.clone(),
        _ended: ended.clone().drop_guard(),
    };
    let address = (config.server.as_str(), config.port);
    let mut handle = client::connect(client_config, address, check)
        .await
        .with_context(|| format!("cannot connect to the backing server {}", config.describe()))?;
    if !config.private_key.is_empty() {
        let key = load_key(&config.private_key).await?;
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten();
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        let result = handle
            .authenticate_publickey(&user, key)
            .await
            .context("the backing server broke off the login")?;
        if matches!(result, AuthResult::Success) {
            return Ok(handle);
        }
    }
    if !config.password.is_empty() {
        let result = handle
            .authenticate_password(&user, &config.password)
            .await
            .context("the backing server broke off the login")?;
        if matches!(result, AuthResult::Success) {
            return Ok(handle);
        }
    }
    bail!(
        "the backing server {} refused the gateway's login as {user:?}",
        config.describe()
    )
}

/// `privateKey`: the key itself, or a file holding it (read off the async workers).
async fn load_key(private_key: &str) -> anyhow::Result<russh::keys::PrivateKey> {
    let text = if private_key.trim_start().starts_with("-----") {
        private_key.to_string()
    } else {
        let path = private_key.to_string();
        tokio::task::spawn_blocking(move || std::fs::read_to_string(&path))
            .await
            .context("reading sshproxy.privateKey")?
            // Not the value: it may be a key that lacks its header.
            .context("cannot read the file sshproxy.privateKey names")?
    };
    russh::keys::decode_secret_key(&text, None).context("sshproxy.privateKey is not a private key")
}

async fn disconnect(handle: &Handle<Upstream>) {
    let _ = tokio::time::timeout(
        CLOSE_LIMIT,
        handle.disconnect(Disconnect::ByApplication, "", "en"),
    )
    .await;
}

/// The gateway's side of a backing connection: trusts only the host keys whose SHA-256
/// fingerprints are listed, and hands connections the backing server accepted for a listener
/// (`-R`, streamlocal-forward) to that listener.
pub struct Upstream {
    allowed: Vec<String>,
    routes: Routes,
    /// Cancelled when russh drops the handler, i.e. when the backing connection is over,
    /// however it ended.
    _ended: tokio_util::sync::DropGuard,
}

/// A listener on the backing server, as its forwarded channels name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Route {
    Tcp(u32),
    Unix(String),
    /// The agent channels of sessions that asked for agent forwarding.
    Agent,
    /// The x11 channels of sessions that asked for X11 forwarding.
    X11,
}

/// A connection the backing server accepted: its channel, and the peer's address and port.
type Incoming = (russh::Channel<client::Msg>, String, u32);

/// Connections accepted upstream waiting for their listener; at most this many per listener
/// (more are closed at once).
const INCOMING_QUEUE: usize = 16;

/// Each route's queue, with the number of the listener that made it.
#[derive(Clone, Default)]
struct Routes(Arc<Mutex<HashMap<Route, RouteQueue>>>);

/// The number of the listener that owns a route, and its queue.
type RouteQueue = (u64, mpsc::Sender<Incoming>);

/// Numbers listeners, so that a late drop never removes its successor's route.
static NEXT_LISTENER: AtomicU64 = AtomicU64::new(0);

impl Routes {
    /// A new route (replacing one for the same listener), its number and its queue.
    fn add(&self, route: Route) -> (u64, mpsc::Receiver<Incoming>) {
        let number = NEXT_LISTENER.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        if let Ok(mut routes) = self.0.lock() {
            routes.insert(route, (number, tx));
        }
        (number, rx)
    }

    /// Removes `route` if listener `number` still owns it.
    fn remove(&self, route: &Route, number: u64) {
        if let Ok(mut routes) = self.0.lock() {
            if routes.get(route).is_some_and(|(n, _)| *n == number) {
                routes.remove(route);
            }
        }
    }

    /// Hands an accepted connection to its listener, or refuses it.
    async fn deliver(&self, route: Route, incoming: Incoming, reply: client::ChannelOpenHandle) {
        let sender = self
            .0
            .lock()
            .ok()
            .and_then(|r| r.get(&route).map(|(_, tx)| tx.clone()));
        let Some(sender) = sender else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        // Confirmed before the listener may write to it.
        reply.accept().await;
        if let Err(e) = sender.try_send(incoming) {
            tracing::warn!(?route, "a forwarded connection from the backing server was dropped: its listener is gone or busy");
            let (channel, _, _) = e.into_inner();
            let _ = channel.close().await;
        }
    }
}

impl client::Handler for Upstream {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => {
                russh::keys::PublicKey::from(cert.public_key().clone())
            }
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let trusted = self.allowed.contains(&fingerprint);
        if !trusted {
            tracing::warn!(%fingerprint, "the backing server's host key is not in sshproxy.allowedHostKeyFingerprints");
        }
        Ok(trusted)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        _connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let incoming = (channel, originator_address.to_string(), originator_port);
        self.routes
            .deliver(Route::Tcp(connected_port), incoming, reply)
            .await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: russh::Channel<client::Msg>,
        socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let incoming = (channel, String::new(), 0);
        self.routes
            .deliver(Route::Unix(socket_path.to_string()), incoming, reply)
            .await;
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: russh::Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.routes
            .deliver(Route::Agent, (channel, String::new(), 0), reply)
            .await;
        Ok(())
    }

    /// An X client of a session that asked for X11 forwarding: to the client's X server,
    /// naming the X client's address and port as the backing server gave them.
    async fn server_channel_open_x11(
        &mut self,
        channel: russh::Channel<client::Msg>,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let incoming = (channel, originator_address.to_string(), originator_port);
        self.routes.deliver(Route::X11, incoming, reply).await;
        Ok(())
    }
}

/// How long closing a session channel upstream may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// One backing connection.
struct ProxyWorkload {
    id: String,
    handle: Arc<Handle<Upstream>>,
    live: Arc<Mutex<HashMap<String, Arc<Handle<Upstream>>>>>,
    gone: AtomicBool,
    /// `sshproxy.timeout`: also bounds opening a session and its requests.
    timeout: Duration,
    /// Closes of session channels whose client left first (see `ProxyProcess`'s drop) and
    /// cancels of listeners dropped.
    closing: TaskTracker,
    routes: Routes,
    /// The connection's X display, once the gateway made one (`open_listener`).
    x11: Mutex<Option<X11Forward>>,
    /// Cancelled once the backing connection is over.
    ended: CancellationToken,
    /// Cancelled when the gateway removes it (before it disconnects).
    removed: CancellationToken,
}

/// X11 forwarding as the client asked for it (the first session's request: one display and
/// cookie per connection, as the gateway keeps them).
///
/// The cookie goes upstream as the client sent it. With `ssh -X`/`-Y` that is already the
/// client's fake cookie: the backing sshd puts it in the session's xauth, X clients there
/// present it, and the client's ssh checks it on each x11 channel and puts the real one in its
/// place. So the gateway, which only relays the channels, needs no fake cookie of its own, and
/// never sees the real one; it is what the Docker backend does too (the client's cookie in the
/// session's `XAUTHORITY`).
#[derive(Debug, Clone)]
struct X11Forward {
    /// The display and authority file the gateway gave the session (`listen::X11Display`):
    /// they mark the sessions that asked for X11, and are not sent upstream (the backing
    /// server sets its own `DISPLAY` and `XAUTHORITY`).
    display: u16,
    xauthority: String,
    protocol: String,
    cookie: String,
}

impl X11Forward {
    /// Takes the gateway's `DISPLAY` and `XAUTHORITY` out of a session's environment; the
    /// screen number if the session asked for X11 (None: it did not).
    fn take_from(&self, env: &mut Vec<String>) -> Option<u32> {
        let xauthority = format!("XAUTHORITY={}", self.xauthority);
        let display = format!("DISPLAY=localhost:{}.", self.display);
        let at = env.iter().rposition(|e| *e == xauthority)?;
        env.remove(at);
        let screen = env
            .iter()
            .rposition(|e| e.starts_with(&display))
            .and_then(|at| env.remove(at).get(display.len()..)?.parse().ok());
        Some(screen.unwrap_or(0))
    }
}

/// Sends a session's environment, agent, X11, terminal and program requests and waits for
/// their answers. Refused agent or X11 forwarding or terminal are warnings, as in OpenSSH's
/// client.
async fn session_requests(
    channel: &mut russh::Channel<client::Msg>,
    program: &ProgramSpec,
    x11: Option<(&X11Forward, u32)>,
    early: &mut VecDeque<Output>,
    exit: &Mutex<Option<ExitReason>>,
) -> anyhow::Result<()> {
    // As OpenSSH sends them: no reply asked; the server's AcceptEnv decides. The backing
    // server names its own agent socket.
    for entry in &program.env {
        if let Some((name, value)) = entry.split_once('=') {
            if !(program.agent && name == "SSH_AUTH_SOCK") {
                channel.set_env(false, name, value).await?;
            }
        }
    }
    if program.agent {
        channel.agent_forward(true).await?;
        if let Err(e) = expect_reply(channel, "agent", early, exit).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "the backing server refused agent forwarding"
            );
        }
    }
    if let Some((x11, screen)) = x11 {
        // Not single-connection: X clients open a connection each (OpenSSH's client never
        // asks for less, and the gateway keeps the display for the connection's life).
        channel
            .request_x11(
                true,
                false,
                x11.protocol.as_str(),
                x11.cookie.as_str(),
                screen,
            )
            .await?;
        if let Err(e) = expect_reply(channel, "x11-req", early, exit).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "the backing server refused X11 forwarding"
            );
        }
    }
    if let Some(tty) = &program.tty {
        channel
            .request_pty(true, &tty.term, tty.columns, tty.rows, 0, 0, &[])
            .await?;
        if let Err(e) = expect_reply(channel, "pty-req", early, exit).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "the backing server refused a terminal"
            );
        }
    }
    let what = match &program.command {
        Command::Shell => {
            channel.request_shell(true).await?;
            "shell"
        }
        Command::Exec(command) => {
            channel.exec(true, command.as_bytes()).await?;
            "exec"
        }
        Command::Subsystem(name) => {
            channel.request_subsystem(true, name.as_str()).await?;
            "subsystem"
        }
    };
    expect_reply(channel, what, early, exit).await
}

/// Reads the answer to a request sent with want-reply; output that came first is kept.
async fn expect_reply(
    channel: &mut russh::Channel<client::Msg>,
    what: &str,
    early: &mut VecDeque<Output>,
    exit: &Mutex<Option<ExitReason>>,
) -> anyhow::Result<()> {
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => return Ok(()),
            Some(ChannelMsg::Failure) => bail!("the backing server refused the {what} request"),
            Some(ChannelMsg::Close) | None => {
                bail!("the backing server closed the session before answering {what}")
            }
            Some(msg) => note(msg, early, exit),
        }
    }
}

/// Keeps output and the exit report of a session message.
fn note(msg: ChannelMsg, output: &mut VecDeque<Output>, exit: &Mutex<Option<ExitReason>>) {
    let reason = match msg {
        ChannelMsg::Data { data } => return output.push_back(Output::Stdout(data)),
        ChannelMsg::ExtendedData { data, ext: 1 } => return output.push_back(Output::Stderr(data)),
        ChannelMsg::ExitStatus { exit_status } => ExitReason::Status(exit_status),
        ChannelMsg::ExitSignal { signal_name, .. } => ExitReason::Signal(sig_to_name(&signal_name)),
        _ => return,
    };
    if let Ok(mut exit) = exit.lock() {
        *exit = Some(reason);
    }
}

#[async_trait]
impl Workload for ProxyWorkload {
    fn id(&self) -> &str {
        &self.id
    }

    async fn start_program(&self, mut program: ProgramSpec) -> anyhow::Result<Process> {
        let x11 = self.x11.lock().ok().and_then(|x| x.clone());
        let x11 = x11.and_then(|x| x.take_from(&mut program.env).map(|screen| (x, screen)));
        let mut channel = tokio::time::timeout(self.timeout, self.handle.channel_open_session())
            .await
            .map_err(|_| anyhow::anyhow!("the backing server did not open a session in time"))?
            .context("the backing server refused a session")?;
        let exit = Arc::new(Mutex::new(None));
        let mut early = VecDeque::new();
        let x11 = x11.as_ref().map(|(x, screen)| (x, *screen));
        let requests = session_requests(&mut channel, &program, x11, &mut early, &exit);
        let started = match tokio::time::timeout(self.timeout, requests).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "the backing server did not answer the session's requests within {:?} (sshproxy.timeout)",
                self.timeout
            )),
        };
        if let Err(e) = started {
            // sshd counts open sessions against MaxSessions: a refused one is closed.
            let _ = tokio::time::timeout(CLOSE_LIMIT, channel.close()).await;
            return Err(e);
        }
        let (read, write) = channel.split();
        let stdin = Box::pin(write.make_writer());
        let closed = Arc::new(AtomicBool::new(false));
        // Output that came with the replies first, then the session's own until it closes
        // (the exit report comes before the close).
        let output = futures::stream::unfold(
            (read, early, exit.clone(), closed.clone()),
            |(mut read, mut pending, exit, closed)| async move {
                loop {
                    if let Some(output) = pending.pop_front() {
                        return Some((Ok(output), (read, pending, exit, closed)));
                    }
                    match read.wait().await {
                        Some(ChannelMsg::Close) | None => {
                            closed.store(true, Ordering::Release);
                            return None;
                        }
                        Some(msg) => note(msg, &mut pending, &exit),
                    }
                }
            },
        );
        Ok(Process {
            stdin,
            output: Box::pin(output),
            control: Arc::new(ProxyProcess {
                write: Some(write),
                exit,
                closed,
                closing: self.closing.clone(),
            }),
        })
    }

    async fn open_forward(&self, target: &ForwardTarget) -> Result<ForwardStream, ForwardError> {
        let channel = match target {
            ForwardTarget::Tcp { host, port } => {
                self.handle
                    .channel_open_direct_tcpip(host.as_str(), *port, "127.0.0.1", 0)
                    .await
            }
            ForwardTarget::Unix(path) => {
                self.handle
                    .channel_open_direct_streamlocal(path.as_str())
                    .await
            }
        };
        match channel {
            Ok(channel) => Ok(Box::pin(channel.into_stream())),
            Err(e) => Err(ForwardError::ConnectFailed(format!(
                "the backing server did not open the connection: {e}"
            ))),
        }
    }

    /// `ssh -R` and streamlocal-forward, as the same requests to the backing server; the
    /// agent and the X display, as requests of the sessions that ask (`start_program`).
    async fn open_listener(
        &self,
        target: &ListenTarget,
    ) -> Result<Box<dyn ForwardListener>, ForwardError> {
        let refused = |e: russh::Error| {
            ForwardError::ConnectFailed(format!("the backing server would not listen: {e}"))
        };
        let route = match target {
            ListenTarget::Tcp { port, .. } => Route::Tcp(*port),
            ListenTarget::Unix(path) => Route::Unix(path.clone()),
            // The backing server makes its own agent socket for each session that asks
            // (`start_program`); its agent channels come here.
            ListenTarget::Agent(_) => Route::Agent,
            // Likewise X11: each session that asks sends x11-req upstream with the client's
            // cookie (see `X11Forward`), and the backing server's x11 channels come here.
            ListenTarget::X11 { .. } => Route::X11,
        };
        // Routed before the request: the first connection may come right after the bind.
        let (number, incoming) = self.routes.add(route.clone());
        if let ListenTarget::X11 {
            display,
            xauthority,
            protocol,
            cookie,
        } = target
        {
            if let Ok(mut x11) = self.x11.lock() {
                *x11 = Some(X11Forward {
                    display: *display,
                    xauthority: xauthority.clone(),
                    protocol: protocol.clone(),
                    cookie: cookie.clone(),
                });
            }
        }
        let listening = match target {
            ListenTarget::Tcp { host, port } => self
                .handle
                .tcpip_forward(host.as_str(), *port)
                .await
                .map(drop),
            ListenTarget::Unix(path) => self.handle.streamlocal_forward(path.as_str()).await,
            ListenTarget::Agent(_) | ListenTarget::X11 { .. } => Ok(()),
        };
        if let Err(e) = listening {
            self.routes.remove(&route, number);
            return Err(refused(e));
        }
        Ok(Box::new(ProxyListener {
            incoming: tokio::sync::Mutex::new(incoming),
            accepted: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            target: target.clone(),
            route,
            number,
            routes: self.routes.clone(),
            handle: self.handle.clone(),
            closing: self.closing.clone(),
        }))
    }

    async fn remove(&self) {
        if self.gone.swap(true, Ordering::AcqRel) {
            return;
        }
        self.removed.cancel();
        if let Ok(mut live) = self.live.lock() {
            live.remove(&self.id);
        }
        self.closing.close();
        let _ = tokio::time::timeout(CLOSE_LIMIT, self.closing.wait()).await;
        disconnect(&self.handle).await;
    }

    fn ended(&self) -> Option<futures::future::BoxFuture<'static, ()>> {
        let ended = self.ended.clone();
        let removed = self.removed.clone();
        Some(Box::pin(async move {
            ended.cancelled().await;
            if removed.is_cancelled() {
                // The gateway ended it: nothing to tell.
                std::future::pending::<()>().await;
            }
        }))
    }
}

/// A listener on the backing server.
struct ProxyListener {
    incoming: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    /// Accepted connections not taken or refused yet.
    accepted: Mutex<HashMap<u64, russh::Channel<client::Msg>>>,
    next_id: AtomicU64,
    target: ListenTarget,
    route: Route,
    number: u64,
    routes: Routes,
    handle: Arc<Handle<Upstream>>,
    closing: TaskTracker,
}

#[async_trait]
impl ForwardListener for ProxyListener {
    async fn accepted(&self) -> Option<Accepted> {
        let (channel, originator_host, originator_port) = self.incoming.lock().await.recv().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut accepted) = self.accepted.lock() {
            accepted.insert(id, channel);
        }
        Some(Accepted {
            id,
            originator_host,
            originator_port,
        })
    }

    async fn take(&self, id: u64) -> Result<ForwardStream, ForwardError> {
        let channel = self.accepted.lock().ok().and_then(|mut a| a.remove(&id));
        match channel {
            Some(channel) => Ok(Box::pin(channel.into_stream())),
            None => Err(ForwardError::ConnectFailed(format!(
                "no accepted connection {id}"
            ))),
        }
    }

    async fn refuse(&self, id: u64) {
        let channel = self.accepted.lock().ok().and_then(|mut a| a.remove(&id));
        if let Some(channel) = channel {
            let _ = channel.close().await;
        }
    }
}

/// The backing server stops listening (connections already taken go on).
impl Drop for ProxyListener {
    fn drop(&mut self) {
        self.routes.remove(&self.route, self.number);
        let (handle, target) = (self.handle.clone(), self.target.clone());
        self.closing.spawn(async move {
            let cancel = async {
                match target {
                    ListenTarget::Tcp { host, port } => {
                        handle.cancel_tcpip_forward(host, port).await
                    }
                    ListenTarget::Unix(path) => handle.cancel_streamlocal_forward(path).await,
                    ListenTarget::Agent(_) | ListenTarget::X11 { .. } => Ok(()),
                }
            };
            let _ = tokio::time::timeout(CLOSE_LIMIT, cancel).await;
        });
    }
}

/// A session upstream: its window changes and signals are sent there.
struct ProxyProcess {
    /// Taken only by the drop.
    write: Option<russh::ChannelWriteHalf<client::Msg>>,
    exit: Arc<Mutex<Option<ExitReason>>>,
    /// Whether the backing server closed the channel.
    closed: Arc<AtomicBool>,
    closing: TaskTracker,
}

impl ProxyProcess {
    fn write(&self) -> anyhow::Result<&russh::ChannelWriteHalf<client::Msg>> {
        self.write
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the session is closed"))
    }
}

/// A session the client left while it ran is closed upstream too (sshd then hangs its program
/// up, as on a client's close); one the backing server closed is left alone, since its channel
/// number may already serve another session.
impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Some(write) = self.write.take() {
            self.closing.spawn(async move {
                let _ = tokio::time::timeout(CLOSE_LIMIT, write.close()).await;
            });
        }
    }
}

#[async_trait]
impl ProcessControl for ProxyProcess {
    async fn resize(&self, columns: u32, rows: u32) -> anyhow::Result<()> {
        Ok(self.write()?.window_change(columns, rows, 0, 0).await?)
    }
    async fn signal(&self, name: &str) -> anyhow::Result<()> {
        Ok(self.write()?.signal(sig_from_name(name)).await?)
    }
    async fn exit_reason(&self) -> anyhow::Result<ExitReason> {
        self.exit
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .ok_or_else(|| anyhow::anyhow!("the backing server reported no exit status"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x11() -> X11Forward {
        X11Forward {
            display: 10,
            xauthority: "/tmp/containerssh-x11.0123456789ab/Xauthority".into(),
            protocol: "MIT-MAGIC-COOKIE-1".into(),
            cookie: "00112233445566778899aabbccddeeff".into(),
        }
    }

    fn env(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_session_that_asked_for_x11_loses_the_gateways_display_and_keeps_its_screen() {
        let mut vars = env(&[
            "LANG=C",
            "DISPLAY=localhost:10.2",
            "XAUTHORITY=/tmp/containerssh-x11.0123456789ab/Xauthority",
        ]);
        assert_eq!(x11().take_from(&mut vars), Some(2));
        assert_eq!(vars, env(&["LANG=C"]));
    }

    #[test]
    fn a_session_that_did_not_ask_for_x11_is_left_alone() {
        // The client's own DISPLAY (SendEnv) is its business; without the gateway's
        // XAUTHORITY the session did not ask for X11.
        let mut vars = env(&["DISPLAY=localhost:10.0", "XAUTHORITY=/elsewhere"]);
        assert_eq!(x11().take_from(&mut vars), None);
        assert_eq!(
            vars,
            env(&["DISPLAY=localhost:10.0", "XAUTHORITY=/elsewhere"])
        );
    }

    #[test]
    fn an_odd_screen_number_is_screen_zero() {
        let mut vars = env(&[
            "DISPLAY=localhost:10.x",
            "XAUTHORITY=/tmp/containerssh-x11.0123456789ab/Xauthority",
        ]);
        assert_eq!(x11().take_from(&mut vars), Some(0));
        assert!(vars.is_empty());
    }
}
