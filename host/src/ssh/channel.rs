//! One session channel: waits for its container and its program, then bridges stdin,
//! stdout/stderr, window size, signals and the exit status.
//!
//! The task runs on its connection's tracker and stops when the connection ends. The russh
//! callbacks reach it through `ChannelControls`, which never block them: the program is handed
//! over once, window sizes coalesce (the latest wins), and signals go through a small bounded
//! queue.
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelMsg, Disconnect};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{sig_from_name, Command, ExitReason, Output, Process, ProgramSpec};
use crate::ssh::connection::{Connection, DISCONNECT_SEND_TIMEOUT};

/// Signals waiting for delivery per channel; more are dropped (a program cannot tell one
/// pending SIGINT from ten, and delivering one takes a helper exec).
const SIGNAL_QUEUE: usize = 8;

/// What a session runs.
pub struct Program {
    /// With `agent` set, the agent socket must listen first.
    pub spec: ProgramSpec,
    /// The client asked for X11 forwarding: the display must listen first.
    pub x11: Option<crate::ssh::listen::X11Request>,
}

/// The russh handler's side of a channel task's controls.
pub struct ChannelControls {
    start: Option<oneshot::Sender<Program>>,
    size: watch::Sender<Option<(u32, u32)>>,
    signals: mpsc::Sender<String>,
}

/// The channel task's side.
pub struct ControlReceivers {
    start: oneshot::Receiver<Program>,
    size: watch::Receiver<Option<(u32, u32)>>,
    signals: mpsc::Receiver<String>,
}

/// A connected pair of controls for one channel.
pub fn controls() -> (ChannelControls, ControlReceivers) {
    let (start_tx, start) = oneshot::channel();
    let (size_tx, size) = watch::channel(None);
    let (signals_tx, signals) = mpsc::channel(SIGNAL_QUEUE);
    (
        ChannelControls {
            start: Some(start_tx),
            size: size_tx,
            signals: signals_tx,
        },
        ControlReceivers {
            start,
            size,
            signals,
        },
    )
}

/// Why a signal was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SignalDropped {
    /// Too many signals are waiting for delivery.
    QueueFull,
    /// The channel's task has ended.
    Finished,
}

impl ChannelControls {
    /// Hands the program to the channel task; false if it was handed over before or the task
    /// has ended.
    pub fn start(&mut self, program: Program) -> bool {
        self.start.take().is_some_and(|tx| tx.send(program).is_ok())
    }

    /// The terminal's new size. Sizes not yet applied are replaced: a storm of window changes
    /// costs one resize, of the latest size.
    pub fn resize(&self, columns: u32, rows: u32) {
        self.size.send_replace(Some((columns, rows)));
    }

    /// Queues a signal for the program, without waiting.
    pub fn signal(&self, name: String) -> Result<(), SignalDropped> {
        self.signals.try_send(name).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SignalDropped::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SignalDropped::Finished,
        })
    }

    /// Whether the channel's task has ended.
    pub fn finished(&self) -> bool {
        self.signals.is_closed()
    }
}

pub struct ChannelTask {
    pub conn: Arc<Connection>,
    pub channel: Channel<Msg>,
    pub reply: ChannelOpenHandle,
    pub controls: ControlReceivers,
    pub handle: Handle,
    pub session: u32,
}

