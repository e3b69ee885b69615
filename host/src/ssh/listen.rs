//! Listeners inside the container whose connections come back to the client: `ssh -R`
//! (tcpip-forward), streamlocal-forward, the agent socket of `ssh -A` and the X display of
//! `ssh -X`. The backend listens
//! (`Workload::open_listener`); for each connection it accepts, the gateway opens a channel to
//! the client (forwarded-tcpip, forwarded-streamlocal or auth-agent) and bridges the two.
//!
//! The global request is answered at once, without waiting for the container: russh answers
//! global requests inside the connection loop, and a container start can take seconds. A
//! listener that cannot bind after that is logged and audited (as a refusal). For port 0 the
//! gateway picks the port itself (in the container's own network namespace it is free).
use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::backend::forward::{Accepted, ForwardError, ForwardListener, ListenTarget};
use crate::backend::Workload;
use crate::config::ExecutionMode;
use crate::ssh::connection::Connection;
use crate::ssh::forward::{audit_fields_extended, bridge};

/// Most listeners (`-R` and streamlocal-forward) one connection may have at once.
pub const MAX_LISTENERS: usize = 32;
/// The port range the gateway picks from when the client asks for port 0.
const PICKED_PORTS: std::ops::Range<u32> = 32768..61000;

/// The address a remote forward binds inside the container. As sshd with its default
/// `GatewayPorts no`: the loopback, whatever the client asked for (a loopback address is kept).
pub fn bind_address(requested: &str) -> String {
    let bare = requested.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_loopback() => bare.to_string(),
        _ => "localhost".to_string(),
    }
}

/// A port for a request of port 0.
pub fn pick_port() -> u32 {
    PICKED_PORTS.start + rand::random::<u32>() % (PICKED_PORTS.end - PICKED_PORTS.start)
}

/// How the client names a listener (what cancel requests repeat).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenKey {
    Tcp(String, u32),
    Unix(String),
}

/// The channel each connection a listener accepts opens back to the client.
#[derive(Debug, Clone)]
enum BackTo {
    /// forwarded-tcpip, naming the address and port the client asked for (a picked port for 0).
    Tcp { address: String, port: u32 },
    /// forwarded-streamlocal, naming the socket path.
    Unix(String),
    /// auth-agent@openssh.com.
    Agent,
    /// x11.
    X11,
}

impl From<&ListenKey> for BackTo {
    fn from(key: &ListenKey) -> Self {
        match key {
            ListenKey::Tcp(address, port) => BackTo::Tcp {
                address: address.clone(),
                port: *port,
            },
            ListenKey::Unix(path) => BackTo::Unix(path.clone()),
        }
    }
}

/// The connection's listeners, each cancelled by the client's cancel request or with the
/// connection.
#[derive(Default)]
pub struct Listeners {
    active: HashMap<ListenKey, CancellationToken>,
}

impl Listeners {
    /// Listeners not cancelled.
    pub fn live(&self) -> usize {
        self.active.values().filter(|t| !t.is_cancelled()).count()
    }

    pub fn contains(&self, key: &ListenKey) -> bool {
        self.active.get(key).is_some_and(|t| !t.is_cancelled())
    }

    /// Starts listening for `key` at `target` (in a task of the connection).
    pub fn start(&mut self, conn: &Arc<Connection>, key: ListenKey, target: ListenTarget) {
        self.active.retain(|_, t| !t.is_cancelled());
        let cancel = conn.cancel.child_token();
        let back = BackTo::from(&key);
        self.active.insert(key, cancel.clone());
        let conn2 = conn.clone();
        conn.spawn(async move { serve(conn2, back, target, cancel).await });
    }

    /// Cancels a listener; false if there was none.
    pub fn cancel(&mut self, key: &ListenKey) -> bool {
        match self.active.remove(key) {
            Some(token) => {
                let was_live = !token.is_cancelled();
                token.cancel();
                was_live
            }
            None => false,
        }
    }
}

