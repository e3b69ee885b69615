//! Forwarded connections from the client into the container: `ssh -L` and `-D`
//! (direct-tcpip) and direct-streamlocal. Each connection runs the forwarding helper (`helper/`,
//! placed in the container by the backend) as a process of the container, so the connection is
//! made from the container's own network namespace and file system: a server on the
//! container's localhost is reachable, and with `networkMode: none` nothing outside is.
//!
//! The open request is answered only once the helper has connected (or failed: the client gets
//! "connect failed", as from sshd). Data travels in frames on the helper's stdin and stdout (see
//! `helper/src/main.rs`), so half-closes are exact; closing the helper's stdin ends it at once.
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use tokio::io::AsyncWriteExt;

use crate::backend::{Output, Process, ProcessSpec};
use crate::config::ExecutionMode;
use crate::ssh::connection::Connection;

/// How long the helper may take to start and connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest frame the helper may send (it sends at most 32 KiB).
const MAX_FRAME: usize = 1 << 20;

/// Where a forwarded connection goes, inside the container.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp { host: String, port: u32 },
    Unix(String),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Tcp { .. } => "direct-tcpip",
            Target::Unix(_) => "direct-streamlocal",
        }
    }

    fn helper_args(&self) -> Vec<String> {
        match self {
            Target::Tcp { host, port } => vec!["tcp".into(), host.clone(), port.to_string()],
            Target::Unix(path) => vec!["unix".into(), path.clone()],
        }
    }

    fn audit_fields(&self) -> serde_json::Value {
        match self {
            Target::Tcp { host, port } => serde_json::json!({"host": host, "port": port}),
            Target::Unix(path) => serde_json::json!({"path": path}),
        }
    }
}

/// One forwarded connection, from the open request to its close.
pub struct ForwardTask {
    pub conn: Arc<Connection>,
    pub channel: Channel<Msg>,
    pub reply: ChannelOpenHandle,
    pub target: Target,
    /// The client-side address the connection came from, as the client reported it.
    pub originator: String,
}

/// Why a forward did not connect.
enum Refusal {
    /// Nothing in the container could be asked (execution mode, no helper): "prohibited".
    Unavailable(String),
    /// The helper ran but could not connect: "connect failed".
    ConnectFailed(String),
}

impl ForwardTask {
    /// Runs through `Connection::spawn`, so it ends with the connection.
    pub async fn run(self) {
        let ForwardTask {
            conn,
            channel,
            reply,
            target,
            originator,
        } = self;
        let kind = target.kind();
        let cid = conn.id.clone();
        let started = std::time::Instant::now();
        let process = match open(&conn, &target).await {
            Ok(p) => p,
            Err(refusal) => {
                let (result, failure, reason) = match refusal {
                    Refusal::Unavailable(r) => (
                        "unavailable",
                        ChannelOpenFailure::AdministrativelyProhibited,
                        r,
                    ),
                    Refusal::ConnectFailed(r) => {
                        ("connect_failed", ChannelOpenFailure::ConnectFailed, r)
                    }
                };
                tracing::info!(connection_id = %cid, kind, target = ?target, %reason, "forwarded connection refused");
                conn.gateway.metrics.forward(kind, result);
                let mut fields = target.audit_fields();
                extend(
                    &mut fields,
                    serde_json::json!({"kind": kind, "result": result, "reason": reason, "originator": originator}),
                );
                conn.audit_now("forward", fields).await;
                reply.reject(failure).await;
                return;
            }
        };
        reply.accept().await;
        conn.gateway.metrics.forward(kind, "ok");
        tracing::info!(connection_id = %cid, kind, target = ?target, %originator,
            setup_ms = started.elapsed().as_millis() as u64, "forwarded connection open");
        let (to_container, to_client) = bridge(channel, process).await;
        conn.gateway
            .metrics
            .forward_bytes(kind, to_container, to_client);
        tracing::info!(connection_id = %cid, kind, target = ?target, to_container, to_client, "forwarded connection closed");
        let mut fields = target.audit_fields();
        extend(
            &mut fields,
            serde_json::json!({"kind": kind, "result": "closed", "originator": originator,
                "bytesToContainer": to_container, "bytesToClient": to_client}),
        );
        conn.audit_now("forward", fields).await;
    }
}

fn extend(fields: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(f), serde_json::Value::Object(m)) = (fields.as_object_mut(), more) {
        f.extend(m);
    }
}