impl ChannelTask {
    /// The channel's whole life. Run through `Connection::spawn`: it is dropped at its next
    /// await when the connection ends.
    pub async fn run(self) {
        let ChannelTask {
            conn,
            channel,
            reply,
            controls,
            handle,
            session,
        } = self;
        let ControlReceivers {
            start,
            size: mut sizes,
            signals: mut signal_queue,
        } = controls;
        let cid = conn.id.clone();
        let workload = match conn.workload_for_session(session).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(connection_id = %cid, session, error = format!("{e:#}"), "cannot start the container");
                conn.audit_now(
                    "backend-error",
                    serde_json::json!({"session": session, "stage": "container_start", "error": format!("{e:#}")}),
                )
                .await;
                // A reason instead of a silent close; details stay in the gateway's log. No
                // channel-open failure is sent: it travels on russh's priority queue, could
                // overtake the disconnect, and OpenSSH exits silently on it. The disconnect ends
                // the connection; the open request is dropped (unanswered) after that.
                let reason = format!(
                    "containerssh: your container could not be started (connection {cid}); please contact the administrator"
                );
                let _ = tokio::time::timeout(
                    DISCONNECT_SEND_TIMEOUT,
                    handle.disconnect(Disconnect::ByApplication, reason, String::new()),
                )
                .await;
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                drop(reply);
                return;
            }
        };
        reply.accept().await;
        let (mut reader, writer) = channel.split();
        let channel_id = writer.id();

        // Until exec/shell/subsystem arrives, what the client sends stays in the channel
        // (within the window it was granted) for the program: nothing is read ahead of it. An
        // error: the handler dropped its side (channel closed, program refused).
        let program = start.await.ok();
        let Some(Program { mut spec, x11 }) = program else {
            conn.release_session_workload(&workload).await;
            return;
        };
        if spec.agent && !conn.agent.ensure(&conn, &workload).await {
            // The session goes on without an agent (the reason is logged); a variable naming a
            // socket that does not exist would only mislead.
            spec.env.retain(|v| !v.starts_with("SSH_AUTH_SOCK="));
            spec.agent = false;
        }
        if let Some(x11) = x11 {
            // Without a display the session starts without DISPLAY (the reason is logged).
            if let Some(env) = conn.x11.ensure(&conn, &workload, &x11).await {
                spec.env.extend(env);
            }
        }
        let command = spec.command.clone();
        let tty = spec.tty.clone();
        let Process {
            mut stdin,
            mut output,
            control,
        } = match workload.start_program(spec).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(connection_id = %cid, session, error = format!("{e:#}"), "cannot start the program");
                conn.audit_now(
                    "backend-error",
                    serde_json::json!({"session": session, "stage": "process_start", "error": format!("{e:#}")}),
                )
                .await;
                conn.gateway.metrics.backend_error("process_start");
                let _ = writer
                    .extended_data_bytes(
                        1,
                        Bytes::from(format!(
                            "containerssh: cannot start {}\r\n",
                            client_name(&command)
                        )),
                    )
                    .await;
                let _ = writer.exit_status(127).await;
                let _ = writer.eof().await;
                let _ = writer.close().await;
                conn.release_session_workload(&workload).await;
                return;
            }
        };
        tracing::info!(connection_id = %cid, session, program = %describe(&command), "program started");
        conn.audit_now("program", program_fields(session, &command))
            .await;
        // Terminal sessions are recorded (when auditing is on); with `audit.format: binary`
        // every session's I/O.
        let recording = match &conn.audit {
            Some(audit) => {
                let size = tty.as_ref().map(|t| (t.columns, t.rows, t.term.as_str()));
                audit.recording(session, size).await
            }
            None => None,
        };
        if conn.audit_failed() {
            // The recording could not be started: no unrecorded terminal session.
            conn.release_session_workload(&workload).await;
            return;
        }
        let is_tty = tty.is_some();
        let recorder = recording.as_ref().map(|r| r.sender());

        // stdin: everything the client sends, then EOF. One message is taken from the channel
        // only once the previous one is written, so the client's window opens only as fast as
        // the program reads. Ends when the client closes the channel.
        let stdin_pump = async {
            let mut stdin_open = true;
            loop {
                match reader.wait().await {
                    Some(ChannelMsg::Data { data }) if stdin_open => {
                        if let Some(r) = &recorder {
                            r.input(&data).await;
                        }
                        if stdin.write_all(&data).await.is_err() {
                            stdin_open = false;
                        }
                    }
                    // A terminal has no half-close: like sshd, EOF from the client is ignored
                    // there (closing Docker's terminal stream would cut the program's output).
                    Some(ChannelMsg::Eof) if stdin_open && !is_tty => {
                        let _ = stdin.shutdown().await;
                        stdin_open = false;
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                }
            }
        };

        // Resize and signal requests arrive while output flows. Never ends by itself.
        let requests = async {
            let (mut sizes_open, mut signals_open) = (true, true);
            loop {
                tokio::select! {
                    changed = sizes.changed(), if sizes_open => {
                        if changed.is_err() {
                            sizes_open = false;
                            continue;
                        }
                        // Whatever arrived while the last resize was applied collapses here.
                        let latest = *sizes.borrow_and_update();
                        let Some((columns, rows)) = latest else { continue };
                        if let Some(r) = &recorder {
                            r.resize(columns, rows).await;
                        }
                        if let Err(e) = control.resize(columns, rows).await {
                            tracing::warn!(connection_id = %cid, error = format!("{e:#}"), "resize failed");
                        }
                    }
                    name = signal_queue.recv(), if signals_open => {
                        let Some(name) = name else {
                            signals_open = false;
                            continue;
                        };
                        tracing::info!(connection_id = %cid, signal = %name, "delivering signal");
                        if let Err(e) = control.signal(&name).await {
                            tracing::warn!(connection_id = %cid, error = format!("{e:#}"), "signal delivery failed");
                        }
                    }
                    else => std::future::pending::<()>().await,
                }
            }
        };

        let pump = async {
            while let Some(item) = output.next().await {
                conn.first_output();
                let sent = match item {
                    Ok(Output::Stdout(b)) => {
                        if let Some(r) = &recording {
                            r.output(&b).await;
                            if conn.audit_failed() {
                                return false;
                            }
                        }
                        writer.data_bytes(b).await
                    }
                    Ok(Output::Stderr(b)) => {
                        if let Some(r) = &recording {
                            r.stderr(&b).await;
                            if conn.audit_failed() {
                                return false;
                            }
                        }
                        writer.extended_data_bytes(1, b).await
                    }
                    Err(e) => {
                        tracing::warn!(connection_id = %cid, error = format!("{e:#}"), "output stream failed");
                        break;
                    }
                };
                if sent.is_err() {
                    return false;
                }
            }
            true
        };
        // All three run in this task; the first of output's end and the client's close wins.
        let finished = tokio::select! {
            finished = pump => finished,
            _ = stdin_pump => false,
            _ = requests => false,
        };
        if finished {
            match control.exit_reason().await {
                Ok(ExitReason::Status(code)) => {
                    tracing::info!(connection_id = %cid, session, exit_status = code, "program exited");
                    conn.audit_now(
                        "exit",
                        serde_json::json!({"session": session, "status": code}),
                    )
                    .await;
                    let _ = writer.exit_status(code).await;
                }
                Ok(ExitReason::Signal(name)) => {
                    tracing::info!(connection_id = %cid, session, signal = %name, "program killed by signal");
                    conn.audit_now(
                        "exit",
                        serde_json::json!({"session": session, "signal": name}),
                    )
                    .await;
                    let _ = handle
                        .exit_signal_request(
                            channel_id,
                            sig_from_name(&name),
                            false,
                            String::new(),
                            String::new(),
                        )
                        .await;
                }
                Err(e) => {
                    tracing::warn!(connection_id = %cid, error = format!("{e:#}"), "exit status unknown");
                    conn.audit_now(
                        "exit",
                        serde_json::json!({"session": session, "unknown": format!("{e:#}")}),
                    )
                    .await;
                }
            }
            let _ = writer.eof().await;
            let _ = writer.close().await;
        } else {
            // The client went away first: hang the program up like sshd does.
            tracing::info!(connection_id = %cid, session, "channel closed by the client");
            conn.audit_now(
                "exit",
                serde_json::json!({"session": session, "unknown": "the client closed the channel first"}),
            )
            .await;
            if let Err(e) = control.signal("HUP").await {
                tracing::debug!(connection_id = %cid, error = format!("{e:#}"), "hang-up signal failed");
            }
        }
        if let Some(r) = recording {
            r.finish().await;
        }
        conn.release_session_workload(&workload).await;
        // The controls' receivers live until here, so the handler sees the channel as
        // finished only now.
        drop((sizes, signal_queue));
    }
}