/// The connection's agent socket (`ssh -A`): one per connection, started with the first
/// session that asks for it.
pub struct AgentSocket {
    /// Inside the container: a directory of its own (0700), as sshd makes.
    pub path: String,
    ready: OnceCell<bool>,
}

impl Default for AgentSocket {
    fn default() -> Self {
        Self {
            path: format!(
                "/tmp/containerssh-agent.{}/agent.sock",
                hex::encode(rand::random::<[u8; 6]>())
            ),
            ready: OnceCell::new(),
        }
    }
}

impl AgentSocket {
    /// Listens at the agent path once per connection; true once it listens.
    pub async fn ensure(&self, conn: &Arc<Connection>, workload: &Arc<dyn Workload>) -> bool {
        *self
            .ready
            .get_or_init(|| async {
                let target = ListenTarget::Agent(self.path.clone());
                match open(conn, workload, &target).await {
                    Some(listener) => {
                        let conn2 = conn.clone();
                        let cancel = conn.cancel.clone();
                        conn.spawn(async move {
                            accept_loop(conn2, BackTo::Agent, target, listener, cancel).await
                        });
                        true
                    }
                    None => false,
                }
            })
            .await
    }
}

/// What a session's x11-req asked for.
#[derive(Debug, Clone)]
pub struct X11Request {
    pub protocol: String,
    /// The (fake) cookie, hexadecimal, as the client sent it.
    pub cookie: String,
    pub screen: u32,
}

/// First display number tried, as sshd's `X11DisplayOffset`.
const X11_FIRST_DISPLAY: u16 = 10;
/// Display numbers tried before giving up.
const X11_DISPLAYS_TRIED: u16 = 10;

/// The connection's X display (`ssh -X`): one per connection, started with the first session
/// that asks for it (OpenSSH sends the same cookie for every session of a connection).
pub struct X11Display {
    ready: OnceCell<Option<(u16, String)>>,
}

impl Default for X11Display {
    fn default() -> Self {
        Self {
            ready: OnceCell::new(),
        }
    }
}

impl X11Display {
    /// Listens for the display once per connection; the environment a session then needs
    /// (`DISPLAY`, `XAUTHORITY`), or None (logged and audited) if it cannot.
    pub async fn ensure(
        &self,
        conn: &Arc<Connection>,
        workload: &Arc<dyn Workload>,
        request: &X11Request,
    ) -> Option<[String; 2]> {
        let ready = self
            .ready
            .get_or_init(|| async {
                if !listening_allowed(conn, "x11", serde_json::json!({})).await {
                    return None;
                }
                let dir = format!(
                    "/tmp/containerssh-x11.{}",
                    hex::encode(rand::random::<[u8; 6]>())
                );
                let xauthority = format!("{dir}/Xauthority");
                for display in X11_FIRST_DISPLAY..X11_FIRST_DISPLAY + X11_DISPLAYS_TRIED {
                    let target = ListenTarget::X11 {
                        display,
                        xauthority: xauthority.clone(),
                        protocol: request.protocol.clone(),
                        cookie: request.cookie.clone(),
                    };
                    match workload.open_listener(&target).await {
                        Ok(listener) => {
                            listening(conn, &target).await;
                            let (conn2, cancel) = (conn.clone(), conn.cancel.clone());
                            let listener: Arc<dyn ForwardListener> = Arc::from(listener);
                            conn.spawn(async move {
                                accept_loop(conn2, BackTo::X11, target, listener, cancel).await
                            });
                            return Some((display, xauthority));
                        }
                        // Taken: the next display.
                        Err(ForwardError::ConnectFailed(_)) => continue,
                        Err(ForwardError::Unavailable(r)) => {
                            refused(conn, &target, "unavailable", &r).await;
                            return None;
                        }
                    }
                }
                tracing::warn!(connection_id = %conn.id, "no free X display in the container");
                conn.gateway.metrics.forward("x11", "bind_failed");
                None
            })
            .await;
        ready.as_ref().map(|(display, xauthority)| {
            [
                format!("DISPLAY=localhost:{display}.{}", request.screen),
                format!("XAUTHORITY={xauthority}"),
            ]
        })
    }
}