/// Starts the helper in the connection's container and waits until it has connected.
async fn open(conn: &Arc<Connection>, target: &Target) -> Result<Process, Refusal> {
    if conn.workload_settings().mode() != ExecutionMode::Connection {
        return Err(Refusal::Unavailable(
            "forwarding needs the connection execution mode (one container per connection)".into(),
        ));
    }
    let workload = conn
        .workload_for_session(0)
        .await
        .map_err(|e| Refusal::Unavailable(format!("no container: {e:#}")))?;
    let helper = workload
        .forwarding_helper()
        .await
        .map_err(|e| Refusal::Unavailable(e.0))?;
    let mut argv = vec![helper];
    argv.extend(target.helper_args());
    let spec = ProcessSpec {
        argv,
        env: Vec::new(),
        tty: None,
    };
    let connected = async {
        let mut process = workload
            .start_process(spec)
            .await
            .map_err(|e| Refusal::Unavailable(format!("cannot start the helper: {e:#}")))?;
        // The helper says "connected" or "error: ..." on stderr before anything else.
        let mut said = Vec::new();
        loop {
            match process.output.next().await {
                Some(Ok(Output::Stderr(b))) => {
                    said.extend_from_slice(&b);
                    let text = String::from_utf8_lossy(&said);
                    if text.starts_with("connected\n") {
                        return Ok(process);
                    }
                    if said.contains(&b'\n') || said.len() > 4096 {
                        let line = text.lines().next().unwrap_or_default();
                        return Err(Refusal::ConnectFailed(
                            line.trim_start_matches("error: ").chars().take(300).collect(),
                        ));
                    }
                }
                Some(Ok(Output::Stdout(_))) => {
                    return Err(Refusal::ConnectFailed("the helper spoke out of turn".into()))
                }
                Some(Err(e)) => return Err(Refusal::ConnectFailed(format!("{e:#}"))),
                None => {
                    return Err(Refusal::Unavailable(
                        "the helper ended without connecting (is the image built for the gateway's architecture?)".into(),
                    ))
                }
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connected)
        .await
        .map_err(|_| Refusal::ConnectFailed(format!("no connection within {CONNECT_TIMEOUT:?}")))?
}

/// Carries bytes both ways until either side closes; returns (to container, to client).
async fn bridge(channel: Channel<Msg>, process: Process) -> (u64, u64) {
    let Process {
        mut stdin,
        mut output,
        control: _control,
    } = process;
    let (mut reader, writer) = channel.split();
    let mut to_container = 0u64;
    let mut to_client = 0u64;
    // Client → container: each data message becomes one frame; EOF an empty frame. The
    // channel's window opens only as the helper takes the frames.
    let upstream = async {
        let mut open = true;
        loop {
            match reader.wait().await {
                Some(ChannelMsg::Data { data }) if open => {
                    let header = (data.len() as u32).to_be_bytes();
                    if stdin.write_all(&header).await.is_err()
                        || stdin.write_all(&data).await.is_err()
                    {
                        open = false;
                    } else {
                        to_container += data.len() as u64;
                    }
                }
                Some(ChannelMsg::Eof) if open => {
                    let _ = stdin.write_all(&[0, 0, 0, 0]).await;
                    let _ = stdin.flush().await;
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        // The channel closed: the end of stdin stops the helper.
        let _ = stdin.shutdown().await;
    };
    // Container → client: frames from the helper's stdout; an empty one is the socket's EOF.
    let downstream = async {
        let mut pending = BytesMut::new();
        let mut eof_sent = false;
        while let Some(item) = output.next().await {
            let chunk: Bytes = match item {
                Ok(Output::Stdout(b)) => b,
                Ok(Output::Stderr(_)) => continue,
                Err(_) => break,
            };
            pending.extend_from_slice(&chunk);
            while pending.len() >= 4 {
                let len =
                    u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
                if len > MAX_FRAME {
                    return;
                }
                if len == 0 {
                    pending.advance(4);
                    if !eof_sent {
                        let _ = writer.eof().await;
                        eof_sent = true;
                    }
                    continue;
                }
                if pending.len() < 4 + len {
                    break;
                }
                pending.advance(4);
                let data = pending.split_to(len).freeze();
                to_client += data.len() as u64;
                if writer.data_bytes(data).await.is_err() {
                    return;
                }
            }
        }
    };
    // Ends when the client closes the channel or the helper ends (both sides finished, or the
    // socket failed); either way the channel closes.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
    let _ = writer.close().await;
    (to_container, to_client)
}
