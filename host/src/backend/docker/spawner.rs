//! Direct start: programs start without `docker exec` when the engine is on this machine.
//!
//! Each container gets a directory of the gateway's runtime directory, mounted read-only at
//! `/.containerssh`: the helper and a listening socket. The helper is the container's main
//! process (`helper spawner`, see helper/src/spawner.rs); it connects to the socket and starts
//! the programs the gateway asks for with the gateway's own pipes as their standard streams.
//! The bytes of a session then pass between the gateway and the program directly: no engine
//! API call to start one, and no engine stream copying every byte (`docker exec` costs about
//! 50 ms to start and dockerd about 2 CPU-seconds per GiB).
//!
//! Terminal sessions still use `docker exec` (the engine allocates the terminal), and so does
//! everything when the engine is remote or the gateway itself runs in a container (the
//! directory would not be the same path for the engine): `docker.connection.directStart`.
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use futures::StreamExt;
use nix::sys::socket::{self as sock, ControlMessage, MsgFlags, SockFlag};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, Interest};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;

use crate::backend::forward::{ForwardError, ForwardStream, ForwardTarget};
use crate::backend::{ExitReason, Output, Process, ProcessControl, ProcessSpec};
use crate::config::{DirectStart, DockerConnection};

/// Where a container sees its directory.
pub const MOUNT_POINT: &str = "/.containerssh";
const SOCKET_NAME: &str = "spawner.sock";
/// Put beside the socket when the gateway gives up waiting for the helper.
const FALLBACK_MARKER: &str = "exec-fallback";
const HELPER_NAME: &str = "helper";
/// What the helper says first (helper/src/spawner.rs).
const HELLO: &[u8] = b"Hcontainerssh-spawner/1";
/// Largest request sent to the helper; larger ones (huge environments) go through `docker
/// exec`. A SOCK_SEQPACKET message must fit the socket's send buffer (about 208 KiB by default).
const MAX_REQUEST: usize = 160 * 1024;
/// The capacity of the stdin and stdout pipes: fewer wake-ups per MiB than the default 64 KiB
/// (uploads 0.74 -> 0.89 of `docker exec -i`). Kernel memory, used only as far as it fills;
/// the system's `fs.pipe-max-size` caps it (the default is kept if the resize is refused).
const PIPE_CAPACITY: i32 = 1024 * 1024;
/// Output read per step.
const READ_CHUNK: usize = 64 * 1024;
/// How long a new container's helper has to connect before its programs fall back to
/// `docker exec` (an image entrypoint that ignores its arguments never starts it).
pub const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// The container command that makes the helper the main process.
pub fn main_command() -> Vec<String> {
    vec![
        format!("{MOUNT_POINT}/{HELPER_NAME}"),
        "spawner".into(),
        format!("{MOUNT_POINT}/{SOCKET_NAME}"),
    ]
}

/// This gateway instance's part of the runtime directory (mode 0700): the helper binary, and a
/// directory per container.
#[derive(Debug)]
pub struct RuntimeDir {
    root: PathBuf,
}

impl RuntimeDir {
    /// The runtime directory if direct start applies to this engine connection; why not
    /// otherwise (for the log). An error only when it was asked for (`on`) and cannot be had.
    pub async fn open(
        connection: &DockerConnection,
        instance: &str,
    ) -> anyhow::Result<Result<Self, String>> {
        let wanted = connection.direct_start;
        if wanted == DirectStart::Off {
            return Ok(Err("docker.connection.directStart is off".into()));
        }
        if wanted == DirectStart::Auto {
            let Some(socket) = connection.host.strip_prefix("unix://") else {
                return Ok(Err("the Docker engine is not on a local socket".into()));
            };
            let socket = PathBuf::from(socket);
            let shared = tokio::task::spawn_blocking(move || engine_shares_files(&socket))
                .await
                .context("checking the Docker engine's file system")?;
            if let Err(why) = shared {
                return Ok(Err(why));
            }
        }
        let base = match &connection.runtime_dir {
            Some(dir) => PathBuf::from(dir),
            None => default_runtime_dir(),
        };
        let safe: String = instance
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let root = base.join(safe);
        let prepared = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || prepare_root(&base, &root)).await
        };
        match prepared.context("preparing the runtime directory")? {
            Ok(()) => Ok(Ok(Self { root })),
            Err(e) if wanted == DirectStart::On => Err(e),
            Err(e) => Ok(Err(format!("{e:#}"))),
        }
    }

    /// A directory and a listening socket for container `name`.
    pub async fn slot(&self, name: &str) -> anyhow::Result<Slot> {
        let (root, dir) = (self.root.clone(), self.root.join(name));
        tokio::task::spawn_blocking(move || Slot::prepare(&root, dir))
            .await
            .context("preparing a container's runtime directory")?
    }

    /// Removes this instance's whole directory, helper included (shutdown, nothing left to
    /// serve): a gateway whose instance id changes does not leave copies behind.
    pub async fn remove(&self) {
        let root = self.root.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(root)).await;
    }

    /// Removes container directories left by an earlier run of this instance, or whose
    /// container is gone (none of `keep`).
    pub async fn sweep(&self, keep: Vec<PathBuf>) {
        let root = self.root.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&root) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) && !keep.contains(&path) {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        })
        .await;
    }
}