fn target_path(target: &ListenTarget) -> String {
    match target {
        ListenTarget::Tcp { host, port } => format!("{host}:{port}"),
        ListenTarget::Unix(p) | ListenTarget::Agent(p) => p.clone(),
        ListenTarget::X11 { display, .. } => format!("localhost:{display}"),
    }
}

/// One listener's life: the container, the listener, then its connections until cancelled.
async fn serve(
    conn: Arc<Connection>,
    back: BackTo,
    target: ListenTarget,
    cancel: CancellationToken,
) {
    let workload = tokio::select! {
        _ = cancel.cancelled() => return,
        w = conn.workload_for_session(0) => w,
    };
    let workload = match workload {
        Ok(w) => w,
        Err(e) => {
            refused(
                &conn,
                &target,
                "unavailable",
                &format!("no container: {e:#}"),
            )
            .await;
            return;
        }
    };
    let listener = tokio::select! {
        _ = cancel.cancelled() => return,
        l = open(&conn, &workload, &target) => l,
    };
    if let Some(listener) = listener {
        accept_loop(conn, back, target, listener, cancel).await;
    }
}

/// The backend's listener, or None (logged and audited) when it cannot listen.
async fn open(
    conn: &Arc<Connection>,
    workload: &Arc<dyn Workload>,
    target: &ListenTarget,
) -> Option<Arc<dyn ForwardListener>> {
    if !listening_allowed(conn, target.kind(), target_fields(target)).await {
        return None;
    }
    match workload.open_listener(target).await {
        Ok(l) => {
            listening(conn, target).await;
            Some(Arc::from(l))
        }
        Err(ForwardError::Unavailable(r)) => {
            refused(conn, target, "unavailable", &r).await;
            None
        }
        Err(ForwardError::ConnectFailed(r)) => {
            refused(conn, target, "bind_failed", &r).await;
            None
        }
    }
}

/// Listeners live for the connection, so they need its one container (connection mode);
/// otherwise the refusal is logged and audited as `kind`.
async fn listening_allowed(conn: &Arc<Connection>, kind: &str, fields: serde_json::Value) -> bool {
    if conn.workload_settings().mode() == ExecutionMode::Connection {
        return true;
    }
    let reason = "listening needs the connection execution mode (one container per connection)";
    refused_as(conn, kind, "", fields, "unavailable", reason).await;
    false
}

async fn listening(conn: &Arc<Connection>, target: &ListenTarget) {
    let kind = target.kind();
    tracing::info!(connection_id = %conn.id, kind, target = %target_path(target), "listening in the container");
    conn.gateway.metrics.forward(kind, "ok");
    conn.audit_now(
        "forward",
        audit_fields_extended(
            &target_fields(target),
            serde_json::json!({"kind": kind, "result": "listening"}),
        ),
    )
    .await;
}

fn target_fields(target: &ListenTarget) -> serde_json::Value {
    match target {
        ListenTarget::Tcp { host, port } => serde_json::json!({"host": host, "port": port}),
        ListenTarget::Unix(path) | ListenTarget::Agent(path) => serde_json::json!({"path": path}),
        ListenTarget::X11 { display, .. } => serde_json::json!({"display": display}),
    }
}

async fn refused(conn: &Arc<Connection>, target: &ListenTarget, result: &str, reason: &str) {
    let (kind, path, fields) = (target.kind(), target_path(target), target_fields(target));
    refused_as(conn, kind, &path, fields, result, reason).await;
}

/// A listener that cannot be: logged, counted and audited.
async fn refused_as(
    conn: &Arc<Connection>,
    kind: &str,
    target: &str,
    fields: serde_json::Value,
    result: &str,
    reason: &str,
) {
    tracing::warn!(connection_id = %conn.id, kind, %target, %reason, "cannot listen in the container");
    conn.gateway.metrics.forward(kind, result);
    conn.audit_now(
        "forward",
        audit_fields_extended(
            &fields,
            serde_json::json!({"kind": kind, "result": result, "reason": reason}),
        ),
    )
    .await;
}

