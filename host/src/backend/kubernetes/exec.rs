//! Programs in a pod over the API server's exec protocols, with end of input passed on exactly
//! on every Kubernetes version:
//! - WebSocket `v5.channel.k8s.io` (Kubernetes 1.30 and later). One frame is one channel byte
//!   and data: 0 stdin, 1 stdout, 2 stderr, 3 the exit status (a `Status` object), 4 terminal
//!   size, 255 "close channel" (how end of input is said).
//! - SPDY/3.1 with exec protocol v4 (spdy.rs) where v5 is missing: before 1.30 the WebSocket
//!   exec speaks only v4, which cannot say "end of input" at all. `kubectl` falls back the same.
//!
//! Which one: a server older than 1.30 gets SPDY at once. Newer ones are asked for v5 alone; a
//! server that answers that with anything but a switch to v5 has not started the program, so
//! the exec is made again over SPDY, and every later one goes there directly.
//!
//! Reading and writing run as two tasks, so a client that stops reading output never blocks
//! its own keystrokes, and output is never dropped: a full SSH window holds the reader, which
//! holds the connection, which holds the API server.
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, Stream, StreamExt};
use hyper_util::rt::TokioIo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::AttachParams;
use kube::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, SimplexStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::spdy;
use crate::backend::{exit_reason_from_code, ExitReason, Output, OutputStream};

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The WebSocket exec protocol that can half-close stdin; the only one asked for.
pub const V5_PROTOCOL: &str = "v5.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Input pipe and frame size: large enough for bulk uploads (scp, SFTP).
const STDIN_BUFFER: usize = 64 * 1024;
/// Keeps idle sessions' streams open through proxies and load balancers.
pub(super) const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long input written before the stream was dropped may take to reach the program.
pub(super) const STDIN_DRAIN: Duration = Duration::from_secs(5);
/// Largest error answer to an exec request that is read for its message.
const REFUSAL_LIMIT: usize = 64 * 1024;

/// Where a program runs.
#[derive(Clone)]
pub struct Target {
    pub client: Client,
    /// What the API server is known to speak; shared by every target of one backend.
    pub protocol: ExecProtocol,
    /// For log lines: the connection the program belongs to.
    pub connection_id: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// The protocol a program's stream runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    WebSocketV5,
    Spdy,
}

const UNKNOWN: u8 = 0;
const WEBSOCKET: u8 = 1;
const SPDY: u8 = 2;

/// Which exec protocol an API server speaks, once known.
#[derive(Clone, Default)]
pub struct ExecProtocol(Arc<AtomicU8>);

impl ExecProtocol {
    /// From the server's version: before 1.30 there is no v5 (1.29 has it only behind an alpha
    /// feature gate), so SPDY at once; later or unreadable versions are asked for v5 first.
    pub fn for_version(major: &str, minor: &str) -> Self {
        let number = |s: &str| {
            s.trim()
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse::<u32>()
                .ok()
        };
        let known = match (number(major), number(minor)) {
            (Some(1), Some(minor)) if minor < 30 => SPDY,
            _ => UNKNOWN,
        };
        Self(Arc::new(AtomicU8::new(known)))
    }

    pub fn known(&self) -> Option<Protocol> {
        match self.0.load(Ordering::Relaxed) {
            WEBSOCKET => Some(Protocol::WebSocketV5),
            SPDY => Some(Protocol::Spdy),
            _ => None,
        }
    }

    fn learn(&self, protocol: Protocol) {
        let value = match protocol {
            Protocol::WebSocketV5 => WEBSOCKET,
            Protocol::Spdy => SPDY,
        };
        self.0.store(value, Ordering::Relaxed);
    }

    /// For the log.
    pub fn describe(&self) -> &'static str {
        match self.known() {
            Some(Protocol::WebSocketV5) => "WebSocket v5.channel.k8s.io",
            Some(Protocol::Spdy) => "SPDY/3.1 (v4.channel.k8s.io)",
            None => "WebSocket v5.channel.k8s.io, else SPDY/3.1",
        }
    }
}