/// Whether the engine behind `socket` sees this process's files at the same paths: it runs in
/// the same mount namespace (a gateway in a container next to the host's engine does not).
fn engine_shares_files(socket: &Path) -> Result<(), String> {
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let peer = sock::getsockopt(&stream, sock::sockopt::PeerCredentials)
        .map_err(|e| format!("cannot ask who serves {}: {e}", socket.display()))?;
    if peer.pid() <= 0 {
        return Err("the Docker engine runs outside this process's namespaces".into());
    }
    let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt"));
    match (namespace("self"), namespace(&peer.pid().to_string())) {
        (Ok(ours), Ok(engine)) if ours == engine => Ok(()),
        (Ok(_), Ok(_)) => Err("the Docker engine runs in another mount namespace (a gateway in a container: set directStart: on with a runtimeDir shared at the same path)".into()),
        (_, Err(e)) | (Err(e), _) => Err(format!(
            "cannot tell whether the Docker engine shares this file system ({e}); set docker.connection.directStart: on to use it"
        )),
    }
}

fn default_runtime_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/containerssh");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("containerssh"),
        _ => std::env::temp_dir().join(format!("containerssh-{}", nix::unistd::geteuid())),
    }
}

/// Creates `base` and `root` (0700: nobody else on the host reaches the sockets) and puts the
/// helper in `root`.
fn prepare_root(base: &Path, root: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for dir in [base, root] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Someone else's directory (or a link planted in a shared place such as /tmp) would
        // let them choose what the engine mounts into containers.
        let meta = std::fs::symlink_metadata(dir)?;
        if !meta.is_dir() {
            bail!("{} is not a directory (a link?)", dir.display());
        }
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            bail!("{} belongs to another user", dir.display());
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    let helper = root.join(HELPER_NAME);
    let fresh = root.join(".helper.new");
    std::fs::write(&fresh, crate::backend::FORWARDING_HELPER)
        .with_context(|| format!("cannot write {}", fresh.display()))?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&fresh, &helper)
        .with_context(|| format!("cannot put the helper at {}", helper.display()))?;
    Ok(())
}

/// One container's directory, with the socket its helper connects to.
pub struct Slot {
    pub dir: PathBuf,
    listener: OwnedFd,
}

