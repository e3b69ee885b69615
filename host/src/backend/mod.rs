//! Backends start the containers that SSH sessions run in.
//!
//! A *workload* is one container (Docker) or pod (Kubernetes) — per connection or per session,
//! depending on the execution mode. Processes (shell, exec, subsystem) are started inside it.
pub mod docker;
pub mod kubernetes;
mod settings;

use std::collections::HashSet;
use std::path::{Component, Path};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::bail;
use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncWrite;

pub use settings::{Backends, WorkloadSettings};

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

/// Workloads a backend created and has not removed yet, so shutdown can remove what is left.
#[derive(Clone, Default)]
pub struct LiveSet(Arc<Mutex<HashSet<String>>>);

impl LiveSet {
    pub fn insert(&self, id: &str) {
        if let Ok(mut l) = self.0.lock() {
            l.insert(id.to_string());
        }
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut l) = self.0.lock() {
            l.remove(id);
        }
    }

    pub fn snapshot(&self) -> HashSet<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.0.lock().map(|l| l.len()).unwrap_or(0)
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

    #[test]
    fn granted_file_paths_are_checked() {
        assert!(checked_file_path("/etc/motd").is_ok());
        assert!(checked_file_path("etc/motd").is_err());
        assert!(checked_file_path("/etc/../root/x").is_err());
        assert!(checked_file_path("/").is_err());
    }
}
