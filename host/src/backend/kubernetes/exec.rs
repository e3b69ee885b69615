//! Programs in a pod over the API server's exec WebSocket (`v5.channel.k8s.io`, or `v4` on
//! servers before Kubernetes 1.30). One frame is one channel byte and data: 0 stdin, 1 stdout,
//! 2 stderr, 3 the exit status (a `Status` object), 4 terminal size, 255 "close channel"
//! (v5 only). Reading and writing run as two tasks, so a client that stops reading output
//! never blocks its own keystrokes, and output is never dropped: a full SSH window holds the
//! reader, which holds the WebSocket, which holds the API server.
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, Stream, StreamExt};
use hyper_util::rt::TokioIo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::AttachParams;
use kube::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, SimplexStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::backend::{exit_reason_from_code, ExitReason, Output, OutputStream};

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Input pipe and frame size: large enough for bulk uploads (scp, SFTP).
const STDIN_BUFFER: usize = 64 * 1024;
/// Keeps idle sessions' streams open through proxies and load balancers.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// v4 streams cannot pass end of input on: after it, the stream is closed once the program
/// has been this quiet, so programs that wait for EOF (cat, sftp-server, scp -t) end.
pub const V4_EOF_QUIET: Duration = Duration::from_secs(1);
/// How long the server may take to answer our close of a v4 stream.
const CLOSE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a program runs.
#[derive(Clone)]
pub struct Target {
    pub client: Client,
    /// For log lines: the connection the program belongs to.
    pub connection_id: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
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
    /// Whether the server understands stdin EOF (v5); v4 streams cannot pass it on.
    pub half_close: bool,
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
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", target.namespace))
        .exec(&target.pod, argv.iter().cloned(), &params)
        .context("cannot build the exec request")?;
    let connection = target
        .client
        .connect(request)
        .await
        .with_context(|| format!("cannot start {:?} in pod {}", argv, target.pod))?;
    let half_close = connection.supports_stream_close();
    let (sink, source) = connection.into_stream().split();

