//! Connection audit logs: `<directory>/<connection id>.jsonl`, one JSON object per event.
//! A writer task per connection appends the events in order, whole lines, on the blocking
//! pool; the connection waits until an event is written before it acts on it (see
//! `ConnectionAudit::written`), so a crash of the gateway loses nothing it acted on. The file
//! is synced to disk when the connection ends, before its cleanup counts as done. With
//! `storage: s3` the files are staged in `s3.local` and uploaded then (see `s3`).
//!
//! With `format: binary` the same writer also keeps `<directory>/<connection id>`, the
//! connection in ContainerSSH's binary format (see `binary`): each event's messages go in the
//! same job as its JSON line, so both files hold the same events in the same order and an
//! event counts as written only once it is in both; the sessions' input and output go through
//! the same queue (`SessionIo`), with a bounded share of it.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use super::binary::{self, BinaryFile, Stream, Translator};
use super::cast::Recording as CastRecording;
use super::s3::S3Storage;
use super::Recording;
use crate::config::AuditConfig;

/// The gateway's audit settings; opens one log per connection.
pub struct Auditor {
    directory: PathBuf,
    record_sessions: bool,
    record_input: bool,
    /// `format: binary`: also write ContainerSSH's binary log, with the sessions' I/O as
    /// `intercept` asks (stdin, stdout, stderr).
    binary: Option<Intercept>,
    /// `storage: s3`: uploads the files of each connection that ends.
    s3: Option<Arc<S3Storage>>,
}

