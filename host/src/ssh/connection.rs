//! State shared by everything that belongs to one SSH connection, and its cleanup.
//!
//! A connection owns every task it starts: they run on its `TaskTracker` and stop when its
//! `CancellationToken` is cancelled, which happens when the connection ends (however it ends)
//! and at gateway shutdown. The same token cuts the client's TCP stream (see `server.rs`).
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::ConnectionAudit;
use crate::backend::{Workload, WorkloadOwner, WorkloadSettings};
use crate::config::ExecutionMode;
use crate::plugin::{AuthGrant, ConnectionInfo};
use crate::ssh::limits::PendingSlot;
use crate::ssh::Gateway;

/// After the backing connection ends: how long the sessions get to pass on what it sent last.
const BACKING_END_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

pub struct Connection {
    pub id: String,
    pub peer: SocketAddr,
    pub client_version: Arc<OnceLock<String>>,
    pub gateway: Arc<Gateway>,
    pub authenticated: AtomicBool,
    accepted: std::time::Instant,
    first_byte_seen: AtomicBool,
    /// This connection's place among the unauthenticated ones, given back on success.
    pending: PendingSlot,
    /// Set once authentication (and authorization) succeeded.
    pub grant: OnceLock<AuthGrant>,
    /// This connection's own settings (the file's, or merged with a config server's answer),
    /// set with the grant.
    settings: OnceLock<ConnectionSettings>,
    /// This connection's audit log, when auditing is on.
    pub audit: Option<Arc<ConnectionAudit>>,
    /// russh's handle, set as soon as the handshake finished.
    pub handle: OnceLock<russh::server::Handle>,
    /// Connection mode: the one container of this connection, created with the first session.
    shared_workload: OnceCell<Arc<dyn Workload>>,
    /// Every workload of this connection that may still exist, so none outlives it.
    /// `closed` is set (under the same lock) once the connection ended: a workload whose
    /// creation finishes after that is removed at once instead of being leaked.
    workloads: Mutex<Workloads>,
    /// Cancelled when the connection ends or the gateway shuts down.
    pub cancel: CancellationToken,
    /// Every task this connection started.
    tasks: TaskTracker,
    /// Set once the cleanup was started (it runs once).
    closing: AtomicBool,
    /// Set once the connection is being ended for a failed audit log.
    audit_disconnect: AtomicBool,
    /// The agent socket in the container, for sessions that ask for agent forwarding.
    pub agent: crate::ssh::listen::AgentSocket,
    /// The X display in the container, for sessions that ask for X11 forwarding.
    pub x11: crate::ssh::listen::X11Display,
    /// The access token of an OAuth2 login, revoked when the connection ends.
    pub oauth2_token: OnceLock<Box<crate::oauth2::IssuedToken>>,
}

/// How long a disconnect message may take to reach russh's queue (a connection whose loop is
/// parked, e.g. by a client that reads nothing, never takes it).
pub const DISCONNECT_SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection's cleanup waits for its tasks to stop after the cancellation (they
/// stop at their next await; only a backend request that must not be abandoned takes longer).
const TASKS_GRACE: Duration = Duration::from_secs(10);
/// How long revoking an OAuth2 access token may take at the connection's end.
const TOKEN_REVOKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of the configuration a connection may have of its own.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// The backend and how programs run in it.
    pub workload: Arc<dyn WorkloadSettings>,
    /// The `security` section, handed to the request filter as its config.
    pub security_json: String,
}

impl ConnectionSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            workload: crate::backend::settings::from_config(config),
            security_json: config.security.to_string(),
        }
    }
}

#[derive(Default)]
struct Workloads {
    live: Vec<Arc<dyn Workload>>,
    closed: bool,
}

impl Connection {
    /// Records the time to the first output byte of this connection (once).
    pub fn first_output(&self) {
        if !self.first_byte_seen.swap(true, Ordering::AcqRel) {
            self.gateway.metrics.first_byte(self.accepted.elapsed());
        }
    }