    let (stdin_reader, stdin_writer) = tokio::io::simplex(STDIN_BUFFER);
    let (output_tx, output_rx) = mpsc::channel(16);
    let (exit_tx, exit_rx) = watch::channel(None);
    let (resize_tx, resize_rx) = match tty {
        Some(_) => {
            let (tx, rx) = mpsc::channel(8);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    if let (Some(tx), Some(size)) = (&resize_tx, tty) {
        let _ = tx.try_send(size);
    }
    let cancel = CancellationToken::new();
    let activity = Arc::new(Activity::default());
    tokio::spawn(read_frames(
        source,
        output_tx,
        exit_tx,
        activity.clone(),
        cancel.clone(),
    ));
    tokio::spawn(write_frames(
        sink,
        stdin.then_some(stdin_reader),
        resize_rx,
        half_close,
        activity,
        cancel.clone(),
        target.connection_id.clone(),
    ));
    Ok(ExecStream {
        stdin: stdin_writer,
        output: Box::pin(Outputs {
            rx: output_rx,
            _stop: cancel.drop_guard(),
        }),
        resize: resize_tx,
        exit: exit_rx,
        half_close,
    })
}

/// Runs a helper program to its end; returns how it ended and what it printed.
pub async fn run(target: &Target, argv: &[String]) -> anyhow::Result<(ExitReason, String)> {
    run_with_input(target, argv, &[]).await
}

/// Runs a helper program that reads `input` and ends by itself: its stdin stays open (a v4
/// stream could not pass its end on), so the input must say where it ends.
pub async fn run_with_input(
    target: &Target,
    argv: &[String],
    input: &[u8],
) -> anyhow::Result<(ExitReason, String)> {
    let mut stream = open(target, argv, !input.is_empty(), None).await?;
    if !input.is_empty() {
        stream
            .stdin
            .write_all(input)
            .await
            .context("cannot write the helper's input")?;
    }
    let mut printed = Vec::new();
    while let Some(item) = stream.output.next().await {
        match item? {
            Output::Stdout(b) | Output::Stderr(b) => printed.extend_from_slice(&b),
        }
    }
    let exit = wait_exit(&mut stream.exit).await?;
    Ok((exit, String::from_utf8_lossy(&printed).into_owned()))
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

/// What the reader tells the writer: output arrived; and what the writer tells the reader:
/// it closed a v4 stream after end of input.
#[derive(Default)]
struct Activity {
    output: Notify,
    closed_after_eof: AtomicBool,
}

/// Output channel; dropping it (the session ended) stops both tasks and closes the stream.
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
    activity: Arc<Activity>,
    cancel: CancellationToken,
) {
    let ended = loop {
        let message = tokio::select! {
            _ = cancel.cancelled() => break if activity.closed_after_eof.load(Ordering::Acquire) {
                lost(&activity, None)
            } else {
                Exit::Lost("the session closed the stream".into())
            },
            m = source.next() => m,
        };
        let frame = match message {
            Some(Ok(Message::Binary(frame))) => frame,
            Some(Ok(Message::Close(_))) | None => break lost(&activity, None),
            Some(Ok(_)) => continue,
            Some(Err(e)) => break lost(&activity, Some(e)),
        };
        // A frame of only the channel byte opens the channel; it carries nothing.
        if frame.len() < 2 {
            continue;
        }
        activity.output.notify_one();
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

/// Why a stream ended without an exit status.
fn lost(activity: &Activity, error: Option<tokio_tungstenite::tungstenite::Error>) -> Exit {
    Exit::Lost(if activity.closed_after_eof.load(Ordering::Acquire) {
        "exit status unknown: this cluster's exec protocol (v4.channel.k8s.io) cannot pass end of input on, so the stream was closed after it".into()
    } else if let Some(e) = error {
        format!("the exec stream broke: {e}")
    } else {
        "the API server closed the stream without an exit status".into()
    })
}

async fn write_frames(
    mut sink: SplitSink<Socket, Message>,
    mut stdin: Option<ReadHalf<SimplexStream>>,
    mut resize: Option<mpsc::Receiver<(u16, u16)>>,
    half_close: bool,
    activity: Arc<Activity>,
    cancel: CancellationToken,
    connection_id: String,
) {
    let mut buffer = vec![0u8; STDIN_BUFFER + 1];
    let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    // Set once a v4 stream saw end of input: when to close it unless output goes on.
    let mut quiet_until: Option<Instant> = None;
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = activity.output.notified(), if quiet_until.is_some() => {
                quiet_until = Some(Instant::now() + V4_EOF_QUIET);
                continue;
            }
            _ = sleep_until_some(quiet_until) => {
                tracing::warn!(connection_id = %connection_id, "exec stream v4 cannot pass end of input on; closing it (Kubernetes 1.30 and later pass it exactly)");
                activity.closed_after_eof.store(true, Ordering::Release);
                break;
            }
            read = read_stdin(&mut stdin, &mut buffer[1..]) => match read {
                Some(n) => {
                    buffer[0] = STDIN;
                    Message::Binary(Bytes::copy_from_slice(&buffer[..=n]))
                }
                None => {
                    stdin = None;
                    if !half_close {
                        // v4 has no way to say "end of input", and closing the stream cuts
                        // whatever the program prints afterwards: close it once output stops.
                        quiet_until = Some(Instant::now() + V4_EOF_QUIET);
                        continue;
                    }
                    Message::Binary(Bytes::from_static(&[CLOSE, STDIN]))
                }
            },
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
    if activity.closed_after_eof.load(Ordering::Acquire) {
        // The server should answer the close at once; a server that does not must not keep
        // the session open.
        tokio::time::sleep(CLOSE_ANSWER_TIMEOUT).await;
        cancel.cancel();
    }
}

/// The next chunk of input (its length in `buffer`), or `None` at its end; pends forever once
/// there is no input.
async fn read_stdin(
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

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn next_size(resize: &mut Option<mpsc::Receiver<(u16, u16)>>) -> Option<(u16, u16)> {
    match resize {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The exit reason in a v4/v5 status frame, and a message for the user when the program could
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
}