/// How a program's stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Ended(ExitReason),
    /// The stream broke before the API server reported an exit status.
    Lost(String),
}

/// A running program's stream.
pub struct ExecStream {
    pub stdin: tokio::io::WriteHalf<SimplexStream>,
    pub output: OutputStream,
    /// Terminal size changes (columns, rows); `None` without a terminal.
    pub resize: Option<mpsc::Sender<(u16, u16)>>,
    pub exit: watch::Receiver<Option<Exit>>,
    pub protocol: Protocol,
}

/// The program's ends of its channels, which the protocol's tasks serve.
pub(super) struct Ends {
    pub stdin: Option<ReadHalf<SimplexStream>>,
    pub output: mpsc::Sender<anyhow::Result<Output>>,
    pub exit: watch::Sender<Option<Exit>>,
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
    /// Cancelled when the stream ends or its `ExecStream` output is dropped.
    pub cancel: CancellationToken,
    pub connection_id: String,
}

fn plumbing(
    stdin: bool,
    tty: Option<(u16, u16)>,
    protocol: Protocol,
    connection_id: &str,
) -> (Ends, ExecStream) {
    let (stdin_reader, stdin_writer) = tokio::io::simplex(STDIN_BUFFER);
    let (output_tx, output_rx) = mpsc::channel(16);
    let (exit_tx, exit_rx) = watch::channel(None);
    let (resize_tx, resize_rx) = match tty {
        Some(size) => {
            let (tx, rx) = mpsc::channel(8);
            // Kubernetes sizes the terminal only after the start, as kubectl does.
            let _ = tx.try_send(size);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let cancel = CancellationToken::new();
    let ends = Ends {
        stdin: stdin.then_some(stdin_reader),
        output: output_tx,
        exit: exit_tx,
        resize: resize_rx,
        cancel: cancel.clone(),
        connection_id: connection_id.to_string(),
    };
    let stream = ExecStream {
        stdin: stdin_writer,
        output: Box::pin(Outputs {
            rx: output_rx,
            _stop: cancel.drop_guard(),
        }),
        resize: resize_tx,
        exit: exit_rx,
        protocol,
    };
    (ends, stream)
}

/// Opens an exec stream for `argv`. `stdin: false` opens none (helper programs).
pub async fn open(
    target: &Target,
    argv: &[String],
    stdin: bool,
    tty: Option<(u16, u16)>,
) -> anyhow::Result<ExecStream> {
    let params = AttachParams {
        container: Some(target.container.clone()),
        stdin,
        stdout: true,
        // With a terminal everything arrives on stdout; the API refuses both.
        stderr: tty.is_none(),
        tty: tty.is_some(),
        ..AttachParams::default()
    };
    let request = || {
        kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", target.namespace))
            .exec(&target.pod, argv.iter().cloned(), &params)
            .context("cannot build the exec request")
    };
    let failed = || format!("cannot start {:?} in pod {}", argv, target.pod);
    let known = target.protocol.known();
    let mut refused = None;
    if known != Some(Protocol::Spdy) {
        match websocket_v5(&target.client, request()?)
            .await
            .with_context(failed)?
        {
            V5::Upgraded(socket) => {
                target.protocol.learn(Protocol::WebSocketV5);
                let (ends, stream) =
                    plumbing(stdin, tty, Protocol::WebSocketV5, &target.connection_id);
                let (sink, source) = (*socket).split();
                tokio::spawn(read_frames(
                    source,
                    ends.output,
                    ends.exit,
                    ends.cancel.clone(),
                ));
                tokio::spawn(write_frames(sink, ends.stdin, ends.resize, ends.cancel));
                return Ok(stream);
            }
            V5::Refused(why) if known.is_none() => refused = Some(why),
            V5::Refused(why) => bail!("{}: {why}", failed()),
        }
    }
    // Nothing ran on a refused v5 request, so the exec can be made again over SPDY.
    let (ends, stream) = plumbing(stdin, tty, Protocol::Spdy, &target.connection_id);
    if let Err(e) = spdy::open(&target.client, request()?, tty.is_some(), ends).await {
        if let Some(why) = refused {
            tracing::debug!(connection_id = %target.connection_id, reason = %why, "WebSocket v5 exec refused");
        }
        return Err(e.context(failed()));
    }
    if let Some(why) = refused {
        tracing::info!(connection_id = %target.connection_id, refused = %why,
            "the API server has no v5 exec protocol (Kubernetes before 1.30): exec streams use SPDY/3.1 from now on");
        target.protocol.learn(Protocol::Spdy);
    }
    Ok(stream)
}

enum V5 {
    Upgraded(Box<Socket>),
    /// Answered with something other than a switch to WebSocket: nothing was started.
    Refused(String),
}

/// The WebSocket handshake asking for v5 alone (kube's own offers v4 as well).
async fn websocket_v5(client: &Client, request: http::Request<Vec<u8>>) -> anyhow::Result<V5> {
    use http::header::{
        HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
        SEC_WEBSOCKET_VERSION, UPGRADE,
    };
    let (mut parts, body) = request.into_parts();
    let key = generate_key();
    let headers = &mut parts.headers;
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    headers.insert(
        SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&key).context("WebSocket key")?,
    );
    headers.insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(V5_PROTOCOL),
    );
    let response = client
        .send(http::Request::from_parts(
            parts,
            kube::client::Body::from(body),
        ))
        .await
        .context("the exec request failed")?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(V5::Refused(refusal(response).await));
    }
    if !header(&response, UPGRADE).eq_ignore_ascii_case("websocket") {
        bail!(
            "the API server switched to {:?}, not WebSocket",
            header(&response, UPGRADE)
        );
    }
    if header(&response, SEC_WEBSOCKET_ACCEPT) != derive_accept_key(key.as_bytes()) {
        bail!("the WebSocket handshake failed: wrong Sec-WebSocket-Accept");
    }
    if header(&response, SEC_WEBSOCKET_PROTOCOL) != V5_PROTOCOL {
        bail!(
            "the API server chose exec protocol {:?}, though only {V5_PROTOCOL} was asked for",
            header(&response, SEC_WEBSOCKET_PROTOCOL)
        );
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .context("the WebSocket upgrade failed")?;
    Ok(V5::Upgraded(Box::new(
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await,
    )))
}

