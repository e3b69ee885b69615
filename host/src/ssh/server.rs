//! Listener, per-connection tasks, limits, and graceful shutdown.
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use russh::Disconnect;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tokio_util::task::TaskTracker;

use crate::audit::Auditor;
use crate::backend::Backends;
use crate::config::Config;
use crate::observe::Metrics;
use crate::plugin::Plugins;
use crate::ssh::connection::{Connection, ConnectionSettings, DISCONNECT_SEND_TIMEOUT};
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
    /// Connections' cleanups (container removals, audit logs synced); shutdown waits for them.
    pub cleanup: TaskTracker,
    /// Pre-authentication limits.
    pub guards: Guards,
    pub metrics: Arc<Metrics>,
    /// Country codes of client addresses.
    pub geoip: crate::observe::geoip::GeoIp,
    /// The OAuth2 login (keyboard-interactive), when configured.
    pub oauth2: Option<Arc<crate::oauth2::OAuth2>>,
    /// Kerberos logins, when configured.
    pub kerberos: Option<Arc<crate::kerberos::Kerberos>>,
    /// False once shutdown began (the health check then answers 503).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Every connection being served, from accept (handshake included) to its end.
    connections: Mutex<HashMap<String, Arc<Connection>>>,
}

/// After the shutdown timeout: how long the remaining clients get to take the disconnect
/// message and leave before they are cut off.
const DISCONNECT_GRACE: Duration = Duration::from_secs(3);
/// After cutting connections off: how long their russh loops may take to end.
const CUT_GRACE: Duration = Duration::from_secs(2);
/// How long the connections' cleanups may take at shutdown, and then again the final sweep
/// for anything left carrying this instance's label.
const REMOVAL_GRACE: Duration = Duration::from_secs(10);

/// The logins the gateway makes itself rather than through the auth plugin.
#[derive(Default)]
pub struct BuiltinLogins {
    pub oauth2: Option<Arc<crate::oauth2::OAuth2>>,
    pub kerberos: Option<Arc<crate::kerberos::Kerberos>>,
}

