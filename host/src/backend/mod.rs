//! Backends start the containers that SSH sessions run in.
//!
//! A *workload* is one container (Docker) or pod (Kubernetes) — per connection or per session,
//! depending on the execution mode. Processes (shell, exec, subsystem) are started inside it.
pub mod docker;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncWrite;

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
}

/// A process to start inside a workload.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The full argv (the SSH layer already applied `<shell> -c <command>`).
    pub argv: Vec<String>,
    /// Environment from the client and from authentication, "KEY=value".
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
    async fn start_process(&self, spec: ProcessSpec) -> anyhow::Result<Process>;
    /// Removes the workload. Safe to call more than once.
    async fn remove(&self);
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