impl Slot {
    fn prepare(root: &Path, dir: PathBuf) -> anyhow::Result<Slot> {
        let _ = std::fs::remove_dir_all(&dir);
        // 0755: the container's user (any uid) reaches the helper and the socket; the parent
        // (0700) keeps everyone else on the host out.
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let helper = dir.join(HELPER_NAME);
        if std::fs::hard_link(root.join(HELPER_NAME), &helper).is_err() {
            std::fs::copy(root.join(HELPER_NAME), &helper)
                .with_context(|| format!("cannot put the helper in {}", dir.display()))?;
        }
        let path = dir.join(SOCKET_NAME);
        let listener = sock::socket(
            sock::AddressFamily::Unix,
            sock::SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .context("cannot create the spawner socket")?;
        let address = sock::UnixAddr::new(&path).context("spawner socket path")?;
        sock::bind(listener.as_raw_fd(), &address)
            .with_context(|| format!("cannot bind {}", path.display()))?;
        // Any user in the container may connect; only this container sees the socket.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        sock::listen(&listener, sock::Backlog::new(1).context("backlog")?)
            .context("cannot listen on the spawner socket")?;
        Ok(Slot { dir, listener })
    }

    /// The mount that shows the directory in the container.
    pub fn mount(&self) -> bollard::models::Mount {
        bollard::models::Mount {
            target: Some(MOUNT_POINT.into()),
            source: Some(self.dir.to_string_lossy().into_owned()),
            typ: Some(bollard::models::MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        }
    }

    /// Waits for the container's helper (until `limit`) and checks it says hello. The
    /// listener closes either way: nobody else connects later.
    pub async fn accept(self, limit: Duration) -> anyhow::Result<Arc<Spawner>> {
        let listener = register(self.listener).context("registering the spawner socket")?;
        let connect = async {
            let fd = listener
                .async_io(Interest::READABLE, |l| {
                    sock::accept4(
                        l.as_raw_fd(),
                        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                    )
                    .map_err(io::Error::from)
                })
                .await?;
            // SAFETY: accept4 just returned this descriptor; nothing else owns it.
            let socket = register(unsafe { OwnedFd::from_raw_fd(fd) })?;
            let mut hello = [0u8; 64];
            let (n, fds) = socket
                .async_io(Interest::READABLE, |s| receive(s, &mut hello))
                .await?;
            close_off_workers(fds);
            if &hello[..n] != HELLO {
                return Err(io::Error::other("the helper did not introduce itself"));
            }
            // From now on the helper ends (and its container stops) when this connection does;
            // a helper never welcomed stays as an idle main process for `docker exec`.
            socket
                .async_io(Interest::WRITABLE, |s| {
                    sock::send(s.as_raw_fd(), b"W", MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
                })
                .await?;
            Ok(socket)
        };
        let failure = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(socket)) => return Ok(Spawner::new(socket)),
            Ok(Err(e)) => anyhow::Error::new(e).context("the helper's connection failed"),
            Err(_) => anyhow::anyhow!("the helper did not connect within {limit:?}"),
        };
        // Told before the listener closes: the helper stays as the container's idle process
        // for `docker exec` instead of taking the gateway for dead.
        let _ = tokio::fs::write(self.dir.join(FALLBACK_MARKER), b"").await;
        drop(listener);
        Err(failure)
    }
}

/// `fd` in the runtime's reactor.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns `fd`, which stays open (and the same) until it is dropped.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

/// What the helper reported about one program or connection.
enum Event {
    Started,
    Failed(String),
    Ended(ExitReason),
    Connected,
}

/// Programs waiting for the helper's word (the start, then the end), and forwards waiting for
/// their socket.
#[derive(Default)]
struct Waiters {
    started: HashMap<u64, oneshot::Sender<Result<(), String>>>,
    ended: HashMap<u64, oneshot::Sender<ExitReason>>,
    connected: HashMap<u64, oneshot::Sender<Result<OwnedFd, String>>>,
}

/// The connection to one container's helper.
pub struct Spawner {
    socket: Arc<AsyncFd<OwnedFd>>,
    waiters: Arc<Mutex<Waiters>>,
    next_id: AtomicU64,
    /// Reads the helper's reports; ends with the connection or with this spawner.
    _reader: AbortOnDropHandle<()>,
}

impl Spawner {
    fn new(socket: AsyncFd<OwnedFd>) -> Arc<Self> {
        let socket = Arc::new(socket);
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let reader = tokio::spawn(read_reports(socket.clone(), waiters.clone()));
        Arc::new(Self {
            socket,
            waiters,
            next_id: AtomicU64::new(1),
            _reader: AbortOnDropHandle::new(reader),
        })
    }