impl Gateway {
    pub fn new(
        config: Arc<Config>,
        plugins: Plugins,
        auditor: Option<Arc<Auditor>>,
        backends: Backends,
        metrics: Arc<Metrics>,
        geoip: crate::observe::geoip::GeoIp,
        logins: BuiltinLogins,
    ) -> Arc<Self> {
        let guards = Guards::new(&config.ssh.auth_rate_limit, config.ssh.max_unauthenticated);
        let file_settings = ConnectionSettings::from_config(&config);
        Arc::new(Self {
            guards,
            metrics,
            geoip,
            oauth2: logins.oauth2,
            kerberos: logins.kerberos,
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

    fn open_connections(&self) -> Vec<Arc<Connection>> {
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
    let server_config = algorithms::server_config(&gateway.config, keys);
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
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    // Without it, each reply written in two parts (the key exchange's, an exec's answer and
    // exit status) waits for the client's delayed ACK: about 40 ms each. russh sets it only
    // for connections its own accept loop takes.
    if let Err(e) = stream.set_nodelay(server_config.nodelay) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let Some(peer) = client_address(&gateway, &mut stream, peer).await else {
        return;
    };
    let id = hex::encode(rand::random::<[u8; 16]>());
    let pending = match gateway
        .guards
        .admit_unauthenticated(peer, &gateway.config.ssh)
    {
        Ok(pending) => pending,
        Err(super::limits::Unadmitted::Total) => {
            tracing::warn!(connection_id = %id, %peer, max = gateway.config.ssh.max_unauthenticated,
                "connection refused: too many unauthenticated connections (ssh.maxUnauthenticated)");
            gateway.metrics.connection_refused("max_unauthenticated");
            return;
        }
        Err(super::limits::Unadmitted::PerSource) => {
            tracing::warn!(connection_id = %id, %peer, max = gateway.config.ssh.max_unauthenticated_per_source,
                "connection refused: too many unauthenticated connections from this source (ssh.maxUnauthenticatedPerSource)");
            gateway
                .metrics
                .connection_refused("max_unauthenticated_per_source");
            return;
        }
    };
    // An audited gateway serves no connection it cannot audit.
    let audit = match &gateway.auditor {
        None => None,
        Some(auditor) => match auditor.open(&id).await {
            Ok(audit) => Some(Arc::new(audit)),
            Err(e) => {
                tracing::error!(connection_id = %id, %peer, error = format!("{e:#}"), "connection refused: no audit log");
                gateway.metrics.connection_refused("audit");
                return;
            }
        },
    };
    let country = gateway.geoip.country(peer.ip());
    if let Some(audit) = &audit {
        audit.record(
            "connect",
            serde_json::json!({"remoteAddress": peer.to_string(), "country": country}),
        );
    }
    if gateway.geoip.is_dummy() {
        tracing::info!(connection_id = %id, %peer, "connection accepted");
    } else {
        tracing::info!(connection_id = %id, %peer, %country, "connection accepted");
    }
    gateway.metrics.connection_opened(&country);
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
    // Known from the start, so shutdown reaches connections still in their handshake too.
    if let Ok(mut c) = gateway.connections.lock() {
        c.insert(id.clone(), conn.clone());
    }
    run_connection(&conn, server_config, stream, version).await;
    // However it ended: its tasks stop, its workloads go, its audit log is synced.
    conn.close();
    if let Ok(mut c) = gateway.connections.lock() {
        c.remove(&id);
    }
}

/// The client's address: the TCP peer, or with `ssh.proxyProtocol` and a trusted proxy, the
/// client its PROXY header names. `None`: the connection is refused (and logged).
async fn client_address(
    gateway: &Gateway,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Option<SocketAddr> {
    use super::proxy_protocol::{is_trusted, read_header, starts_with_header, Origin};
    let proxy = &gateway.config.ssh.proxy_protocol;
    if proxy.trusted_proxies.is_empty() {
        return Some(peer);
    }
    if is_trusted(&peer, &proxy.trusted_proxies) {
        return match read_header(stream, proxy.header_timeout).await {
            Ok(Origin::Client(client)) => {
                tracing::debug!(proxy = %peer, client = %client, "PROXY header read");
                Some(client)
            }
            Ok(Origin::Proxy) => Some(peer),
            Err(e) => {
                tracing::warn!(proxy = %peer, error = %e, "connection refused: a trusted proxy sent no valid PROXY header");
                gateway.metrics.connection_refused("proxy_header");
                None
            }
        };
    }
    // Anyone else connects directly; a header from them would let them pick their address.
    if starts_with_header(stream, UNTRUSTED_PEEK).await {
        tracing::warn!(%peer, "connection refused: PROXY header from an address not in ssh.proxyProtocol.trustedProxies");
        gateway.metrics.connection_refused("untrusted_proxy_header");
        return None;
    }
    Some(peer)
}

/// How long a direct client's first bytes are waited for to check they are not a PROXY header
/// (SSH clients send their version at once; one that waits for ours loses only this).
const UNTRUSTED_PEEK: Duration = Duration::from_millis(200);

/// Serves one connection until russh ends it, or until its token cuts the client off.
async fn run_connection(
    conn: &Arc<Connection>,
    server_config: Arc<russh::server::Config>,
    stream: TcpStream,
    version: Arc<OnceLock<String>>,
) {
    let id = &conn.id;
    let handler = SshHandler::new(conn.clone());
    let grace = conn.gateway.config.login_deadline();
    // One deadline for the whole login, version exchange included.
    let deadline = tokio::time::Instant::now() + grace;
    // The connection's token is the client stream's kill switch: once cancelled, reads and
    // stalled writes fail, so russh ends the connection even when a polite disconnect is not
    // getting through (a client stalled in the key exchange, or one that reads nothing).
    let stream = ClientStream::new(
        CutOff::new(QuickAcks::new(stream), conn.cancel.clone()),
        version,
        conn.cancel.clone(),
    );
    let started = russh::server::run_stream(server_config, stream, handler);
    // The identification exchange is bounded too: a client that never sends its version line
    // must not hold a slot forever.
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
    let grace_conn = conn.clone();
    conn.spawn(async move {
        tokio::time::sleep_until(deadline).await;
        if !grace_conn.is_authenticated() {
            tracing::info!(connection_id = %grace_conn.id, "login grace time over; disconnecting");
            let _ = tokio::time::timeout(
                DISCONNECT_SEND_TIMEOUT,
                handle.disconnect(
                    Disconnect::ByApplication,
                    "login grace time exceeded".into(),
                    String::new(),
                ),
            )
            .await;
            // A client stuck mid-handshake never processes the disconnect: cut it off.
            tokio::time::sleep(Duration::from_secs(1)).await;
            grace_conn.cancel.cancel();
        }
    });
    if let Err(e) = session.await {
        tracing::debug!(connection_id = %id, error = format!("{e:#}"), "connection ended with an error");
    }
}

/// Every step bounded, whatever clients do: running sessions get `ssh.shutdownTimeout`; the
/// rest get a disconnect message and `DISCONNECT_GRACE` to leave; then they are cut off
/// (`CUT_GRACE`); connections' cleanups get `REMOVAL_GRACE`, and the final sweep for
/// containers with this instance's label another `REMOVAL_GRACE`.
async fn drain(gateway: &Gateway, connections: &TaskTracker) {
    let timeout = gateway.config.ssh.shutdown_timeout;
    let active = gateway.active_connections();
    tracing::info!(
        active,
        ?timeout,
        "shutting down: waiting for sessions to finish"
    );
    // No new warm pool members while the gateway drains.
    gateway.backends.stop_refilling();
    connections.close();
    if tokio::time::timeout(timeout, connections.wait())
        .await
        .is_err()
    {
        let remaining = gateway.open_connections();
        tracing::info!(
            remaining = remaining.len(),
            "disconnecting remaining connections"
        );
        // All at once, each bounded: a connection whose loop is parked (its client reads
        // nothing) cannot hold up the others' messages.
        let sends = remaining
            .iter()
            .filter_map(|c| c.handle.get().cloned())
            .map(|h| async move {
                let message = h.disconnect(
                    Disconnect::ByApplication,
                    "the server is shutting down".into(),
                    String::new(),
                );
                let _ = tokio::time::timeout(DISCONNECT_SEND_TIMEOUT, message).await;
            });
        let polite = async {
            futures::future::join_all(sends).await;
            connections.wait().await;
        };
        if tokio::time::timeout(DISCONNECT_GRACE, polite)
            .await
            .is_err()
        {
            let left = gateway.open_connections();
            tracing::warn!(
                left = left.len(),
                "some connections ignored the disconnect; cutting them off"
            );
            for c in &left {
                c.cancel.cancel();
            }
            if tokio::time::timeout(CUT_GRACE, connections.wait())
                .await
                .is_err()
            {
                // Their russh loops did not end: clean up after them all the same.
                let stuck = gateway.open_connections();
                tracing::warn!(
                    stuck = stuck.len(),
                    "some connections did not close in time; cleaning up after them"
                );
                for c in &stuck {
                    c.close();
                }
            }
        }
    }
    gateway.cleanup.close();
    if tokio::time::timeout(REMOVAL_GRACE, gateway.cleanup.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            cleanups = gateway.cleanup.len(),
            live = gateway.backends.live_count(),
            "connection cleanups unfinished after {REMOVAL_GRACE:?}; removing what is left"
        );
    }
    // Anything a failed removal left behind, then anything carrying this instance's label.
    match tokio::time::timeout(REMOVAL_GRACE, gateway.backends.remove_everything()).await {
        Ok(0) => tracing::info!("shutdown complete; no containers left"),
        Ok(left) => tracing::error!(left, "containers could not be removed at shutdown"),
        Err(_) => tracing::error!(
            left = gateway.backends.live_count(),
            "removing containers at shutdown took longer than {REMOVAL_GRACE:?}; giving up"
        ),
    }
}

/// The client's TCP stream with a kill switch on writes (`ClientStream` has one on reads):
/// once the token is cancelled, a write waiting for a client that reads nothing fails, so the
/// russh loop parked in it ends.
struct CutOff<S> {
    inner: S,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> CutOff<S> {
    fn new(inner: S, cut: CancellationToken) -> Self {
        Self {
            inner,
            cut: Box::pin(cut.cancelled_owned()),
        }
    }

    /// Turns a write that would wait into an error once the connection is cut off. The token
    /// is only looked at when the write would wait, so the data path pays nothing for it.
    fn or_cut<T>(
        &mut self,
        cx: &mut TaskContext<'_>,
        result: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match result {
            Poll::Pending if self.cut.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "connection cut off by the gateway",
                )))
            }
            other => other,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CutOff<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CutOff<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        self.or_cut(cx, result)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.or_cut(cx, result)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.or_cut(cx, result)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.or_cut(cx, result)
    }
}

/// Acknowledges the client's first segments at once. OpenSSH's client sends its key exchange
/// messages with Nagle's algorithm on, so each waits until the one before is acknowledged; when
/// the gateway has nothing to send back at that moment, Linux delays that ACK by 40 ms, and a
/// login took 40 ms longer than against sshd.
struct QuickAcks {
    inner: TcpStream,
    /// Reads after which the ACK is still hurried (the handshake and the login).
    left: u8,
}

impl QuickAcks {
    fn new(inner: TcpStream) -> Self {
        Self { inner, left: 16 }
    }
}

impl AsyncRead for QuickAcks {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.left > 0 && matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.left -= 1;
            // The flag is not permanent (the kernel drops it again), hence once per read.
            let _ = socket2::SockRef::from(&self.inner).set_tcp_quickack(true);
        }
        result
    }
}

impl AsyncWrite for QuickAcks {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_stalled_on_a_client_that_reads_nothing_fails_once_cut_off() {
        // The client's end is kept but never read: 64 bytes fit, then writes wait.
        let (ours, _client) = tokio::io::duplex(64);
        let cut = CancellationToken::new();
        let mut stream = CutOff::new(ours, cut.clone());
        stream.write_all(&[0; 64]).await.unwrap();
        let stalled = tokio::spawn(async move { stream.write_all(&[0; 64]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stalled.is_finished(), "the write waits for the client");
        cut.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), stalled)
            .await
            .expect("the cut ends the write")
            .unwrap();
        assert_eq!(
            result.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::BrokenPipe)
        );
    }
}
