//! One session channel: waits for its container, buffers input until the program starts,
//! then bridges stdin, stdout/stderr, window size, signals and the exit status.
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelMsg, Disconnect, Sig};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{ExitReason, Output, Process, ProcessSpec};
use crate::ssh::connection::Connection;

/// What the connection handler tells a channel task (from the request callbacks).
pub enum ChannelCommand {
    Start(ProcessSpec),
    Resize { columns: u32, rows: u32 },
    Signal(String),
}

/// Most stdin bytes kept while the program is starting; beyond that the client waits.
const MAX_EARLY_STDIN: usize = 4 * 1024 * 1024;

pub struct ChannelTask {
    pub conn: Arc<Connection>,
    pub channel: Channel<Msg>,
    pub reply: ChannelOpenHandle,
    pub commands: mpsc::UnboundedReceiver<ChannelCommand>,
    pub handle: Handle,
    pub session: u32,
}

impl ChannelTask {
    pub async fn run(self) {
        let ChannelTask {
            conn,
            channel,
            reply,
            mut commands,
            handle,
            session,
        } = self;
        let cid = conn.id.clone();
        let workload = match conn.workload_for_session(session).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(connection_id = %cid, session, error = format!("{e:#}"), "cannot start the container");
                conn.audit(
                    "backend-error",
                    serde_json::json!({"session": session, "stage": "container_start", "error": format!("{e:#}")}),
                );
                // A reason instead of a silent close; details stay in the gateway's log. No
                // channel-open failure is sent: it travels on russh's priority queue, could
                // overtake the disconnect, and OpenSSH exits silently on it. The disconnect ends
                // the connection; the open request is dropped (unanswered) after that.
                let reason = format!(
                    "containerssh: your container could not be started (connection {cid}); please contact the administrator"
                );
                let _ = handle
                    .disconnect(Disconnect::ByApplication, reason, String::new())
                    .await;
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                drop(reply);
                return;
            }
        };
        reply.accept().await;
        let (mut reader, writer) = channel.split();
        let channel_id = writer.id();

        // Phase 1: until exec/shell/subsystem arrives, keep what the client already typed.
        let mut early = Vec::<Bytes>::new();
        let mut early_len = 0usize;
        let mut early_eof = false;
        let spec = loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(ChannelCommand::Start(spec)) => break Some(spec),
                    Some(_) => {}
                    None => break None,
                },
                msg = reader.wait(), if early_len < MAX_EARLY_STDIN => match msg {
                    Some(ChannelMsg::Data { data }) => { early_len += data.len(); early.push(data); }
                    Some(ChannelMsg::Eof) => early_eof = true,
                    Some(ChannelMsg::Close) | None => break None,
                    Some(_) => {}
                },
            }
        };
        let Some(spec) = spec else {
            conn.release_session_workload(&workload).await;
            return;
        };
        let argv = spec.argv.clone();
        let tty = spec.tty.clone();
        let Process {
            mut stdin,
            mut output,
            control,
        } = match workload.start_process(spec).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(connection_id = %cid, session, error = format!("{e:#}"), "cannot start the program");
                conn.audit(
                    "backend-error",
                    serde_json::json!({"session": session, "stage": "process_start", "error": format!("{e:#}")}),
                );
                conn.gateway.metrics.backend_error("process_start");
                let _ = writer
                    .extended_data_bytes(
                        1,
                        Bytes::from(format!(
                            "containerssh: cannot start {:?}\r\n",
                            argv.first().cloned().unwrap_or_default()
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
        tracing::info!(connection_id = %cid, session, program = ?argv, "program started");
        conn.audit(
            "program",
            serde_json::json!({"session": session, "argv": argv}),
        );
        // Terminal sessions are recorded (when auditing is on).
        let recording = match (&conn.audit, &tty) {
            (Some(audit), Some(tty)) => audit.recording(session, tty.columns, tty.rows, &tty.term),
            _ => None,
        };
        if conn.audit_failed() {
            // The recording could not be started: no unrecorded terminal session.
            conn.release_session_workload(&workload).await;
            return;
        }
        let is_tty = tty.is_some();
        let recorder = recording.as_ref().map(|r| r.sender());
        let input_recorder = recorder.clone();

        // stdin: early bytes first, then everything the client sends, then EOF.
        let (closed_tx, closed_rx) = oneshot::channel::<()>();
        let stdin_pump = tokio::spawn(async move {
            let mut stdin_open = true;
            for chunk in early {
                if stdin.write_all(&chunk).await.is_err() {
                    stdin_open = false;
                    break;
                }
            }
            // A terminal has no half-close: like sshd, EOF from the client is ignored there
            // (closing Docker's terminal stream would cut the program's output instead).
            if early_eof && stdin_open && !is_tty {
                let _ = stdin.shutdown().await;
                stdin_open = false;
            }
            loop {
                match reader.wait().await {
                    Some(ChannelMsg::Data { data }) if stdin_open => {
                        if let Some(r) = &input_recorder {
                            r.input(&data).await;
                        }
                        if stdin.write_all(&data).await.is_err() {
                            stdin_open = false;
                        }
                    }
                    Some(ChannelMsg::Eof) if stdin_open && !is_tty => {
                        let _ = stdin.shutdown().await;
                        stdin_open = false;
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                }
            }
            let _ = closed_tx.send(());
        });

        // Resize and signal requests arrive while output flows.
        let control_for_cmds = control.clone();
        let cid_cmds = cid.clone();
        let commands_task = tokio::spawn(async move {
            while let Some(cmd) = commands.recv().await {
                let result = match cmd {
                    ChannelCommand::Resize { columns, rows } => {
                        if let Some(r) = &recorder {
                            r.resize(columns, rows).await;
                        }
                        control_for_cmds.resize(columns, rows).await
                    }
                    ChannelCommand::Signal(name) => {
                        tracing::info!(connection_id = %cid_cmds, signal = %name, "delivering signal");
                        control_for_cmds.signal(&name).await
                    }
                    ChannelCommand::Start(_) => Ok(()),
                };
                if let Err(e) = result {
                    tracing::warn!(connection_id = %cid_cmds, error = format!("{e:#}"), "channel request failed");
                }
            }
        });

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
                    Ok(Output::Stderr(b)) => writer.extended_data_bytes(1, b).await,
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
        let finished = tokio::select! {
            finished = pump => finished,
            _ = closed_rx => false,
        };
        if finished {
            match control.exit_reason().await {
                Ok(ExitReason::Status(code)) => {
                    tracing::info!(connection_id = %cid, session, exit_status = code, "program exited");
                    conn.audit(
                        "exit",
                        serde_json::json!({"session": session, "status": code}),
                    );
                    let _ = writer.exit_status(code).await;
                }
                Ok(ExitReason::Signal(name)) => {
                    tracing::info!(connection_id = %cid, session, signal = %name, "program killed by signal");
                    conn.audit(
                        "exit",
                        serde_json::json!({"session": session, "signal": name}),
                    );
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
                    conn.audit(
                        "exit",
                        serde_json::json!({"session": session, "unknown": format!("{e:#}")}),
                    );
                }
            }
            let _ = writer.eof().await;
            let _ = writer.close().await;
        } else {
            // The client went away first: hang the program up like sshd does.
            tracing::info!(connection_id = %cid, session, "channel closed by the client");
            conn.audit(
                "exit",
                serde_json::json!({"session": session, "unknown": "the client closed the channel first"}),
            );
            if let Err(e) = control.signal("HUP").await {
                tracing::debug!(connection_id = %cid, error = format!("{e:#}"), "hang-up signal failed");
            }
        }
        stdin_pump.abort();
        commands_task.abort();
        if let Some(r) = recording {
            r.finish().await;
        }
        conn.release_session_workload(&workload).await;
    }
}

fn sig_from_name(name: &str) -> Sig {
    match name {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_string()),
    }
}

pub fn sig_to_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(c) => c.clone(),
    }
}