    /// Starts `spec` (no terminal) in the container. `None` when the request is too large for
    /// the helper (the caller uses `docker exec`).
    pub async fn start(&self, spec: &ProcessSpec) -> anyhow::Result<Option<Process>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = vec![b'S'];
        request.extend_from_slice(&id.to_be_bytes());
        put_strings(&mut request, &spec.argv);
        put_strings(&mut request, &spec.env);
        if request.len() > MAX_REQUEST {
            return Ok(None);
        }
        let (stdin_child, stdin) = pipe_pair(true).context("cannot create a pipe")?;
        let (stdout, stdout_child) = pipe_pair(true).context("cannot create a pipe")?;
        let (stderr, stderr_child) = pipe_pair(false).context("cannot create a pipe")?;
        let (started_tx, started_rx) = oneshot::channel();
        let (ended_tx, ended_rx) = oneshot::channel();
        {
            let mut w = lock(&self.waiters);
            w.started.insert(id, started_tx);
            w.ended.insert(id, ended_tx);
        }
        // Abandoned (the command start timed out, the session went): forget the waiters and
        // kill whatever the helper started for it.
        let mut pending = Pending {
            spawner: self,
            id,
            kill: true,
            settled: false,
        };
        let fds = [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ];
        let sent = self
            .socket
            .async_io(Interest::WRITABLE, |s| {
                sock::sendmsg::<()>(
                    s.as_raw_fd(),
                    &[IoSlice::new(&request)],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            })
            .await;
        // The helper holds its own copies now (or never will).
        drop((stdin_child, stdout_child, stderr_child));
        if let Err(e) = sent {
            pending.kill = false;
            return Err(e).context("cannot reach the container's helper");
        }
        match started_rx.await {
            // Its end is still awaited: the waiter stays.
            Ok(Ok(())) => pending.settled = true,
            Ok(Err(message)) => {
                pending.kill = false;
                bail!("cannot start {:?}: {message}", spec.argv);
            }
            Err(_) => bail!("the container's helper is gone"),
        }
        let stdin = pipe::Sender::from_owned_fd(stdin).context("stdin pipe")?;
        let stdout = pipe::Receiver::from_owned_fd(stdout).context("stdout pipe")?;
        let stderr = pipe::Receiver::from_owned_fd(stderr).context("stderr pipe")?;
        let stdout = tokio_util::io::ReaderStream::with_capacity(stdout, READ_CHUNK).map(|r| {
            r.map(Output::Stdout)
                .context("reading the program's output")
        });
        let stderr = tokio_util::io::ReaderStream::with_capacity(stderr, READ_CHUNK).map(|r| {
            r.map(Output::Stderr)
                .context("reading the program's errors")
        });
        Ok(Some(Process {
            stdin: Box::pin(Stdin(Some(stdin))),
            output: Box::pin(futures::stream::select(stdout, stderr)),
            control: Arc::new(Program {
                id,
                socket: self.socket.clone(),
                ended: tokio::sync::Mutex::new(Ended::Waiting(ended_rx)),
            }),
        }))
    }

    /// A connection to `target` made by the helper from inside the container; the gateway
    /// then reads and writes the socket itself (no process, no relay in between).
    pub async fn connect(&self, target: &ForwardTarget) -> Result<ForwardStream, ForwardError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = vec![b'C'];
        request.extend_from_slice(&id.to_be_bytes());
        match target {
            ForwardTarget::Tcp { host, port } => {
                request.push(0);
                put_strings(&mut request, &[host.clone(), port.to_string()]);
            }
            ForwardTarget::Unix(path) => {
                request.push(1);
                put_strings(&mut request, std::slice::from_ref(path));
            }
        }
        if request.len() > MAX_REQUEST {
            return Err(ForwardError::ConnectFailed("destination too long".into()));
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).connected.insert(id, tx);
        let pending = Pending {
            spawner: self,
            id,
            kill: false,
            settled: false,
        };
        let gone = || ForwardError::Unavailable("the container's helper is gone".into());
        let sent = self
            .socket
            .async_io(Interest::WRITABLE, |s| {
                sock::send(s.as_raw_fd(), &request, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
            })
            .await;
        if sent.is_err() {
            return Err(gone());
        }
        let fd = rx
            .await
            .map_err(|_| gone())?
            .map_err(ForwardError::ConnectFailed)?;
        drop(pending);
        stream_socket(fd).map_err(|e| ForwardError::ConnectFailed(format!("{e:#}")))
    }