/// How long a connection's end waits for its recordings to be written before uploading.
const RECORDINGS_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl Auditor {
    /// `None` when auditing is off. Creates the directory (mode 0700) if needed.
    pub fn new(config: &AuditConfig) -> anyhow::Result<Option<Arc<Self>>> {
        if !config.enable {
            return Ok(None);
        }
        let (key, directory, s3) = if config.storage == "s3" {
            let s3 = S3Storage::new(&config.s3)?;
            ("audit.s3.local", config.s3.local.clone(), Some(s3))
        } else {
            ("audit.file.directory", config.file.directory.clone(), None)
        };
        std::fs::create_dir_all(&directory)
            .with_context(|| format!("{key}: cannot create {}", directory.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("{key}: cannot restrict {}", directory.display()))?;
        if let Some(s3) = &s3 {
            // Files an earlier run left are uploaded now; this run's are claimed as created.
            s3.start()?;
        }
        // With `binary`, no asciicast recordings (they are ContainerSSH's `asciinema` format);
        // the JSON log is still written: the S3 metadata (also after a restart), `audit
        // replay` and the events ContainerSSH has no message for (policy verdicts, backend
        // errors, forwards) come from it.
        let binary = (config.format == "binary").then_some(Intercept {
            stdin: config.intercept.stdin,
            stdout: config.intercept.stdout,
            stderr: config.intercept.stderr,
            forwarding: config.intercept.forwarding,
        });
        if config.intercept.forwarding && binary.is_none() {
            // As in ContainerSSH, whose asciinema encoder records terminal sessions only.
            tracing::warn!("audit.intercept.forwarding: forwarded connections are recorded in the binary format only (audit.format: binary); with asciinema they are not");
        }
        Ok(Some(Arc::new(Self {
            directory,
            record_sessions: config.format == "asciinema" && config.intercept.stdout,
            record_input: config.intercept.stdin,
            binary,
            s3,
        })))
    }

    /// The log of a new connection. Failing to create it refuses the connection: an audited
    /// gateway never serves unaudited.
    pub async fn open(self: &Arc<Self>, connection_id: &str) -> anyhow::Result<ConnectionAudit> {
        let name = format!("{connection_id}.jsonl");
        let path = self.directory.join(&name);
        if let Some(s3) = &self.s3 {
            s3.claim(&name);
        }
        // ContainerSSH's name for its binary log: the connection ID, no extension.
        let binary_name = self.binary.map(|_| connection_id.to_string());
        let binary_path = binary_name.as_ref().map(|n| self.directory.join(n));
        let mut names = vec![name];
        names.extend(binary_name.clone());
        if let Some(s3) = &self.s3 {
            for name in &names[1..] {
                s3.claim(name);
            }
        }
        let created = tokio::task::spawn_blocking(move || {
            let file = create_private(&path)?;
            let binary = match binary_path {
                Some(binary_path) => {
                    let created = create_private(&binary_path).and_then(|f| {
                        BinaryFile::start(f).with_context(|| {
                            format!("cannot write audit file {}", binary_path.display())
                        })
                    });
                    match created {
                        Ok(b) => Some(b),
                        Err(e) => {
                            // No connection: its JSON log stays empty.
                            let _ = std::fs::remove_file(&path);
                            return Err(e);
                        }
                    }
                }
                None => None,
            };
            anyhow::Ok((file, binary))
        })
        .await
        .context("cannot create the audit log")
        .and_then(|r| r);
        let (file, binary_file) = match created {
            Ok(files) => files,
            Err(e) => {
                if let Some(s3) = &self.s3 {
                    s3.release(&names);
                }
                return Err(e);
            }
        };
        // Session I/O (binary only) has its own share of the queue on top of the events'.
        let io_share = if self.binary.is_some() { IO_QUEUE } else { 0 };
        let (queue, jobs) = mpsc::channel(QUEUE + io_share);
        let (written_tx, written) = watch::channel(0);
        let failed = Arc::new(AtomicBool::new(false));
        // The writer ends by itself once the log is closed or dropped (its queue closes).
        tokio::spawn(write_jobs(
            Files {
                json: file,
                binary: binary_file,
            },
            jobs,
            written_tx,
            failed.clone(),
            connection_id.to_string(),
        ));
        Ok(ConnectionAudit {
            auditor: self.clone(),
            connection_id: connection_id.to_string(),
            forwards: std::sync::atomic::AtomicU64::new(0),
            queue,
            sequence: Mutex::new(0),
            written,
            closed: tokio::sync::OnceCell::new(),
            failed,
            recordings: TaskTracker::new(),
            // Uploaded with the connection's recordings: before its log, with its metadata.
            recording_files: Mutex::new(binary_name.into_iter().collect()),
            binary: self.binary.map(|intercept| BinaryLog {
                translator: Mutex::new(Translator::new(connection_id)),
                intercept,
                io_slots: Arc::new(Semaphore::new(IO_QUEUE)),
            }),
        })
    }
}

/// The first channel ID of forwarded connections in the binary log (sessions count from 0).
const FORWARD_CHANNELS: u64 = 1 << 32;

/// Which streams of a session the binary log records (`audit.intercept`).
#[derive(Clone, Copy, Debug)]
struct Intercept {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    /// The bytes of forwarded connections (`-L`, `-D`, `-R`, X11, agent).
    forwarding: bool,
}

/// The binary log's side of a connection's audit.
struct BinaryLog {
    /// Used under the `sequence` lock, so messages are made in the queue's order.
    translator: Mutex<Translator>,
    intercept: Intercept,
    /// The share of the queue that session I/O may take: events always find room.
    io_slots: Arc<Semaphore>,
}

/// A new file, readable only by the gateway's user, never an existing one (blocking).
pub(super) fn create_private(path: &std::path::Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create audit file {}", path.display()))
}

/// Events in flight between the connection and its log writer. Producers wait for their
/// events to be written (see `written`), so only a few are ever queued; a full queue ends the
/// connection rather than losing an event.
const QUEUE: usize = 256;
/// Chunks of session I/O in flight to the binary log, besides the events; a session waits for
/// room (back-pressure) rather than dropping any.
const IO_QUEUE: usize = 64;

enum Job {
    /// One event: its sequence number, its line and its binary messages (CBOR, maybe none).
    Line(u64, Vec<u8>, Vec<u8>),
    /// Session I/O for the binary log, holding its place in the I/O share of the queue.
    Io(Vec<u8>, OwnedSemaphorePermit),
    /// Write what is queued, sync the file to disk, answer, and stop.
    Close(oneshot::Sender<()>),
}

/// The audit log of one connection. Events are numbered and queued in order; a writer task
/// appends them (file I/O on the blocking pool, never on the async workers).
pub struct ConnectionAudit {
    auditor: Arc<Auditor>,
    connection_id: String,
    /// Forwarded connections recorded so far (their channel IDs in the binary log).
    forwards: std::sync::atomic::AtomicU64,
    queue: mpsc::Sender<Job>,
    /// The number of the last event queued; held while queueing so numbers follow the queue.
    sequence: Mutex<u64>,
    /// The number of the last event written.
    written: watch::Receiver<u64>,
    /// Set once the log was flushed, synced and closed.
    closed: tokio::sync::OnceCell<()>,
    /// Set when the log or a recording could not be written; shared with recording writers.
    failed: Arc<AtomicBool>,
    /// The writers of this connection's recordings.
    recordings: TaskTracker,
    /// The recordings' file names (and the binary log's).
    recording_files: Mutex<Vec<String>>,
    /// `format: binary`.
    binary: Option<BinaryLog>,
}

impl ConnectionAudit {
    /// Queues one event without waiting (for synchronous callers; `written` waits for it).
    /// `fields` (a JSON object) must never hold a secret. An event that cannot be queued marks
    /// the log failed, which ends the connection.
    pub fn record(&self, event: &str, fields: Value) {
        let now = std::time::SystemTime::now();
        let queued = match self.sequence.lock() {
            Ok(mut sequence) => {
                let Some(messages) = self.messages(now, event, &fields) else {
                    drop(sequence);
                    return self.fail(event, "cannot encode the binary audit log");
                };
                let line = self.line(now, event, fields);
                let queued = self
                    .queue
                    .try_send(Job::Line(*sequence + 1, line, messages));
                if queued.is_ok() {
                    *sequence += 1;
                }
                queued.map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => "the audit queue is full",
                    mpsc::error::TrySendError::Closed(_) => "the audit log is already closed",
                })
            }
            Err(_) => Err("audit log lock poisoned"),
        };
        if let Err(why) = queued {
            self.fail(event, why);
        }
    }

    /// Queues one event, waiting for room, and waits until it is written.
    pub async fn record_written(&self, event: &str, fields: Value) {
        match self.queue.reserve().await {
            Ok(permit) => match self.sequence.lock() {
                Ok(mut sequence) => {
                    let now = std::time::SystemTime::now();
                    let Some(messages) = self.messages(now, event, &fields) else {
                        drop(sequence);
                        return self.fail(event, "cannot encode the binary audit log");
                    };
                    let line = self.line(now, event, fields);
                    *sequence += 1;
                    permit.send(Job::Line(*sequence, line, messages));
                }
                Err(_) => self.fail(event, "audit log lock poisoned"),
            },
            Err(_) => self.fail(event, "the audit log is already closed"),
        }
        self.written().await;
    }

    /// Waits until every event queued so far is written (or the log failed).
    pub async fn written(&self) {
        let target = self.sequence.lock().map(|s| *s).unwrap_or(0);
        let mut written = self.written.clone();
        // An error means the writer stopped (closed, or its task died): nothing to wait for.
        let _ = written.wait_for(|w| *w >= target).await;
    }

    /// Writes what is queued, syncs the log to disk and closes it (end of connection). Later
    /// events cannot be written and are reported in the gateway's log. With `storage: s3`,
    /// then uploads the connection's files (once its recordings are written) and waits for that.
    pub async fn close(&self) {
        self.closed
            .get_or_init(|| async {
                let (done, answered) = oneshot::channel();
                if self.queue.send(Job::Close(done)).await.is_ok() {
                    let _ = answered.await;
                }
                if let Some(s3) = &self.auditor.s3 {
                    self.recordings.close();
                    let written =
                        tokio::time::timeout(RECORDINGS_GRACE, self.recordings.wait()).await;
                    let recordings = self
                        .recording_files
                        .lock()
                        .map(|r| r.clone())
                        .unwrap_or_default();
                    if written.is_err() {
                        tracing::warn!(connection_id = %self.connection_id,
                            "session recordings still being written; the connection's audit files are uploaded once they are (or at the next start)");
                        s3.upload_connection_later(
                            self.connection_id.clone(),
                            recordings,
                            self.recordings.clone(),
                        );
                        return;
                    }
                    s3.upload_connection(&self.connection_id, recordings).await;
                }
            })
            .await;
    }

    fn fail(&self, event: &str, why: &str) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(connection_id = %self.connection_id, event, "cannot write the audit log: {why}");
        } else {
            tracing::warn!(connection_id = %self.connection_id, event, "audit event not written: {why}");
        }
    }

    /// The binary log's messages for an event (CBOR; empty without `format: binary`). Called
    /// under the `sequence` lock. `None`: they could not be encoded.
    fn messages(&self, at: std::time::SystemTime, event: &str, fields: &Value) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let Some(binary) = &self.binary else {
            return Some(out);
        };
        // Only used under the sequence lock: its own lock never waits.
        let messages = binary
            .translator
            .lock()
            .ok()?
            .event(binary::nanos(at), event, fields);
        for m in &messages {
            binary::encode(m, &mut out).ok()?;
        }
        Some(out)
    }

    /// One JSON line: time, connection id, event, `fields`.
    fn line(&self, at: std::time::SystemTime, event: &str, fields: Value) -> Vec<u8> {
        let mut line = Map::new();
        line.insert(
            "time".into(),
            Value::String(humantime::format_rfc3339_nanos(at).to_string()),
        );
        line.insert(
            "connectionId".into(),
            Value::String(self.connection_id.clone()),
        );
        line.insert("event".into(), Value::String(event.to_string()));
        if let Value::Object(extra) = fields {
            line.extend(extra);
        }
        let mut bytes = Value::Object(line).to_string().into_bytes();
        bytes.push(b'\n');
        bytes
    }

    /// Whether a write failed; the connection is then ended (it cannot be audited).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The recording of session `session`, if recordings are on: with `format: asciinema`
    /// an asciicast file for a terminal session (`tty`: columns, rows, TERM); with `format:
    /// binary` its I/O in the binary log, for every session.
    /// The binary log's record of one forwarded connection's bytes, when `format: binary` and
    /// `intercept.forwarding`: what the client sent as stdin, what came back as stdout (as
    /// ContainerSSH records them). Their channel IDs count from 2^32, so they never meet a
    /// session's.
    pub fn forward_io(&self) -> Option<SessionIo> {
        let binary = self.binary.as_ref()?;
        if !binary.intercept.forwarding {
            return None;
        }
        let number = self.forwards.fetch_add(1, Ordering::Relaxed);
        Some(SessionIo {
            connection_id: self.connection_id.clone().into(),
            channel: FORWARD_CHANNELS + number,
            intercept: Intercept {
                stdin: true,
                stdout: true,
                stderr: false,
                forwarding: true,
            },
            queue: self.queue.clone(),
            slots: binary.io_slots.clone(),
            failed: self.failed.clone(),
        })
    }

    /// A session channel is closed: what the binary log numbered on it is dropped.
    pub fn session_closed(&self, session: u32) {
        if let Some(binary) = &self.binary {
            if let Ok(mut translator) = binary.translator.lock() {
                translator.forget(session.into());
            }
        }
    }

    pub async fn recording(
        &self,
        session: u32,
        tty: Option<(u32, u32, &str)>,
    ) -> Option<Recording> {
        if let Some(binary) = &self.binary {
            return Some(Recording::Binary(SessionIo {
                connection_id: self.connection_id.clone().into(),
                channel: session.into(),
                intercept: binary.intercept,
                queue: self.queue.clone(),
                slots: binary.io_slots.clone(),
                failed: self.failed.clone(),
            }));
        }
        let (columns, rows, term) = tty?;
        if !self.auditor.record_sessions {
            return None;
        }
        let name = format!("{}-{session}.cast", self.connection_id);
        let path = self.auditor.directory.join(&name);
        if let Some(s3) = &self.auditor.s3 {
            s3.claim(&name);
        }
        match CastRecording::start(
            &path,
            columns,
            rows,
            term,
            self.auditor.record_input,
            self.failed.clone(),
            &self.connection_id,
            &self.recordings,
        )
        .await
        {
            Ok(r) => {
                if let Ok(mut files) = self.recording_files.lock() {
                    files.push(name);
                }
                self.record_written(
                    "recording",
                    serde_json::json!({"session": session, "file": path}),
                )
                .await;
                Some(Recording::Cast(r))
            }
            Err(e) => {
                if let Some(s3) = &self.auditor.s3 {
                    s3.release(&[name]);
                }
                tracing::error!(connection_id = %self.connection_id, error = format!("{e:#}"), "cannot start the session recording");
                self.failed.store(true, Ordering::Release);
                None
            }
        }
    }
}

