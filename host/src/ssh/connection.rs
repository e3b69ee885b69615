//! State shared by everything that belongs to one SSH connection, and its cleanup.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::OnceCell;

use crate::audit::ConnectionAudit;
use crate::backend::{Workload, WorkloadOwner, WorkloadSettings};
use crate::config::ExecutionMode;
use crate::plugin::{AuthGrant, ConnectionInfo};
use crate::ssh::limits::PendingSlot;
use crate::ssh::Gateway;

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
}

/// The parts of the configuration a connection may have of its own.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// The backend and how programs run in it.
    pub workload: WorkloadSettings,
    /// The `security` section, handed to the request filter as its config.
    pub security_json: String,
}

impl ConnectionSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            workload: WorkloadSettings::from_config(config),
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
        }
    }

    pub fn info(&self, username: &str) -> ConnectionInfo {
        ConnectionInfo {
            connection_id: self.id.clone(),
            remote_address: self.peer.to_string(),
            client_version: self.client_version.get().cloned().unwrap_or_default(),
            username: username.to_string(),
        }
    }

    /// Appends an event to the audit log (if auditing is on). A log that cannot be written
    /// ends the connection: it must not go on unaudited.
    pub fn audit(&self, event: &str, fields: serde_json::Value) {
        let Some(audit) = &self.audit else { return };
        audit.record(event, fields);
        self.audit_failed();
    }

    /// True (and the connection is being ended) when its audit log or a recording could not be
    /// written: a session must not go on unaudited.
    pub fn audit_failed(&self) -> bool {
        let failed = self.audit.as_ref().is_some_and(|a| a.failed());
        if failed {
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
    pub fn workload_settings(&self) -> &WorkloadSettings {
        self.settings
            .get()
            .map(|s| &s.workload)
            .unwrap_or(&self.gateway.file_settings.workload)
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
            tokio::spawn(async move {
                let _ = handle.disconnect(reason, message, String::new()).await;
            });
        }
    }

    /// The workload a session runs in: the connection's container, or a new one per session.
    pub async fn workload_for_session(&self, session: u32) -> anyhow::Result<Arc<dyn Workload>> {
        match self.workload_settings().mode() {
            ExecutionMode::Connection => self
                .shared_workload
                .get_or_try_init(|| self.create_workload(None))
                .await
                .cloned(),
            ExecutionMode::Session => self.create_workload(Some(session)).await,
        }
    }

    async fn create_workload(&self, session: Option<u32>) -> anyhow::Result<Arc<dyn Workload>> {
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
            .create_workload(self.workload_settings(), &owner)
            .await
        {
            Ok(w) => w,
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

    /// Removes every workload still alive; runs when the connection ends, however it ends.
    pub fn cleanup(&self) {
        let workloads: Vec<_> = self
            .workloads
            .lock()
            .map(|mut w| {
                w.closed = true;
                std::mem::take(&mut w.live)
            })
            .unwrap_or_default();
        let id = self.id.clone();
        self.gateway.cleanup.spawn(async move {
            for w in workloads {
                w.remove().await;
            }
            tracing::debug!(connection_id = %id, "connection cleaned up");
        });
    }
}