/// A response header's value ("" when missing or not text).
pub(super) fn header<B>(
    response: &http::Response<B>,
    name: impl http::header::AsHeaderName,
) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Why the API server did not switch protocols, in its own words where it gave them.
pub(super) async fn refusal(response: http::Response<kube::client::Body>) -> String {
    use http_body_util::BodyExt;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), REFUSAL_LIMIT)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = match serde_json::from_slice::<Status>(&body) {
        Ok(s) => s.message.unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&body)
            .trim()
            .chars()
            .take(500)
            .collect(),
    };
    if message.is_empty() {
        format!("the API server answered {status}")
    } else {
        format!("the API server answered {status}: {message}")
    }
}

/// Runs a helper program to its end; returns how it ended and what it printed.
pub async fn run(target: &Target, argv: &[String]) -> anyhow::Result<(ExitReason, String)> {
    run_with_input(target, argv, &[]).await
}

/// Runs a helper program that reads `input` to its end.
pub async fn run_with_input(
    target: &Target,
    argv: &[String],
    input: &[u8],
) -> anyhow::Result<(ExitReason, String)> {
    let mut stream = open(target, argv, !input.is_empty(), None).await?;
    if !input.is_empty() {
        // The helper may print before it has read everything: write while collecting.
        let mut stdin = stream.stdin;
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            stdin.write_all(&input).await?;
            stdin.shutdown().await
        });
        let printed = collect(&mut stream.output).await;
        writer.abort();
        let exit = wait_exit(&mut stream.exit).await?;
        return Ok((exit, printed?));
    }
    let printed = collect(&mut stream.output).await?;
    let exit = wait_exit(&mut stream.exit).await?;
    Ok((exit, printed))
}

