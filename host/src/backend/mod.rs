//! Backends start the containers that SSH sessions run in.
//!
//! A *workload* is one container (Docker) or pod (Kubernetes) — per connection or per session,
//! depending on the execution mode. Processes (shell, exec, subsystem) are started inside it.
//! Each backend is one module registered in `registry::REGISTRY`.
pub mod docker;
pub mod forward;
pub mod helper;
pub mod kubernetes;
mod pool;
pub mod registry;
pub mod settings;
pub mod sshproxy;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Component, Path};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::bail;
use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use russh::Sig;
use tokio::io::AsyncWrite;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

pub use registry::{Backend, BackendName, BackendType, Backends};
pub use settings::{Command, ContainerCommands, WorkloadSettings};

/// Labels on every container and pod the gateway creates.
pub const LABEL_MANAGED: &str = "containerssh.managed";
pub const LABEL_INSTANCE: &str = "containerssh.instance";
pub const LABEL_CONNECTION: &str = "containerssh.connection-id";

/// Environment variable carrying the per-process marker used for signal delivery: neither
/// Docker nor Kubernetes can signal an exec, so a helper finds the marked processes in /proc.
pub const MARKER_ENV: &str = "CONTAINERSSH_PROCESS";

/// Who the workload is for; used for names, labels and logs.
#[derive(Debug, Clone)]
pub struct WorkloadOwner {
    pub connection_id: String,
    pub username: String,
    pub remote_address: String,
    /// Session channel number in session mode; `None` for a per-connection workload.
    pub session: Option<u32>,
    /// Files the auth or config server granted: (absolute path, content), placed in the
    /// workload before it starts.
    pub files: Vec<(String, Vec<u8>)>,
    /// Metadata from authentication (for pod labels, annotations and environment).
    pub metadata: Vec<(String, String)>,
}

/// What a session asks a workload to run.
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    /// As the client asked (a forced command arrives as `Exec`).
    pub command: Command,
    /// Environment from the client and from authentication, "KEY=value".
    pub env: Vec<String>,
    pub tty: Option<TtySpec>,
    /// The client's agent is forwarded to this session. Container backends need nothing more
    /// (`SSH_AUTH_SOCK` in `env` names the gateway's socket in the workload, from
    /// `Workload::open_listener`); a backend whose server has its own agent forwarding asks it.
    pub agent: bool,
}

/// A process to start inside a container: a session's program as the container backends run
/// it (`settings::ContainerCommands`), or one of their own helpers.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    /// "KEY=value".
    pub env: Vec<String>,
    pub tty: Option<TtySpec>,
}

#[derive(Debug, Clone)]
pub struct TtySpec {
    pub term: String,
    pub columns: u32,
    pub rows: u32,
}

/// One piece of process output.
#[derive(Debug)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    Status(u32),
    /// Killed by a signal (SSH name without "SIG", e.g. "TERM").
    Signal(String),
}

pub type OutputStream = Pin<Box<dyn Stream<Item = anyhow::Result<Output>> + Send>>;

/// A started process: its stdin, its output, and a control handle.
pub struct Process {
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    pub output: OutputStream,
    pub control: Arc<dyn ProcessControl>,
}

#[async_trait]
pub trait ProcessControl: Send + Sync {
    async fn resize(&self, columns: u32, rows: u32) -> anyhow::Result<()>;
    /// Deliver a signal (SSH name without "SIG") to the process and its descendants.
    async fn signal(&self, name: &str) -> anyhow::Result<()>;
    /// How the process ended; call after its output stream has finished.
    async fn exit_reason(&self) -> anyhow::Result<ExitReason>;
}

#[async_trait]
pub trait Workload: Send + Sync {
    /// Backend-specific id (container id).
    fn id(&self) -> &str;
    /// Starts a session's program.
    async fn start_program(&self, program: ProgramSpec) -> anyhow::Result<Process>;
    /// A connection to `target` made from inside the workload (`ssh -L`, `-D`,
    /// direct-streamlocal).
    async fn open_forward(
        &self,
        target: &forward::ForwardTarget,
    ) -> Result<forward::ForwardStream, forward::ForwardError> {
        let _ = target;
        Err(forward::ForwardError::Unavailable(
            "this backend cannot forward connections".into(),
        ))
    }
    /// A listener inside the workload (`ssh -R`, streamlocal-forward, the agent socket).
    async fn open_listener(
        &self,
        target: &forward::ListenTarget,
    ) -> Result<Box<dyn forward::ForwardListener>, forward::ForwardError> {
        let _ = target;
        Err(forward::ForwardError::Unavailable(
            "this backend cannot listen inside the workload".into(),
        ))
    }
    /// Removes the workload. Idempotent and single-flight: concurrent calls share one removal,
    /// later calls return at once once it is gone.
    async fn remove(&self);
    /// For workloads that can end by themselves (the SSH proxy's backing server closing the
    /// connection): a future that resolves when that happens (never after `remove`); the
    /// client's connection is then ended too, as ContainerSSH does. `None` (the default): it
    /// ends only when removed, and nothing needs to watch it.
    fn ended(&self) -> Option<futures::future::BoxFuture<'static, ()>> {
        None
    }
}

