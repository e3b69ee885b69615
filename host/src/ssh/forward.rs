//! Forwarded connections from the client into the container: `ssh -L` and `-D`
//! (direct-tcpip) and direct-streamlocal. The backend makes the connection from inside the
//! workload (`Workload::open_forward`); this bridges it with the SSH channel. The open request
//! is answered only once the backend has connected (or failed: the client gets "connect
//! failed", as from sshd).
use std::sync::Arc;

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::backend::forward::ForwardTarget as Target;
use crate::backend::forward::{ForwardError, ForwardStream};
use crate::config::ExecutionMode;
use crate::ssh::connection::Connection;

/// How long the client's EOF may take to reach the workload side.
const EOF_PASS_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Bytes read from the forwarded connection at once (one SSH data message at most).
const READ_CHUNK: usize = 32 * 1024;

fn audit_fields(target: &Target) -> serde_json::Value {
    match target {
        Target::Tcp { host, port } => serde_json::json!({"host": host, "port": port}),
        Target::Unix(path) => serde_json::json!({"path": path}),
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
        let stream = match open(&conn, &target).await {
            Ok(s) => s,
            Err(refusal) => {
                let (result, failure, reason) = match refusal {
                    ForwardError::Unavailable(r) => (
                        "unavailable",
                        ChannelOpenFailure::AdministrativelyProhibited,
                        r,
                    ),
                    ForwardError::ConnectFailed(r) => {
                        ("connect_failed", ChannelOpenFailure::ConnectFailed, r)
                    }
                };
                tracing::info!(connection_id = %cid, kind, target = ?target, %reason, "forwarded connection refused");
                conn.gateway.metrics.forward(kind, result);
                let mut fields = audit_fields(&target);
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
        let (to_container, to_client) = bridge(&conn, channel, stream).await;
        conn.gateway
            .metrics
            .forward_bytes(kind, to_container, to_client);
        tracing::info!(connection_id = %cid, kind, target = ?target, to_container, to_client, "forwarded connection closed");
        let mut fields = audit_fields(&target);
        extend(
            &mut fields,
            serde_json::json!({"kind": kind, "result": "closed", "originator": originator,
                "bytesToContainer": to_container, "bytesToClient": to_client}),
        );
        conn.audit_now("forward", fields).await;
    }
}

/// `base` with the fields of `more` added.
pub(crate) fn audit_fields_extended(
    base: &serde_json::Value,
    more: serde_json::Value,
) -> serde_json::Value {
    let mut fields = base.clone();
    extend(&mut fields, more);
    fields
}

fn extend(fields: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(f), serde_json::Value::Object(m)) = (fields.as_object_mut(), more) {
        f.extend(m);
    }
}

/// The connection's container makes the connection.
async fn open(conn: &Arc<Connection>, target: &Target) -> Result<ForwardStream, ForwardError> {
    if conn.workload_settings().mode() != ExecutionMode::Connection {
        return Err(ForwardError::Unavailable(
            "forwarding needs the connection execution mode (one container per connection)".into(),
        ));
    }
    let workload = conn
        .workload_for_session(0)
        .await
        .map_err(|e| ForwardError::Unavailable(format!("no container: {e:#}")))?;
    workload.open_forward(target).await
}

/// Carries bytes both ways until either side closes; returns (to container, to client). With
/// `audit.intercept.forwarding` (binary format), both directions go to the audit log too.
pub(crate) async fn bridge(
    conn: &Connection,
    channel: Channel<Msg>,
    stream: ForwardStream,
) -> (u64, u64) {
    let record = conn.audit.as_ref().and_then(|a| a.forward_io());
    let (mut reader, writer) = channel.split();
    let (mut from_container, mut to_container_io) = tokio::io::split(stream);
    let mut to_container = 0u64;
    let mut to_client = 0u64;
    // Client → container. The channel's window opens only as the container side takes data.
    let upstream = async {
        let mut open = true;
        loop {
            match reader.wait().await {
                Some(ChannelMsg::Data { data }) if open => {
                    if let Some(record) = &record {
                        record.stdin(&data).await;
                        // Unrecorded bytes must not pass (the connection is being ended).
                        if conn.audit_failed() {
                            break;
                        }
                    }
                    if to_container_io.write_all(&data).await.is_err() {
                        open = false;
                    } else {
                        to_container += data.len() as u64;
                    }
                }
                Some(ChannelMsg::Eof) if open => {
                    // Returns once the workload side has everything sent before the EOF.
                    let _ = tokio::time::timeout(EOF_PASS_LIMIT, to_container_io.shutdown()).await;
                    open = false;
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
    };
    // Container → client, until the container side's EOF.
    let downstream = async {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match from_container.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(record) = &record {
                        record.stdout(&buf[..n]).await;
                        if conn.audit_failed() {
                            return;
                        }
                    }
                    if writer
                        .data_bytes(bytes::Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    to_client += n as u64;
                }
            }
        }
        let _ = writer.eof().await;
        // The client may still be sending: wait for its close.
        std::future::pending::<()>().await
    };
    // Ends when the client closes the channel (or the container side fails); then the channel
    // closes and dropping the stream ends the connection in the container.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
    let _ = writer.close().await;
    if let Some(record) = &record {
        record.close().await;
    }
    (to_container, to_client)
}