    fn forget(&self, id: u64) {
        let mut w = lock(&self.waiters);
        w.started.remove(&id);
        w.ended.remove(&id);
        w.connected.remove(&id);
    }
}

/// A request in flight: dropped before it is settled, it forgets its waiters (and, for a
/// program that may have started, kills it: the helper handles messages in order, so the kill
/// finds the program if it started at all).
struct Pending<'a> {
    spawner: &'a Spawner,
    id: u64,
    kill: bool,
    /// The request succeeded and its remaining waiter belongs to the caller now.
    settled: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.spawner.forget(self.id);
        if self.kill {
            let mut request = vec![b'K'];
            request.extend_from_slice(&self.id.to_be_bytes());
            request.extend_from_slice(&9u32.to_be_bytes());
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            let _ = sock::send(self.spawner.socket.as_raw_fd(), &request, flags);
        }
    }
}

fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    waiters.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the helper's reports until its connection ends; then every waiter learns it is gone
/// (their senders drop).
async fn read_reports(socket: Arc<AsyncFd<OwnedFd>>, waiters: Arc<Mutex<Waiters>>) {
    // Reports are short; a longer failure text is cut (MSG_TRUNC), which is fine.
    let mut buffer = vec![0u8; 1024];
    loop {
        let read = socket
            .async_io(Interest::READABLE, |s| receive(s, &mut buffer))
            .await;
        let (n, mut fds) = match read {
            Ok((0, fds)) => {
                close_off_workers(fds);
                break;
            }
            Err(_) => break,
            Ok(read) => read,
        };
        let report = parse_report(&buffer[..n]);
        let connected = match (&report, fds.len()) {
            (Some((_, Event::Connected)), 1) => fds.pop(),
            _ => None,
        };
        // Whatever else came along is the helper's business, closed where it cannot stall us.
        close_off_workers(fds);
        let Some((id, event)) = report else {
            continue;
        };
        let mut w = lock(&waiters);
        match event {
            Event::Connected => match (w.connected.remove(&id), connected) {
                (Some(tx), Some(fd)) => {
                    if let Err(Ok(fd)) = tx.send(Ok(fd)) {
                        close_off_workers(vec![fd]);
                    }
                }
                // Nobody waits any more (the forward was abandoned).
                (None, Some(fd)) => close_off_workers(vec![fd]),
                _ => {}
            },
            Event::Failed(message) if w.connected.contains_key(&id) => {
                if let Some(tx) = w.connected.remove(&id) {
                    let _ = tx.send(Err(message));
                }
            }
            Event::Started => {
                if let Some(tx) = w.started.remove(&id) {
                    let _ = tx.send(Ok(()));
                }
            }
            Event::Failed(message) => {
                if let Some(tx) = w.started.remove(&id) {
                    let _ = tx.send(Err(message));
                }
            }
            Event::Ended(reason) => {
                if let Some(tx) = w.ended.remove(&id) {
                    let _ = tx.send(reason);
                }
            }
        }
    }
    let mut w = lock(&waiters);
    w.started.clear();
    w.ended.clear();
    w.connected.clear();
}

/// One report and the descriptors that came with it (at most one is expected; any more are
/// closed when dropped).
fn receive(socket: &OwnedFd, buffer: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [io::IoSliceMut::new(buffer)];
    // Room for the most descriptors one message can carry (SCM_MAX_FD): the list is never
    // cut short, so every descriptor the kernel installs is owned (and closed) here.
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 253]);
    let msg = sock::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let sock::ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these descriptors for this process.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}

/// Closes descriptors from the helper on a blocking thread: the helper may hold a copy with
/// SO_LINGER set, which would make the last close wait.
fn close_off_workers(fds: Vec<OwnedFd>) {
    if !fds.is_empty() {
        drop(tokio::task::spawn_blocking(move || drop(fds)));
    }
}

/// The helper's connected socket as a stream, after checking it is one (it comes from inside
/// the container: a stream socket of the container's, or nothing).
fn stream_socket(fd: OwnedFd) -> anyhow::Result<ForwardStream> {
    let stat = nix::sys::stat::fstat(&fd).context("fstat")?;
    if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFSOCK {
        bail!("the helper passed something other than a socket");
    }
    if sock::getsockopt(&fd, sock::sockopt::SockType).context("socket type")?
        != sock::SockType::Stream
    {
        bail!("the helper passed a socket that is not a stream");
    }
    let local: sock::SockaddrStorage =
        sock::getsockname(fd.as_raw_fd()).context("socket address")?;
    match sock::SockaddrLike::family(&local) {
        Some(sock::AddressFamily::Inet | sock::AddressFamily::Inet6) => {
            let _ = sock::setsockopt(&fd, sock::sockopt::TcpNoDelay, &true);
        }
        Some(sock::AddressFamily::Unix) => {}
        _ => bail!("the helper passed a socket of an unexpected family"),
    }
    Ok(Box::pin(SharedSocket(Some(register(fd)?))))
}

