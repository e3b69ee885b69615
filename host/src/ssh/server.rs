//! Listener, per-connection tasks, limits, and graceful shutdown.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use russh::Disconnect;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::audit::Auditor;
use crate::backend::Backends;
use crate::config::Config;
use crate::observe::Metrics;
use crate::plugin::Plugins;
use crate::ssh::connection::{Connection, ConnectionSettings};
use crate::ssh::handler::SshHandler;
use crate::ssh::limits::Guards;
use crate::ssh::sniff::ClientStream;
use crate::ssh::{algorithms, hostkey};
use tokio_util::sync::CancellationToken;

/// Everything connections share.
pub struct Gateway {
    pub config: Arc<Config>,
    pub plugins: Plugins,
    /// Opens the audit log of each connection (when auditing is on).
    pub auditor: Option<Arc<Auditor>>,
    pub backends: Backends,
    /// The file configuration's per-connection settings (before any config server answer).
    pub file_settings: ConnectionSettings,
    /// Container removals in flight; shutdown waits for them.
    pub cleanup: TaskTracker,
    /// Pre-authentication limits.
    pub guards: Guards,
    pub metrics: Arc<Metrics>,
    /// False once shutdown began (the health check then answers 503).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    connections: Mutex<HashMap<String, (russh::server::Handle, CancellationToken)>>,
}

impl Gateway {
    pub fn new(
        config: Arc<Config>,
        plugins: Plugins,
        auditor: Option<Arc<Auditor>>,
        backends: Backends,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let guards = Guards::new(&config.ssh.auth_rate_limit, config.ssh.max_unauthenticated);
        let file_settings = ConnectionSettings::from_config(&config);
        Arc::new(Self {
            guards,
            metrics,
            ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            config,
            plugins,
            auditor,
            file_settings,
            backends,
            cleanup: TaskTracker::new(),
            connections: Mutex::new(HashMap::new()),
        })
    }

    fn active_connections(&self) -> usize {
        self.connections.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn handles(&self) -> Vec<(russh::server::Handle, CancellationToken)> {
        self.connections
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Serves until `shutdown` resolves, then drains: running sessions get
/// `ssh.shutdownTimeout` to finish, the rest are disconnected and every container removed.
pub async fn run(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let ssh = &gateway.config.ssh;
    let mut keys = Vec::new();
    for path in &ssh.hostkeys {
        keys.push(hostkey::load_or_generate(path)?);
    }
    let server_config = algorithms::server_config(ssh, keys);
    let limit = Arc::new(Semaphore::new(ssh.max_connections));
    let connections = TaskTracker::new();
    tracing::info!(listen = %listener.local_addr().context("listener address")?, "containerssh is listening");
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = ssh.max_connections, "connection refused: ssh.maxConnections reached");
            gateway.metrics.connection_refused("max_connections");
            drop(stream);
            continue;
        };
        let gateway = gateway.clone();
        let server_config = server_config.clone();
        connections.spawn(async move {
            serve_connection(gateway, server_config, stream, peer).await;
            drop(permit);
        });
    }
    drop(listener);
    gateway
        .ready
        .store(false, std::sync::atomic::Ordering::Release);
    drain(&gateway, &connections).await;
    Ok(())
}

