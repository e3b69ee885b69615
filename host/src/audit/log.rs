//! Connection audit logs: `<directory>/<connection id>.jsonl`, one JSON object per event. Each
//! event is written with one `write` call before the gateway acts on it, so a crash of the
//! gateway loses nothing already written; the file is synced to disk when the connection ends.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde_json::{Map, Value};

use super::Recording;
use crate::config::AuditConfig;

/// The gateway's audit settings; opens one log per connection.
pub struct Auditor {
    directory: PathBuf,
    record_sessions: bool,
    record_input: bool,
}

impl Auditor {
    /// `None` when auditing is off. Creates the directory (mode 0700) if needed.
    pub fn new(config: &AuditConfig) -> anyhow::Result<Option<Arc<Self>>> {
        if !config.enable {
            return Ok(None);
        }
        let directory = config.file.directory.clone();
        std::fs::create_dir_all(&directory).with_context(|| {
            format!(
                "audit.file.directory: cannot create {}",
                directory.display()
            )
        })?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o700)).with_context(
            || {
                format!(
                    "audit.file.directory: cannot restrict {}",
                    directory.display()
                )
            },
        )?;
        Ok(Some(Arc::new(Self {
            directory,
            record_sessions: config.format == "asciinema" && config.intercept.stdout,
            record_input: config.intercept.stdin,
        })))
    }

    /// The log of a new connection. Failing to create it refuses the connection: an audited
    /// gateway never serves unaudited.
    pub fn open(self: &Arc<Self>, connection_id: &str) -> anyhow::Result<ConnectionAudit> {
        let path = self.directory.join(format!("{connection_id}.jsonl"));
        let file = create_private(&path)?;
        Ok(ConnectionAudit {
            auditor: self.clone(),
            connection_id: connection_id.to_string(),
            file: Mutex::new(file),
            failed: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// A new file, readable only by the gateway's user, never an existing one.
pub(super) fn create_private(path: &std::path::Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create audit file {}", path.display()))
}

/// The audit log of one connection.
pub struct ConnectionAudit {
    auditor: Arc<Auditor>,
    connection_id: String,
    file: Mutex<File>,
    /// Set when the log or a recording could not be written; shared with recording writers.
    failed: Arc<AtomicBool>,
}

impl ConnectionAudit {
    /// Appends one event. `fields` (a JSON object) must never hold a secret.
    pub fn record(&self, event: &str, fields: Value) {
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
        let written = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("audit log lock poisoned"))
            .and_then(|mut f| f.write_all(&bytes));
        if let Err(e) = written {
            if !self.failed.swap(true, Ordering::AcqRel) {
                tracing::error!(connection_id = %self.connection_id, error = %e, "cannot write the audit log");
            }
        }
    }

    /// Whether a write failed; the connection is then ended (it cannot be audited).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// A recording of terminal session `session`, if recordings are on.
    pub fn recording(
        &self,
        session: u32,
        columns: u32,
        rows: u32,
        term: &str,
    ) -> Option<Recording> {
        if !self.auditor.record_sessions {
            return None;
        }
        let path = self
            .auditor
            .directory
            .join(format!("{}-{session}.cast", self.connection_id));
        match Recording::start(
            &path,
            columns,
            rows,
            term,
            self.auditor.record_input,
            self.failed.clone(),
            &self.connection_id,
        ) {
            Ok(r) => {
                self.record(
                    "recording",
                    serde_json::json!({"session": session, "file": path}),
                );
                Some(r)
            }
            Err(e) => {
                tracing::error!(connection_id = %self.connection_id, error = format!("{e:#}"), "cannot start the session recording");
                self.failed.store(true, Ordering::Release);
                None
            }
        }
    }

    /// Syncs the log to disk (end of connection).
    pub fn sync(&self) {
        if let Ok(f) = self.file.lock() {
            if let Err(e) = f.sync_data() {
                tracing::warn!(connection_id = %self.connection_id, error = %e, "cannot sync the audit log");
            }
        }
    }
}