/// The forwarding helper (`helper/`), built for this binary's own target by build.rs.
pub static FORWARDING_HELPER: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/containerssh-helper"));

/// Where the helper goes inside a container: its own directory, so that a volume can hold it
/// when the root file system is read-only.
pub const HELPER_DIR: &str = "/.containerssh";
pub const HELPER_PATH: &str = "/.containerssh/helper";

/// Whether two settings serialise alike (a config answer that repeats the file's value, in
/// whatever spelling, changes nothing).
pub fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Signal names SSH defines (RFC 4254 §6.10) and their numbers on Linux.
pub const SIGNALS: &[(&str, u32)] = &[
    ("ABRT", 6),
    ("ALRM", 14),
    ("FPE", 8),
    ("HUP", 1),
    ("ILL", 4),
    ("INT", 2),
    ("KILL", 9),
    ("PIPE", 13),
    ("QUIT", 3),
    ("SEGV", 11),
    ("TERM", 15),
    ("USR1", 10),
    ("USR2", 12),
];

pub fn signal_number(name: &str) -> Option<u32> {
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

pub fn signal_name(number: u32) -> Option<&'static str> {
    SIGNALS.iter().find(|(_, v)| *v == number).map(|(n, _)| *n)
}

/// russh's signal for an SSH signal name (without "SIG").
pub fn sig_from_name(name: &str) -> Sig {
    match name {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_string()),
    }
}

/// The SSH name (without "SIG") of russh's signal.
pub fn sig_to_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(c) => c.clone(),
    }
}

/// The helper script that signals every process carrying `marker` in its environment
/// (needs `sh`, `tr`, `grep` and `kill` in the image).
pub fn signal_script(marker: &str, number: u32) -> String {
    format!(
        "for d in /proc/[0-9]*; do \
           if tr '\\000' '\\n' < \"$d/environ\" 2>/dev/null | grep -qx '{MARKER_ENV}={marker}'; then \
             kill -{number} \"${{d#/proc/}}\" 2>/dev/null; \
           fi; \
         done"
    )
}

/// 128+N for a named SSH signal N means "killed by signal N" (Docker and the kubelet report a
/// killed process that way; a program that *exits* with such a code looks the same).
pub fn exit_reason_from_code(code: i64) -> ExitReason {
    if code > 128 && code < 128 + 32 {
        if let Some(name) = signal_name((code - 128) as u32) {
            return ExitReason::Signal(name.to_string());
        }
    }
    ExitReason::Status(u32::try_from(code).unwrap_or(255))
}

/// A granted file's path relative to `/`; refuses relative paths and `.`/`..`.
pub fn checked_file_path(path: &str) -> anyhow::Result<&Path> {
    if path.chars().any(char::is_control) {
        bail!("granted file {path:?}: the path must not contain control characters");
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        bail!("granted file {path:?}: the path must be absolute");
    }
    if p.components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        bail!("granted file {path:?}: the path must not contain . or ..");
    }
    let relative = p.strip_prefix("/").unwrap_or(p);
    if relative.as_os_str().is_empty() {
        bail!("granted file {path:?}: not a file path");
    }
    Ok(relative)
}

/// Workloads a backend created and has not removed yet, so shutdown can remove what is left,
/// and the removals in flight. A workload is removed at most once at a time: its connection's
/// cleanup, its session's end and shutdown may all ask, and two overlapping removals make Docker
/// answer "409 removal already in progress". The removal runs in a task of its own (tracked, so
/// shutdown can wait for it), so a caller that is cancelled never abandons a request the engine
/// is still carrying out.
#[derive(Clone, Default)]
pub struct LiveSet {
    inner: Arc<Mutex<LiveInner>>,
    removals: TaskTracker,
}

#[derive(Default)]
struct LiveInner {
    live: HashSet<String>,
    /// Removals in flight: their result (`Some(gone)`) once they finish.
    removing: HashMap<String, watch::Receiver<Option<bool>>>,
}

impl LiveSet {
    pub fn insert(&self, id: &str) {
        if let Ok(mut l) = self.inner.lock() {
            l.live.insert(id.to_string());
        }
    }

    pub fn snapshot(&self) -> HashSet<String> {
        self.inner
            .lock()
            .map(|l| l.live.clone())
            .unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().map(|l| l.live.len()).unwrap_or(0)
    }