/// A stream socket the helper holds a copy of. Its file status flags are shared with the
/// helper, which could clear O_NONBLOCK at any time: every call says MSG_DONTWAIT itself, so
/// no read or write can block a worker thread. The last close goes to a blocking thread.
struct SharedSocket(Option<AsyncFd<OwnedFd>>);

impl SharedSocket {
    fn io(&self) -> io::Result<&AsyncFd<OwnedFd>> {
        self.0
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl tokio::io::AsyncRead for SharedSocket {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let fd = self.io()?;
        loop {
            let mut guard = std::task::ready!(fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let read = guard.try_io(|s| {
                sock::recv(s.as_raw_fd(), unfilled, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
            });
            match read {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for SharedSocket {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let fd = self.io()?;
        loop {
            let mut guard = std::task::ready!(fd.poll_write_ready(cx))?;
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match guard.try_io(|s| sock::send(s.as_raw_fd(), data, flags).map_err(io::Error::from))
            {
                Ok(result) => return std::task::Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let fd = self.io()?;
        std::task::Poll::Ready(
            sock::shutdown(fd.as_raw_fd(), sock::Shutdown::Write).map_err(io::Error::from),
        )
    }
}

impl Drop for SharedSocket {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            let fd = fd.into_inner();
            if tokio::runtime::Handle::try_current().is_ok() {
                close_off_workers(vec![fd]);
            }
        }
    }
}

/// One report of the helper; `None` for anything malformed (the helper runs as the
/// container's user: nothing it says is trusted further than its own programs).
fn parse_report(message: &[u8]) -> Option<(u64, Event)> {
    let (&kind, rest) = message.split_first()?;
    let id = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let body = &rest[8..];
    let event = match kind {
        b'R' => Event::Started,
        b'D' => Event::Connected,
        b'F' => Event::Failed(String::from_utf8_lossy(body).chars().take(512).collect()),
        b'X' => {
            let how = *body.first()?;
            let value = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?);
            Event::Ended(match (how, crate::backend::signal_name(value)) {
                (1, Some(name)) => ExitReason::Signal(name.to_string()),
                (1, None) => ExitReason::Status(128 + (value & 0x7f)),
                _ => ExitReason::Status(value & 0xff),
            })
        }
        _ => return None,
    };
    Some((id, event))
}

fn put_strings(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_be_bytes());
        out.extend_from_slice(item.as_bytes());
    }
}

/// A pipe as (read end, write end), both close-on-exec and blocking (the program's end must
/// be; the gateway's end is made non-blocking when it is wrapped).
fn pipe_pair(bulk: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // Only as root: other users' pipes count against fs.pipe-user-pages-soft by capacity,
    // and past it every new pipe of theirs shrinks to one page.
    if bulk && nix::unistd::geteuid().is_root() {
        let _ = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_CAPACITY));
    }
    Ok((read, write))
}

/// The program's stdin: shutting it down closes the pipe (the program reads EOF).
struct Stdin(Option<pipe::Sender>);

impl AsyncWrite for Stdin {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.0.as_mut() {
            Some(pipe) => std::pin::Pin::new(pipe).poll_write(cx, buf),
            None => std::task::Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.0 = None;
        std::task::Poll::Ready(Ok(()))
    }
}

enum Ended {
    Waiting(oneshot::Receiver<ExitReason>),
    Known(ExitReason),
}

/// A program the helper started.
struct Program {
    id: u64,
    socket: Arc<AsyncFd<OwnedFd>>,
    ended: tokio::sync::Mutex<Ended>,
}

#[async_trait]
impl ProcessControl for Program {
    async fn resize(&self, _columns: u32, _rows: u32) -> anyhow::Result<()> {
        // No terminal here (terminal sessions use `docker exec`).
        Ok(())
    }