async fn collect(output: &mut OutputStream) -> anyhow::Result<String> {
    let mut printed = Vec::new();
    while let Some(item) = output.next().await {
        match item? {
            Output::Stdout(b) | Output::Stderr(b) => printed.extend_from_slice(&b),
        }
    }
    Ok(String::from_utf8_lossy(&printed).into_owned())
}

/// The exit of a program whose output has ended.
pub async fn wait_exit(exit: &mut watch::Receiver<Option<Exit>>) -> anyhow::Result<ExitReason> {
    let ended = exit
        .wait_for(Option::is_some)
        .await
        .map(|v| v.clone())
        .ok()
        .flatten();
    match ended {
        Some(Exit::Ended(reason)) => Ok(reason),
        Some(Exit::Lost(why)) => anyhow::bail!("{why}"),
        None => anyhow::bail!("the exec stream ended without an exit status"),
    }
}

/// Output channel; dropping it (the session ended) stops the stream's tasks and closes it.
struct Outputs {
    rx: mpsc::Receiver<anyhow::Result<Output>>,
    _stop: DropGuard,
}

impl Stream for Outputs {
    type Item = anyhow::Result<Output>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

async fn read_frames(
    mut source: SplitStream<Socket>,
    output: mpsc::Sender<anyhow::Result<Output>>,
    exit: watch::Sender<Option<Exit>>,
    cancel: CancellationToken,
) {
    let ended = loop {
        let message = tokio::select! {
            _ = cancel.cancelled() => break Exit::Lost("the session closed the stream".into()),
            m = source.next() => m,
        };
        let frame = match message {
            Some(Ok(Message::Binary(frame))) => frame,
            Some(Ok(Message::Close(_))) | None => {
                break Exit::Lost("the API server closed the stream without an exit status".into())
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => break Exit::Lost(format!("the exec stream broke: {e}")),
        };
        // A frame of only the channel byte opens the channel; it carries nothing.
        if frame.len() < 2 {
            continue;
        }
        let data = frame.slice(1..);
        let item = match frame[0] {
            STDOUT => Output::Stdout(data),
            STDERR => Output::Stderr(data),
            STATUS => {
                let (reason, message) = status_exit(&data);
                if let Some(message) = message {
                    let _ = output
                        .send(Ok(Output::Stderr(Bytes::from(format!(
                            "containerssh: {message}\n"
                        )))))
                        .await;
                }
                break Exit::Ended(reason);
            }
            _ => continue,
        };
        if output.send(Ok(item)).await.is_err() {
            break Exit::Lost("the session closed the stream".into());
        }
    };
    // The exit first, then the end of output: whoever sees the output end finds the exit.
    let _ = exit.send(Some(ended));
    drop(output);
    cancel.cancel();
}

async fn write_frames(
    mut sink: SplitSink<Socket, Message>,
    mut stdin: Option<ReadHalf<SimplexStream>>,
    mut resize: Option<mpsc::Receiver<(u16, u16)>>,
    cancel: CancellationToken,
) {
    let mut buffer = vec![0u8; STDIN_BUFFER + 1];
    let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => {
                // Input written before the stream was dropped still reaches the program, then
                // its end (a forwarded connection's last bytes before its close).
                let _ = tokio::time::timeout(STDIN_DRAIN, async {
                    while stdin.is_some() {
                        let read = read_stdin(&mut stdin, &mut buffer[1..]).await;
                        let frame = stdin_frame(read, &mut buffer, &mut stdin);
                        if sink.send(frame).await.is_err() {
                            return;
                        }
                    }
                })
                .await;
                break;
            }
            read = read_stdin(&mut stdin, &mut buffer[1..]) => stdin_frame(read, &mut buffer, &mut stdin),
            size = next_size(&mut resize) => match size {
                Some((columns, rows)) => {
                    let mut frame = vec![RESIZE];
                    frame.extend_from_slice(format!("{{\"Width\":{columns},\"Height\":{rows}}}").as_bytes());
                    Message::Binary(frame.into())
                }
                None => {
                    resize = None;
                    continue;
                }
            },
            _ = ping.tick() => Message::Ping(Bytes::new()),
        };
        if sink.send(frame).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

/// The message for what `read_stdin` read into `buffer[1..]`: the input, or at its end the
/// half-close (and no more input).
fn stdin_frame(
    read: Option<usize>,
    buffer: &mut [u8],
    stdin: &mut Option<ReadHalf<SimplexStream>>,
) -> Message {
    match read {
        Some(n) => {
            buffer[0] = STDIN;
            Message::Binary(Bytes::copy_from_slice(&buffer[..=n]))
        }
        None => {
            *stdin = None;
            Message::Binary(Bytes::from_static(&[CLOSE, STDIN]))
        }
    }
}

/// The next chunk of input (its length in `buffer`), or `None` at its end; pends forever once
/// there is no input.
pub(super) async fn read_stdin(
    stdin: &mut Option<ReadHalf<SimplexStream>>,
    buffer: &mut [u8],
) -> Option<usize> {
    match stdin {
        Some(reader) => match reader.read(buffer).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

/// The next terminal size; pends forever once there are no more.
pub(super) async fn next_size(
    resize: &mut Option<mpsc::Receiver<(u16, u16)>>,
) -> Option<(u16, u16)> {
    match resize {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The exit reason in an exec status (v4 and v5 alike), and a message for the user when the program could
/// not run at all. A program killed by signal N ends with code 128+N, as under Docker.
pub fn status_exit(data: &[u8]) -> (ExitReason, Option<String>) {
    let status: Status = match serde_json::from_slice(data) {
        Ok(s) => s,
        Err(e) => {
            return (
                ExitReason::Status(255),
                Some(format!("unreadable exit status: {e}")),
            )
        }
    };
    if status.status.as_deref() == Some("Success") {
        return (ExitReason::Status(0), None);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .and_then(|causes| {
                causes
                    .iter()
                    .find(|c| c.reason.as_deref() == Some("ExitCode"))
            })
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.trim().parse::<i64>().ok());
        if let Some(code) = code {
            return (exit_reason_from_code(code), None);
        }
    }
    let message = status
        .message
        .unwrap_or_else(|| "the program could not run".into());
    // As a shell reports it: 127 for a missing program, 126 for one that cannot run.
    let code = if message.contains("not found") || message.contains("no such file") {
        127
    } else {
        126
    };
    (ExitReason::Status(code), Some(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_frames_map_to_exit_reasons() {
        assert_eq!(
            status_exit(br#"{"status":"Success"}"#),
            (ExitReason::Status(0), None)
        );
        let code = |c: &str| {
            format!(
                r#"{{"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{{"causes":[{{"reason":"ExitCode","message":"{c}"}}]}}}}"#
            )
        };
        assert_eq!(
            status_exit(code("7").as_bytes()),
            (ExitReason::Status(7), None)
        );
        assert_eq!(
            status_exit(code("143").as_bytes()),
            (ExitReason::Signal("TERM".into()), None)
        );
        let missing = br#"{"status":"Failure","message":"exec: \"nosuch\": executable file not found in $PATH","reason":"InternalError"}"#;
        let (reason, message) = status_exit(missing);
        assert_eq!(reason, ExitReason::Status(127));
        assert!(message.unwrap().contains("nosuch"));
        assert_eq!(status_exit(b"{nonsense").0, ExitReason::Status(255));
    }

    #[test]
    fn servers_before_1_30_get_spdy_at_once() {
        let known = |major, minor| ExecProtocol::for_version(major, minor).known();
        assert_eq!(known("1", "20"), Some(Protocol::Spdy));
        assert_eq!(known("1", "29+"), Some(Protocol::Spdy));
        assert_eq!(known("1", "30"), None);
        assert_eq!(known("1", "33+"), None);
        assert_eq!(known("", ""), None);
        let memo = ExecProtocol::default();
        let shared = memo.clone();
        memo.learn(Protocol::Spdy);
        assert_eq!(shared.known(), Some(Protocol::Spdy));
    }
}