    /// Whether `id` is being removed right now.
    pub fn removing(&self, id: &str) -> bool {
        self.inner
            .lock()
            .map(|l| l.removing.contains_key(id))
            .unwrap_or(false)
    }

    /// Starts removing `id` with `removal` (which returns whether it is gone), unless a
    /// removal of `id` is already running: then that one's result is awaited instead and
    /// `removal` is dropped unused. True when the workload is gone.
    pub async fn remove_once<F>(&self, id: &str, removal: F) -> bool
    where
        F: Future<Output = bool> + Send + 'static,
    {
        let mut result = self.begin_removal(id, removal);
        // An error: the removal task ended without a result (it panicked).
        let gone = result
            .wait_for(Option::is_some)
            .await
            .map(|gone| gone.unwrap_or(false))
            .unwrap_or(false);
        gone
    }

    /// Starts removing `id` (as `remove_once`) without waiting for the result.
    pub fn begin_removal<F>(&self, id: &str, removal: F) -> watch::Receiver<Option<bool>>
    where
        F: Future<Output = bool> + Send + 'static,
    {
        let Ok(mut inner) = self.inner.lock() else {
            // A poisoned lock: still remove, without the single-flight guarantee.
            let (tx, rx) = watch::channel(None);
            self.removals.spawn(async move {
                let _ = tx.send(Some(removal.await));
            });
            return rx;
        };
        if let Some(running) = inner.removing.get(id) {
            return running.clone();
        }
        let (tx, rx) = watch::channel(None);
        inner.removing.insert(id.to_string(), rx.clone());
        let set = self.inner.clone();
        let id = id.to_string();
        self.removals.spawn(async move {
            let gone = removal.await;
            if let Ok(mut inner) = set.lock() {
                inner.removing.remove(&id);
                if gone {
                    inner.live.remove(&id);
                }
            }
            let _ = tx.send(Some(gone));
        });
        rx
    }

    /// Waits until every removal started has finished (shutdown: removals started later are
    /// still run, and waited for by the next call).
    pub async fn removals_finished(&self) {
        self.removals.close();
        self.removals.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_status_or_signal() {
        assert_eq!(exit_reason_from_code(0), ExitReason::Status(0));
        assert_eq!(exit_reason_from_code(42), ExitReason::Status(42));
        assert_eq!(
            exit_reason_from_code(143),
            ExitReason::Signal("TERM".into())
        );
        assert_eq!(
            exit_reason_from_code(137),
            ExitReason::Signal("KILL".into())
        );
        // 128+7 (BUS) has no SSH name: reported as a status.
        assert_eq!(exit_reason_from_code(135), ExitReason::Status(135));
        assert_eq!(exit_reason_from_code(-1), ExitReason::Status(255));
    }

    #[tokio::test]
    async fn concurrent_removals_of_one_workload_run_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let set = LiveSet::default();
        set.insert("c1");
        let calls = Arc::new(AtomicUsize::new(0));
        let removal = |calls: Arc<AtomicUsize>| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            true
        };
        let (a, b, c) = tokio::join!(
            set.remove_once("c1", removal(calls.clone())),
            set.remove_once("c1", removal(calls.clone())),
            set.remove_once("c1", removal(calls.clone())),
        );
        assert!(a && b && c);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one removal for three callers"
        );
        assert_eq!(set.count(), 0);
        assert!(!set.removing("c1"));
    }

    #[tokio::test]
    async fn a_cancelled_caller_does_not_abandon_the_removal() {
        let set = LiveSet::default();
        set.insert("c2");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = set.remove_once("c2", async move {
            let _ = rx.await;
            true
        });
        // The caller gives up while the removal is in flight...
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), waiting)
                .await
                .is_err()
        );
        assert!(set.removing("c2"));
        // ...and a second caller joins the same removal rather than starting another.
        let second = set.remove_once("c2", async { panic!("a second removal ran") });
        let _ = tx.send(());
        assert!(second.await);
        set.removals_finished().await;
        assert_eq!(set.count(), 0);
    }

    #[tokio::test]
    async fn a_failed_removal_can_be_tried_again() {
        let set = LiveSet::default();
        set.insert("c3");
        assert!(!set.remove_once("c3", async { false }).await);
        assert_eq!(set.count(), 1, "still live after a failure");
        assert!(set.remove_once("c3", async { true }).await);
        assert_eq!(set.count(), 0);
    }

    #[test]
    fn granted_file_paths_are_checked() {
        assert!(checked_file_path("/etc/motd").is_ok());
        assert!(checked_file_path("etc/motd").is_err());
        assert!(checked_file_path("/etc/../root/x").is_err());
        assert!(checked_file_path("/").is_err());
    }
}