    async fn signal(&self, name: &str) -> anyhow::Result<()> {
        let number = crate::backend::signal_number(name)
            .with_context(|| format!("unknown signal {name}"))?;
        let mut request = vec![b'K'];
        request.extend_from_slice(&self.id.to_be_bytes());
        request.extend_from_slice(&number.to_be_bytes());
        self.socket
            .async_io(Interest::WRITABLE, |s| {
                sock::send(s.as_raw_fd(), &request, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
            })
            .await
            .context("cannot reach the container's helper")?;
        Ok(())
    }

    async fn exit_reason(&self) -> anyhow::Result<ExitReason> {
        let mut ended = self.ended.lock().await;
        if let Ended::Waiting(rx) = &mut *ended {
            let reason = rx
                .await
                .map_err(|_| anyhow::anyhow!("the container's helper is gone"))?;
            *ended = Ended::Known(reason);
        }
        match &*ended {
            Ended::Known(reason) => Ok(reason.clone()),
            Ended::Waiting(_) => bail!("the container's helper is gone"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The real helper, run here (not in a container) against a real slot.
    async fn helper_and_spawner() -> (tempfile::TempDir, tokio::process::Child, Arc<Spawner>) {
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join("instance");
        prepare_root(base.path(), &root).expect("runtime dir");
        let slot = Slot::prepare(&root, root.join("c1")).expect("slot");
        let child = spawn_helper(&slot.dir).await;
        let spawner = slot.accept(Duration::from_secs(10)).await.expect("accept");
        (base, child, spawner)
    }

    /// The helper of `dir`, started as `spawner`. Another test thread forking while this one
    /// writes its helper makes the exec fail with "text file busy" for a moment.
    async fn spawn_helper(dir: &Path) -> tokio::process::Child {
        let mut tries = 0;
        loop {
            let started = tokio::process::Command::new(dir.join(HELPER_NAME))
                .arg("spawner")
                .arg(dir.join(SOCKET_NAME))
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn();
            match started {
                Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other.expect("helper"),
            }
        }
    }

    fn spec(script: &str) -> ProcessSpec {
        ProcessSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec!["GREETING=hello there".into()],
            tty: None,
        }
    }

    async fn collect(process: &mut Process) -> (Vec<u8>, Vec<u8>) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(item) = process.output.next().await {
            match item.expect("output") {
                Output::Stdout(b) => out.extend_from_slice(&b),
                Output::Stderr(b) => err.extend_from_slice(&b),
            }
        }
        (out, err)
    }

    #[tokio::test]
    async fn programs_get_their_streams_environment_and_exit_status() {
        let (_dir, _helper, spawner) = helper_and_spawner().await;
        let mut p = spawner
            .start(&spec("cat; echo \"$GREETING\" >&2; exit 3"))
            .await
            .expect("start")
            .expect("not too large");
        let input: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let mut stdin = p.stdin;
            let input = input.clone();
            tokio::spawn(async move {
                stdin.write_all(&input).await.expect("write");
                stdin.shutdown().await.expect("eof");
            })
        };
        p.stdin = Box::pin(tokio::io::sink());
        let (out, err) = collect(&mut p).await;
        writer.await.expect("writer");
        assert_eq!(out, input);
        assert_eq!(err, b"hello there\n");
        assert_eq!(
            p.control.exit_reason().await.expect("exit"),
            ExitReason::Status(3)
        );
    }

    #[tokio::test]
    async fn signals_reach_the_process_group_and_come_back_as_signals() {
        let (_dir, _helper, spawner) = helper_and_spawner().await;
        // A pipeline: the signal must reach the whole group, not only the shell.
        let mut p = spawner
            .start(&spec("echo ready; sleep 30 | cat"))
            .await
            .expect("start")
            .expect("not too large");
        let first = p.output.next().await.expect("output").expect("ok");
        assert!(matches!(first, Output::Stdout(ref b) if b.as_ref() == b"ready\n"));
        p.control.signal("TERM").await.expect("signal");
        let started = std::time::Instant::now();
        collect(&mut p).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            p.control.exit_reason().await.expect("exit"),
            ExitReason::Signal("TERM".into())
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_and_the_helper_goes_on() {
        let (_dir, _helper, spawner) = helper_and_spawner().await;
        let missing = ProcessSpec {
            argv: vec!["/nonexistent/program".into()],
            env: Vec::new(),
            tty: None,
        };
        let err = spawner.start(&missing).await.err().expect("refused");
        assert!(
            format!("{err:#}").contains("/nonexistent/program"),
            "{err:#}"
        );
        let mut p = spawner
            .start(&spec("exit 0"))
            .await
            .expect("start")
            .expect("sized");
        collect(&mut p).await;
        assert_eq!(
            p.control.exit_reason().await.expect("exit"),
            ExitReason::Status(0)
        );
    }

    #[tokio::test]
    async fn forwards_get_the_helpers_socket_and_refusals_say_why() {
        use tokio::io::AsyncReadExt;
        let (dir, _helper, spawner) = helper_and_spawner().await;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        let unix_path = dir.path().join("echo.sock");
        let unix = tokio::net::UnixListener::bind(&unix_path).expect("bind");
        let target = ForwardTarget::Tcp {
            host: "localhost".into(),
            port: port.into(),
        };
        let (mut stream, accepted) = tokio::join!(
            async { spawner.connect(&target).await.expect("tcp forward") },
            tcp.accept()
        );
        let (mut server, _) = accepted.expect("accepted");
        stream.write_all(b"ping").await.expect("write");
        stream.shutdown().await.expect("eof");
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"ping");
        server.write_all(b"pong").await.expect("write");
        drop(server);
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"pong");

        let target = ForwardTarget::Unix(unix_path.to_string_lossy().into_owned());
        let (stream, accepted) = tokio::join!(spawner.connect(&target), unix.accept());
        assert!(stream.is_ok() && accepted.is_ok());

        drop(tcp);
        let refused = spawner
            .connect(&ForwardTarget::Tcp {
                host: "127.0.0.1".into(),
                port: port.into(),
            })
            .await;
        assert!(
            matches!(refused, Err(ForwardError::ConnectFailed(ref m)) if m.contains("refused")),
            "{:?}",
            refused.err()
        );
    }