async fn serve_connection(
    gateway: Arc<Gateway>,
    server_config: Arc<russh::server::Config>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let id = hex::encode(rand::random::<[u8; 16]>());
    let Some(pending) = gateway.guards.admit_unauthenticated() else {
        tracing::warn!(connection_id = %id, %peer, max = gateway.config.ssh.max_unauthenticated,
            "connection refused: too many unauthenticated connections (ssh.maxUnauthenticated)");
        gateway.metrics.connection_refused("max_unauthenticated");
        return;
    };
    // An audited gateway serves no connection it cannot audit.
    let audit = match gateway.auditor.as_ref().map(|a| a.open(&id)).transpose() {
        Ok(audit) => audit.map(Arc::new),
        Err(e) => {
            tracing::error!(connection_id = %id, %peer, error = format!("{e:#}"), "connection refused: no audit log");
            gateway.metrics.connection_refused("audit");
            return;
        }
    };
    if let Some(audit) = &audit {
        audit.record(
            "connect",
            serde_json::json!({"remoteAddress": peer.to_string()}),
        );
    }
    tracing::info!(connection_id = %id, %peer, "connection accepted");
    gateway.metrics.connection_opened();
    let _open = scopeguard(&gateway.metrics);
    let version = Arc::new(OnceLock::new());
    let conn = Arc::new(Connection::new(
        id.clone(),
        peer,
        version.clone(),
        gateway.clone(),
        pending,
        audit,
    ));
    let handler = SshHandler::new(conn.clone());
    let grace = gateway.config.ssh.login_grace_time;
    // One deadline for the whole login, version exchange included.
    let deadline = tokio::time::Instant::now() + grace;
    // The identification exchange is bounded too: a client that never sends its version
    // line must not hold a slot forever.
    let kill = CancellationToken::new();
    let started = russh::server::run_stream(
        server_config,
        ClientStream::new(stream, version, kill.clone()),
        handler,
    );
    let session = match tokio::time::timeout_at(deadline, started).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(connection_id = %id, error = format!("{e:#}"), "handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(connection_id = %id, "login grace time over before the SSH handshake");
            return;
        }
    };
    let handle = session.handle();
    let _ = conn.handle.set(handle.clone());
    if let Ok(mut c) = gateway.connections.lock() {
        c.insert(id.clone(), (handle.clone(), kill.clone()));
    }
    let grace_conn = conn.clone();
    let grace_kill = kill.clone();
    let grace_timer = tokio::spawn(async move {
        tokio::time::sleep_until(deadline).await;
        if !grace_conn.is_authenticated() {
            tracing::info!(connection_id = %grace_conn.id, "login grace time over; disconnecting");
            let _ = handle
                .disconnect(
                    Disconnect::ByApplication,
                    "login grace time exceeded".into(),
                    String::new(),
                )
                .await;
            // A client stuck mid-handshake never processes the disconnect: cut it off.
            tokio::time::sleep(Duration::from_secs(1)).await;
            grace_kill.cancel();
        }
    });
    if let Err(e) = session.await {
        tracing::debug!(connection_id = %id, error = format!("{e:#}"), "connection ended with an error");
    }
    grace_timer.abort();
    if let Ok(mut c) = gateway.connections.lock() {
        c.remove(&id);
    }
}

async fn drain(gateway: &Gateway, connections: &TaskTracker) {
    let timeout = gateway.config.ssh.shutdown_timeout;
    let active = gateway.active_connections();
    tracing::info!(
        active,
        ?timeout,
        "shutting down: waiting for sessions to finish"
    );
    connections.close();
    if tokio::time::timeout(timeout, connections.wait())
        .await
        .is_err()
    {
        let handles = gateway.handles();
        tracing::info!(
            remaining = handles.len(),
            "disconnecting remaining connections"
        );
        for (h, _) in &handles {
            let _ = h
                .disconnect(
                    Disconnect::ByApplication,
                    "the server is shutting down".into(),
                    String::new(),
                )
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(5), connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections ignored the disconnect; cutting them off");
            for (_, kill) in &handles {
                kill.cancel();
            }
            if tokio::time::timeout(Duration::from_secs(5), connections.wait())
                .await
                .is_err()
            {
                tracing::warn!("some connections did not close in time");
            }
        }
    }
    gateway.cleanup.close();
    gateway.cleanup.wait().await;
    // Anything a failed removal left behind, then anything carrying this instance's label.
    let left = gateway.backends.remove_everything().await;
    if left > 0 {
        tracing::error!(left, "containers could not be removed at shutdown");
    } else {
        tracing::info!("shutdown complete; no containers left");
    }
}

/// Counts the connection as closed however `serve_connection` returns.
fn scopeguard(metrics: &Arc<Metrics>) -> impl Drop + '_ {
    struct Closed<'a>(&'a Metrics);
    impl Drop for Closed<'_> {
        fn drop(&mut self) {
            self.0.connection_closed();
        }
    }
    Closed(metrics)
}