/// The audit event of a started program: what the session runs (after the policy).
fn program_fields(session: u32, command: &Command) -> serde_json::Value {
    use serde_json::json;
    match command {
        Command::Shell => json!({"session": session, "shell": true}),
        Command::Exec(command) => json!({"session": session, "command": command}),
        Command::Subsystem(name) => json!({"session": session, "subsystem": name}),
    }
}

/// A program as the client's error line names it (a forced command stays unsaid).
fn client_name(command: &Command) -> String {
    match command {
        Command::Shell => "the shell".into(),
        Command::Exec(_) => "the command".into(),
        Command::Subsystem(name) => format!("subsystem {name:?}"),
    }
}

/// A program as the log names it.
fn describe(command: &Command) -> String {
    match command {
        Command::Shell => "the shell".into(),
        Command::Exec(command) => format!("{command:?}"),
        Command::Subsystem(name) => format!("subsystem {name:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Program {
        Program {
            spec: ProgramSpec {
                command: Command::Shell,
                env: Vec::new(),
                tty: None,
                agent: false,
            },
            x11: None,
        }
    }

    #[tokio::test]
    async fn a_storm_of_window_changes_becomes_the_latest_size() {
        let (controls, mut rx) = controls();
        for i in 0..2000u32 {
            controls.resize(80 + i % 50, 24 + i % 20);
        }
        rx.size.changed().await.unwrap();
        assert_eq!(
            *rx.size.borrow_and_update(),
            Some((80 + 1999 % 50, 24 + 1999 % 20))
        );
        // Nothing else is pending: one resize for the whole storm.
        assert!(!rx.size.has_changed().unwrap());
        controls.resize(100, 30);
        rx.size.changed().await.unwrap();
        assert_eq!(*rx.size.borrow_and_update(), Some((100, 30)));
    }

    #[tokio::test]
    async fn signals_beyond_the_queue_are_dropped_without_blocking() {
        let (controls, mut rx) = controls();
        for _ in 0..SIGNAL_QUEUE {
            assert_eq!(controls.signal("INT".into()), Ok(()));
        }
        assert_eq!(
            controls.signal("TERM".into()),
            Err(SignalDropped::QueueFull)
        );
        assert_eq!(rx.signals.recv().await.as_deref(), Some("INT"));
        assert_eq!(controls.signal("TERM".into()), Ok(()));
    }

    #[tokio::test]
    async fn the_program_is_handed_over_once_and_the_end_is_seen() {
        let (mut controls, rx) = controls();
        assert!(controls.start(spec()));
        assert!(!controls.start(spec()), "a second program is refused");
        assert!(rx.start.await.is_ok());
        assert!(!controls.finished());
        drop(rx.signals);
        assert!(controls.finished());
        assert_eq!(controls.signal("INT".into()), Err(SignalDropped::Finished));
    }
}
