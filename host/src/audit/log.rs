//! Connection audit logs: `<directory>/<connection id>.jsonl`, one JSON object per event.
//! A writer task per connection appends the events in order, whole lines, on the blocking
//! pool; the connection waits until an event is written before it acts on it (see
//! `ConnectionAudit::written`), so a crash of the gateway loses nothing it acted on. The file
//! is synced to disk when the connection ends, before its cleanup counts as done. With
//! `storage: s3` the files are staged in `s3.local` and uploaded then (see `s3`).
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

use super::s3::S3Storage;
use super::Recording;
use crate::config::AuditConfig;

/// The gateway's audit settings; opens one log per connection.
pub struct Auditor {
    directory: PathBuf,
    record_sessions: bool,
    record_input: bool,
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
        Ok(Some(Arc::new(Self {
            directory,
            record_sessions: config.format == "asciinema" && config.intercept.stdout,
            record_input: config.intercept.stdin,
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
        let created = tokio::task::spawn_blocking(move || create_private(&path))
            .await
            .context("cannot create the audit log")
            .and_then(|r| r);
        let file = match created {
            Ok(file) => file,
            Err(e) => {
                if let Some(s3) = &self.s3 {
                    s3.release(&[name]);
                }
                return Err(e);
            }
        };
        let (queue, jobs) = mpsc::channel(QUEUE);
        let (written_tx, written) = watch::channel(0);
        let failed = Arc::new(AtomicBool::new(false));
        // The writer ends by itself once the log is closed or dropped (its queue closes).
        tokio::spawn(write_jobs(
            file,
            jobs,
            written_tx,
            failed.clone(),
            connection_id.to_string(),
        ));
        Ok(ConnectionAudit {
            auditor: self.clone(),
            connection_id: connection_id.to_string(),
            queue,
            sequence: Mutex::new(0),
            written,
            closed: tokio::sync::OnceCell::new(),
            failed,
            recordings: TaskTracker::new(),
            recording_files: Mutex::new(Vec::new()),
        })
    }
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

enum Job {
    /// One event: its sequence number and its line.
    Line(u64, Vec<u8>),
    /// Write what is queued, sync the file to disk, answer, and stop.
    Close(oneshot::Sender<()>),
}

/// The audit log of one connection. Events are numbered and queued in order; a writer task
/// appends them (file I/O on the blocking pool, never on the async workers).
pub struct ConnectionAudit {
    auditor: Arc<Auditor>,
    connection_id: String,
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
    /// The recordings' file names.
    recording_files: Mutex<Vec<String>>,
}

impl ConnectionAudit {
    /// Queues one event without waiting (for synchronous callers; `written` waits for it).
    /// `fields` (a JSON object) must never hold a secret. An event that cannot be queued marks
    /// the log failed, which ends the connection.
    pub fn record(&self, event: &str, fields: Value) {
        let line = self.line(event, fields);
        let queued = match self.sequence.lock() {
            Ok(mut sequence) => {
                let queued = self.queue.try_send(Job::Line(*sequence + 1, line));
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
        let line = self.line(event, fields);
        match self.queue.reserve().await {
            Ok(permit) => match self.sequence.lock() {
                Ok(mut sequence) => {
                    *sequence += 1;
                    permit.send(Job::Line(*sequence, line));
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

    /// One JSON line: time, connection id, event, `fields`.
    fn line(&self, event: &str, fields: Value) -> Vec<u8> {
        let mut line = Map::new();
        line.insert(
            "time".into(),
            Value::String(
                humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            ),
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

    /// A recording of terminal session `session`, if recordings are on.
    pub async fn recording(
        &self,
        session: u32,
        columns: u32,
        rows: u32,
        term: &str,
    ) -> Option<Recording> {
        if !self.auditor.record_sessions {
            return None;
        }
        let name = format!("{}-{session}.cast", self.connection_id);
        let path = self.auditor.directory.join(&name);
        if let Some(s3) = &self.auditor.s3 {
            s3.claim(&name);
        }
        match Recording::start(
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
                Some(r)
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

/// Appends queued events to the file, a batch per write, and syncs it at the end.
async fn write_jobs(
    file: File,
    mut jobs: mpsc::Receiver<Job>,
    written: watch::Sender<u64>,
    failed: Arc<AtomicBool>,
    connection_id: String,
) {
    let mut file = Some(file);
    let mut close = None;
    while close.is_none() {
        let Some(first) = jobs.recv().await else {
            break;
        };
        let mut batch = Vec::new();
        let mut last = None;
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Line(sequence, line) => {
                    batch.extend_from_slice(&line);
                    last = Some(sequence);
                }
                Job::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            next = jobs.try_recv().ok();
        }
        if !batch.is_empty() {
            let result = match file.take() {
                Some(mut f) => match tokio::task::spawn_blocking(move || {
                    let r = f.write_all(&batch);
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
        let synced = tokio::task::spawn_blocking(move || f.sync_data())
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
}