    /// A helper the gateway gave up on stays as the idle main process (programs come as
    /// execs); one whose gateway is simply gone exits, stopping its container.
    #[tokio::test]
    async fn a_late_helper_idles_only_if_the_gateway_fell_back() {
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join("instance");
        prepare_root(base.path(), &root).expect("runtime dir");
        for (name, gave_up) in [("late", true), ("orphaned", false)] {
            let slot = Slot::prepare(&root, root.join(name)).expect("slot");
            let dir = slot.dir.clone();
            if gave_up {
                assert!(slot.accept(Duration::from_millis(1)).await.is_err());
            } else {
                drop(slot);
            }
            let mut helper = spawn_helper(&dir).await;
            let ended = tokio::time::timeout(Duration::from_millis(500), helper.wait()).await;
            assert_eq!(ended.is_err(), gave_up, "{name}: {ended:?}");
        }
    }

    #[tokio::test]
    async fn a_helper_that_dies_fails_its_programs_instead_of_hanging() {
        let (_dir, mut helper, spawner) = helper_and_spawner().await;
        let p = spawner
            .start(&spec("sleep 30"))
            .await
            .expect("start")
            .expect("sized");
        helper.kill().await.expect("kill");
        let err = tokio::time::timeout(Duration::from_secs(10), p.control.exit_reason())
            .await
            .expect("no hang");
        assert!(err.is_err());
        // Its program still holds the pipes (it is not the helper's to kill here); dropping
        // the process is all the gateway needs.
        drop(p.output);
        assert!(spawner.start(&spec("true")).await.is_err());
    }

    #[test]
    fn reports_are_parsed_and_garbage_is_not() {
        let mut exit = vec![b'X'];
        exit.extend_from_slice(&7u64.to_be_bytes());
        exit.push(0);
        exit.extend_from_slice(&3u32.to_be_bytes());
        assert!(matches!(
            parse_report(&exit),
            Some((7, Event::Ended(ExitReason::Status(3))))
        ));
        let mut killed = exit.clone();
        killed[9] = 1;
        killed[10..].copy_from_slice(&15u32.to_be_bytes());
        assert!(matches!(
            parse_report(&killed),
            Some((7, Event::Ended(ExitReason::Signal(ref s)))) if s == "TERM"
        ));
        for garbage in [&b""[..], b"X", b"X1234567", b"Z12345678", &exit[..10]] {
            assert!(parse_report(garbage).is_none(), "{garbage:?}");
        }
    }
}