/// The I/O of one session for the binary log (`format: binary`): what `intercept` asks for,
/// as ContainerSSH's I/O messages on the session's channel. Chunks wait for room in the
/// connection's queue (back-pressure) and are never dropped.
#[derive(Clone)]
pub struct SessionIo {
    connection_id: Arc<str>,
    channel: u64,
    intercept: Intercept,
    queue: mpsc::Sender<Job>,
    slots: Arc<Semaphore>,
    failed: Arc<AtomicBool>,
}

impl SessionIo {
    pub async fn stdin(&self, data: &[u8]) {
        if self.intercept.stdin {
            self.send(Stream::Stdin, data).await;
        }
    }

    pub async fn stdout(&self, data: &[u8]) {
        if self.intercept.stdout {
            self.send(Stream::Stdout, data).await;
        }
    }

    pub async fn stderr(&self, data: &[u8]) {
        if self.intercept.stderr {
            self.send(Stream::Stderr, data).await;
        }
    }

    /// The session's channel is closed (ContainerSSH's `close` message).
    pub async fn close(&self) {
        let at = binary::nanos(std::time::SystemTime::now());
        let message = binary::close_message(&self.connection_id, at, self.channel);
        self.queue_message(&message).await;
    }

    async fn send(&self, stream: Stream, data: &[u8]) {
        let at = binary::nanos(std::time::SystemTime::now());
        let message = binary::io_message(&self.connection_id, at, self.channel, stream, data);
        self.queue_message(&message).await;
    }