/// Hands each accepted connection to the client until cancelled (connections already open
/// go on; the listener closes once the last hand-over is done).
async fn accept_loop(
    conn: Arc<Connection>,
    back: BackTo,
    target: ListenTarget,
    listener: Arc<dyn ForwardListener>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accepted() => a,
        };
        let Some(accepted) = accepted else {
            tracing::info!(connection_id = %conn.id, kind = target.kind(), target = %target_path(&target), "the listener in the container ended");
            break;
        };
        let (conn2, back2, target2, listener2) =
            (conn.clone(), back.clone(), target.clone(), listener.clone());
        conn.spawn(async move { hand_over(conn2, back2, target2, listener2, accepted).await });
    }
    tracing::info!(connection_id = %conn.id, kind = target.kind(), target = %target_path(&target), "listener closed");
}

/// One accepted connection: a channel to the client, then the bridge.
async fn hand_over(
    conn: Arc<Connection>,
    back: BackTo,
    target: ListenTarget,
    listener: Arc<dyn ForwardListener>,
    accepted: Accepted,
) {
    let Some(handle) = conn.handle.get().cloned() else {
        listener.refuse(accepted.id).await;
        return;
    };
    let (kind, channel) = match back {
        BackTo::Agent => ("auth-agent", handle.channel_open_agent().await),
        BackTo::X11 => (
            "x11",
            handle
                .channel_open_x11(accepted.originator_host.clone(), accepted.originator_port)
                .await,
        ),
        BackTo::Unix(path) => (
            "forwarded-streamlocal",
            handle.channel_open_forwarded_streamlocal(path).await,
        ),
        BackTo::Tcp { address, port } => (
            "forwarded-tcpip",
            handle
                .channel_open_forwarded_tcpip(
                    address,
                    port,
                    accepted.originator_host.clone(),
                    accepted.originator_port,
                )
                .await,
        ),
    };
    let originator = format!("{}:{}", accepted.originator_host, accepted.originator_port);
    let channel = match channel {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(connection_id = %conn.id, kind, target = %target_path(&target), error = %e, "the client refused the forwarded connection");
            conn.gateway.metrics.forward(kind, "client_refused");
            listener.refuse(accepted.id).await;
            return;
        }
    };
    let stream = listener.take(accepted.id).await;
    // The listener may close now (a cancel) without ending this connection.
    drop(listener);
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(connection_id = %conn.id, kind, error = %e, "cannot take the accepted connection");
            conn.gateway.metrics.forward(kind, "connect_failed");
            let _ = channel.close().await;
            return;
        }
    };
    conn.gateway.metrics.forward(kind, "ok");
    tracing::info!(connection_id = %conn.id, kind, target = %target_path(&target), %originator, "forwarded connection open");
    let (to_container, to_client) = bridge(&conn, channel, stream).await;
    conn.gateway
        .metrics
        .forward_bytes(kind, to_container, to_client);
    tracing::info!(connection_id = %conn.id, kind, target = %target_path(&target), to_container, to_client, "forwarded connection closed");
    conn.audit_now(
        "forward",
        audit_fields_extended(
            &target_fields(&target),
            serde_json::json!({"kind": kind, "result": "closed", "originator": originator,
                "bytesToContainer": to_container, "bytesToClient": to_client}),
        ),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_listener_binds_the_loopback_as_sshd_without_gateway_ports() {
        assert_eq!(bind_address(""), "localhost");
        assert_eq!(bind_address("*"), "localhost");
        assert_eq!(bind_address("0.0.0.0"), "localhost");
        assert_eq!(bind_address("10.1.2.3"), "localhost");
        assert_eq!(bind_address("localhost"), "localhost");
        assert_eq!(bind_address("127.0.0.1"), "127.0.0.1");
        assert_eq!(bind_address("[::1]"), "::1");
    }

    #[test]
    fn a_picked_port_is_in_the_ephemeral_range() {
        for _ in 0..1000 {
            assert!(PICKED_PORTS.contains(&pick_port()));
        }
    }
}