    pub fn new(
        id: String,
        peer: SocketAddr,
        client_version: Arc<OnceLock<String>>,
        gateway: Arc<Gateway>,
        pending: PendingSlot,
        audit: Option<Arc<ConnectionAudit>>,
    ) -> Self {
        Self {
            id,
            peer,
            client_version,
            gateway,
            authenticated: AtomicBool::new(false),
            accepted: std::time::Instant::now(),
            first_byte_seen: AtomicBool::new(false),
            pending,
            grant: OnceLock::new(),
            settings: OnceLock::new(),
            audit,
            handle: OnceLock::new(),
            shared_workload: OnceCell::new(),
            workloads: Mutex::new(Workloads::default()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            closing: AtomicBool::new(false),
            audit_disconnect: AtomicBool::new(false),
            agent: Default::default(),
            x11: Default::default(),
            oauth2_token: OnceLock::new(),
        }
    }

    /// Runs `task` as one of this connection's tasks: tracked, and dropped at its next await
    /// once the connection ends.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = task => {}
            }
        });
    }

    pub fn info(&self, username: &str) -> ConnectionInfo {
        ConnectionInfo {
            connection_id: self.id.clone(),
            remote_address: self.peer.to_string(),
            client_version: self.client_version.get().cloned().unwrap_or_default(),
            username: username.to_string(),
        }
    }

    /// Appends an event to the audit log (if auditing is on) without waiting for the write;
    /// `audit_written` waits for it. A log that cannot be written ends the connection: it must
    /// not go on unaudited.
    pub fn audit(&self, event: &str, fields: serde_json::Value) {
        let Some(audit) = &self.audit else { return };
        audit.record(event, fields);
        self.audit_failed();
    }

    /// Waits until every audit event recorded so far is written (the gateway acts on a request
    /// only once its event is in the log), then ends the connection if the log failed.
    pub async fn audit_written(&self) {
        let Some(audit) = &self.audit else { return };
        audit.written().await;
        self.audit_failed();
    }

    /// Appends an event to the audit log and waits until it is written.
    pub async fn audit_now(&self, event: &str, fields: serde_json::Value) {
        let Some(audit) = &self.audit else { return };
        audit.record_written(event, fields).await;
        self.audit_failed();
    }

    /// True (and the connection is being ended) when its audit log or a recording could not be
    /// written: a session must not go on unaudited.
    pub fn audit_failed(&self) -> bool {
        let failed = self.audit.as_ref().is_some_and(|a| a.failed());
        // One disconnect is enough, however many events follow.
        if failed && !self.audit_disconnect.swap(true, Ordering::AcqRel) {
            self.disconnect(
                russh::Disconnect::ByApplication,
                "containerssh: the audit log cannot be written; closing the connection",
            );
        }
        failed
    }

    /// Marks the connection authenticated with `grant` and its own settings.
    pub fn authenticated_as(&self, grant: AuthGrant, settings: ConnectionSettings) {
        let _ = self.settings.set(settings);
        let _ = self.grant.set(grant);
        self.authenticated.store(true, Ordering::Release);
        self.pending.release();
    }

    /// How this connection's programs run (the file's settings until authentication).
    pub fn workload_settings(&self) -> &dyn WorkloadSettings {
        self.settings
            .get()
            .map(|s| &*s.workload)
            .unwrap_or(&*self.gateway.file_settings.workload)
    }

    /// The security settings the request filter applies to this connection.
    pub fn security_json(&self) -> Option<String> {
        self.settings.get().map(|s| s.security_json.clone())
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    pub fn username(&self) -> String {
        self.grant
            .get()
            .map(|g| g.authenticated_username.clone())
            .unwrap_or_default()
    }

    /// Ends the connection with a reason the client shows to its user.
    pub fn disconnect(&self, reason: russh::Disconnect, message: &str) {
        if let Some(handle) = self.handle.get().cloned() {
            let message = message.to_string();
            let id = self.id.clone();
            self.spawn(async move {
                let sent = handle.disconnect(reason, message, String::new());
                if tokio::time::timeout(DISCONNECT_SEND_TIMEOUT, sent)
                    .await
                    .is_err()
                {
                    tracing::debug!(connection_id = %id, "the disconnect message could not be queued in time");
                }
            });
        }
    }

    /// The workload a session runs in: the connection's container, or a new one per session.
    pub async fn workload_for_session(
        self: &Arc<Self>,
        session: u32,
    ) -> anyhow::Result<Arc<dyn Workload>> {
        match self.workload_settings().mode() {
            ExecutionMode::Connection => self
                .shared_workload
                .get_or_try_init(|| self.create_workload(None))
                .await
                .cloned(),
            ExecutionMode::Session => self.create_workload(Some(session)).await,
        }
    }

    /// Creates a workload in a task of its own: the caller may be dropped (its channel closed,
    /// the connection ended) without abandoning a creation half-way. The creation stops early
    /// when the connection ends, and whatever it created is then removed, never leaked.
    async fn create_workload(
        self: &Arc<Self>,
        session: Option<u32>,
    ) -> anyhow::Result<Arc<dyn Workload>> {
        let conn = self.clone();
        let creation = self
            .tasks
            .spawn(async move { conn.create_workload_now(session).await });
        let workload = creation
            .await
            .map_err(|e| anyhow::anyhow!("container creation failed: {e}"))??;
        if let (None, Some(ended)) = (session, workload.ended()) {
            self.end_with(workload.id().to_string(), ended);
        }
        Ok(workload)
    }

    /// Ends the connection when its workload ends by itself (a backing SSH server that closed
    /// the connection): the client is told instead of keeping a connection nothing serves.
    fn end_with(
        self: &Arc<Self>,
        workload: String,
        ended: futures::future::BoxFuture<'static, ()>,
    ) {
        let conn = Arc::downgrade(self);
        self.spawn(async move {
            ended.await;
            // What the backing server sent last (output, exit statuses) is still being passed
            // on by the sessions: it gets a moment to reach the client first.
            tokio::time::sleep(BACKING_END_GRACE).await;
            let Some(conn) = conn.upgrade() else { return };
            tracing::info!(connection_id = %conn.id, %workload,
                "the backing connection ended; ending the client's connection");
            conn.disconnect(
                russh::Disconnect::ByApplication,
                "containerssh: the backing server closed the connection",
            );
        });
    }

    async fn create_workload_now(&self, session: Option<u32>) -> anyhow::Result<Arc<dyn Workload>> {
        let owner = WorkloadOwner {
            connection_id: self.id.clone(),
            username: self.username(),
            remote_address: self.peer.to_string(),
            session,
            files: self
                .grant
                .get()
                .map(|g| g.files.clone())
                .unwrap_or_default(),
            // Sensitive values never go where the pod object (readable by anyone who may list
            // pods) would show them.
            metadata: self
                .grant
                .get()
                .map(|g| {
                    g.metadata
                        .iter()
                        .filter(|(k, _)| !g.sensitive.contains(k))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        };
        let started = std::time::Instant::now();
        let workload = match self
            .gateway
            .backends
            .create_workload(self.workload_settings(), &owner, &self.cancel)
            .await
        {
            Ok(w) => w,
            Err(e) if self.cancel.is_cancelled() => {
                // Nobody waits for this answer any more; say what became of the creation.
                tracing::info!(connection_id = %self.id, reason = format!("{e:#}"),
                    "container creation abandoned: the connection ended");
                return Err(e);
            }
            Err(e) => {
                self.gateway.metrics.backend_error("container_start");
                return Err(e);
            }
        };
        self.gateway.metrics.container_started(started.elapsed());
        let closed = match self.workloads.lock() {
            Ok(mut w) if !w.closed => {
                w.live.push(workload.clone());
                false
            }
            _ => true,
        };
        if closed {
            workload.remove().await;
            anyhow::bail!("the connection ended while its container was starting");
        }
        Ok(workload)
    }

    /// Removes a per-session workload when its session ends (session mode only).
    pub async fn release_session_workload(&self, workload: &Arc<dyn Workload>) {
        if self.workload_settings().mode() != ExecutionMode::Session {
            return;
        }
        workload.remove().await;
        if let Ok(mut w) = self.workloads.lock() {
            w.live.retain(|x| x.id() != workload.id());
        }
    }

    /// Ends everything of this connection; runs when the connection ends, however it ends
    /// (and at shutdown for a connection that would not end), once. Its tasks are cancelled;
    /// then, in a cleanup task the gateway's shutdown waits for, every workload still alive
    /// is removed and the audit log written, synced and closed. The cleanup counts as done
    /// only when both are.
    pub fn close(self: &Arc<Self>) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.cancel.cancel();
        self.tasks.close();
        if let Ok(mut w) = self.workloads.lock() {
            w.closed = true;
        }
        let conn = self.clone();
        self.gateway.cleanup.spawn(async move {
            if tokio::time::timeout(TASKS_GRACE, conn.tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!(connection_id = %conn.id, tasks = conn.tasks.len(),
                    "tasks of the connection still running; cleaning up without them");
            }
            let workloads: Vec<_> = conn
                .workloads
                .lock()
                .map(|mut w| std::mem::take(&mut w.live))
                .unwrap_or_default();
            let removals = futures::future::join_all(workloads.iter().map(|w| w.remove()));
            let audit = async {
                if let Some(audit) = &conn.audit {
                    // The last event: every task of the connection has stopped.
                    audit.record("disconnect", serde_json::json!({}));
                    audit.close().await;
                }
            };
            let revoke = async {
                if let Some(token) = conn.oauth2_token.get() {
                    token.revoke(TOKEN_REVOKE_TIMEOUT).await;
                }
            };
            tokio::join!(removals, audit, revoke);
            tracing::debug!(connection_id = %conn.id, "connection cleaned up");
        });
    }
}