    async fn queue_message(&self, message: &ciborium::value::Value) {
        let mut bytes = Vec::new();
        let queued = match binary::encode(message, &mut bytes) {
            Err(_) => false,
            Ok(()) => match self.slots.clone().acquire_owned().await {
                Ok(slot) => self.queue.send(Job::Io(bytes, slot)).await.is_ok(),
                Err(_) => false,
            },
        };
        // Not in the log: the connection must not go on unaudited.
        if !queued && !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(connection_id = %self.connection_id, "cannot write the session's I/O to the audit log");
        }
    }
}

/// A connection's audit files.
struct Files {
    json: File,
    /// `format: binary`.
    binary: Option<BinaryFile>,
}

impl Files {
    /// Appends a batch (blocking: run on the blocking pool).
    fn append(&mut self, lines: &[u8], messages: &[u8]) -> std::io::Result<()> {
        if !lines.is_empty() {
            self.json.write_all(lines)?;
        }
        if let Some(binary) = &mut self.binary {
            if !messages.is_empty() {
                binary.append(messages)?;
            }
        }
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        self.json.sync_data()?;
        if let Some(binary) = &self.binary {
            binary.sync()?;
        }
        Ok(())
    }
}

/// Appends queued events to the file(s), a batch per write, and syncs them at the end.
async fn write_jobs(
    files: Files,
    mut jobs: mpsc::Receiver<Job>,
    written: watch::Sender<u64>,
    failed: Arc<AtomicBool>,
    connection_id: String,
) {
    let mut file = Some(files);
    let mut close = None;
    while close.is_none() {
        let Some(first) = jobs.recv().await else {
            break;
        };
        let mut batch = Vec::new();
        let mut messages = Vec::new();
        // Released once their I/O is written: the I/O share of the queue bounds the memory.
        let mut slots = Vec::new();
        let mut last = None;
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Line(sequence, line, binary) => {
                    batch.extend_from_slice(&line);
                    messages.extend_from_slice(&binary);
                    last = Some(sequence);
                }
                Job::Io(binary, slot) => {
                    messages.extend_from_slice(&binary);
                    slots.push(slot);
                }
                Job::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            next = jobs.try_recv().ok();
        }
        if !batch.is_empty() || !messages.is_empty() {
            let result = match file.take() {
                Some(mut f) => match tokio::task::spawn_blocking(move || {
                    let r = f.append(&batch, &messages);
                    (f, r)
                })
                .await
                {
                    Ok((f, r)) => {
                        file = Some(f);
                        r
                    }
                    Err(e) => Err(std::io::Error::other(e)),
                },
                None => Err(std::io::Error::other("the audit file was lost")),
            };
            if let Err(e) = result {
                if !failed.swap(true, Ordering::AcqRel) {
                    tracing::error!(connection_id = %connection_id, error = %e, "cannot write the audit log");
                }
            }
        }
        // Written (or failed, which the waiters check): let them go on.
        if let Some(last) = last {
            written.send_replace(last);
        }
    }
    // No more events: refuse new ones, then make what was written durable.
    jobs.close();
    if let Some(f) = file {
        let synced = tokio::task::spawn_blocking(move || f.sync())
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        if let Err(e) = synced {
            failed.store(true, Ordering::Release);
            tracing::warn!(connection_id = %connection_id, error = %e, "cannot sync the audit log");
        }
    }
    if let Some(done) = close {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auditor(dir: &std::path::Path) -> Arc<Auditor> {
        Arc::new(Auditor {
            directory: dir.to_path_buf(),
            record_sessions: false,
            record_input: false,
            binary: None,
            s3: None,
        })
    }

    fn lines(path: &std::path::Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn events_are_written_in_order_and_synced_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let audit = auditor(dir.path()).open("c1").await.unwrap();
        audit.record("connect", serde_json::json!({"n": 1}));
        audit
            .record_written("auth", serde_json::json!({"n": 2}))
            .await;
        // Written before record_written returned.
        assert_eq!(lines(&dir.path().join("c1.jsonl")).len(), 2);
        for n in 3..100 {
            audit.record("request", serde_json::json!({ "n": n }));
            if n % 50 == 0 {
                audit.written().await;
            }
        }
        audit.close().await;
        audit.close().await;
        let events = lines(&dir.path().join("c1.jsonl"));
        let numbers: Vec<u64> = events.iter().filter_map(|e| e["n"].as_u64()).collect();
        assert_eq!(numbers, (1..100).collect::<Vec<_>>());
        assert_eq!(events[0]["event"], "connect");
        assert_eq!(events[0]["connectionId"], "c1");
        assert!(!audit.failed());
    }

    #[tokio::test]
    async fn an_event_after_close_marks_the_log_failed() {
        let dir = tempfile::tempdir().unwrap();
        let audit = auditor(dir.path()).open("c2").await.unwrap();
        audit.close().await;
        audit.record("late", serde_json::json!({}));
        assert!(audit.failed());
        // Nothing waits forever on a closed log.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            audit.record_written("later", serde_json::json!({})),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_marks_the_log_failed_instead_of_dropping_silently() {
        let dir = tempfile::tempdir().unwrap();
        let audit = auditor(dir.path()).open("c3").await.unwrap();
        // The writer cannot run on this single-threaded runtime until we yield.
        for n in 0..=QUEUE {
            audit.record("request", serde_json::json!({ "n": n }));
        }
        assert!(audit.failed());
        audit.close().await;
        assert_eq!(lines(&dir.path().join("c3.jsonl")).len(), QUEUE);
    }

    #[tokio::test]
    async fn binary_mode_writes_the_events_and_session_io_to_the_binary_log() {
        let dir = tempfile::tempdir().unwrap();
        let auditor = Arc::new(Auditor {
            directory: dir.path().to_path_buf(),
            record_sessions: false,
            record_input: false,
            binary: Some(Intercept {
                stdin: true,
                stdout: true,
                stderr: false,
                forwarding: false,
            }),
            s3: None,
        });
        let audit = auditor.open("c4").await.unwrap();
        audit.record(
            "connect",
            serde_json::json!({"remoteAddress": "192.0.2.1:4000", "country": "XX"}),
        );
        let Some(Recording::Binary(io)) = audit.recording(0, None).await else {
            panic!("binary mode records every session's I/O");
        };
        io.stdin(b"in").await;
        io.stdout(b"out").await;
        io.stderr(b"not intercepted").await;
        audit
            .record_written("exit", serde_json::json!({"session": 0, "status": 0}))
            .await;
        io.close().await;
        audit.record("disconnect", serde_json::json!({}));
        audit.close().await;
        assert!(!audit.failed());
        // The JSON log is written as before; the binary log is named after the connection.
        assert_eq!(lines(&dir.path().join("c4.jsonl")).len(), 3);
        let data = std::fs::read(dir.path().join("c4")).unwrap();
        assert_eq!(&data[..21], b"ContainerSSH-Auditlog");
        let raw = super::binary::tests::gunzip(&data[40..]);
        let mut rest = raw.as_slice();
        let mut types = Vec::new();
        while !rest.is_empty() {
            let v: ciborium::value::Value = ciborium::from_reader(&mut rest).unwrap();
            let t = v
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("type")))
                .and_then(|(_, t)| t.as_integer())
                .map(i128::from)
                .unwrap();
            types.push(t);
        }
        assert_eq!(types, vec![0, 500, 500, 499, 497, 1]);
        // The S3 upload takes it with the connection's recordings.
        assert_eq!(
            *audit.recording_files.lock().unwrap(),
            vec!["c4".to_string()]
        );
    }
}
