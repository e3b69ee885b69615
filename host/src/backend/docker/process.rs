//! Processes inside a container, as Docker execs.
//!
//! Docker cannot signal an exec, so every process gets a random marker in its environment and
//! a signal is delivered by a short helper exec that finds the marked processes in /proc.
//! Docker reports a process killed by signal N as exit code 128+N; that is mapped back to an
//! SSH exit-signal (a program that *exits* with such a code is indistinguishable).
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::Docker;
use futures::StreamExt;

use crate::backend::{
    exit_reason_from_code, signal_number, signal_script, ExitReason, Output, Process,
    ProcessControl, ProcessSpec, MARKER_ENV,
};
use crate::config::DockerTimeouts;

/// Output buffer per read; large enough to keep bulk transfers efficient.
const OUTPUT_CAPACITY: usize = 64 * 1024;
/// For a terminal: what people type and read, held by every idle interactive session.
const TERMINAL_OUTPUT_CAPACITY: usize = 8 * 1024;

pub async fn start(
    docker: &Docker,
    container: &str,
    user: &str,
    spec: ProcessSpec,
    timeouts: &DockerTimeouts,
    connection_id: &str,
) -> anyhow::Result<Process> {
    let marker = hex::encode(rand::random::<[u8; 12]>());
    let mut env = spec.env;
    env.push(format!("{MARKER_ENV}={marker}"));
    if let Some(tty) = &spec.tty {
        env.push(format!("TERM={}", tty.term));
    }
    let tty = spec.tty.is_some();
    let exec = docker
        .create_exec(
            container,
            ExecConfig {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(tty),
                // Engines since API 1.42 size the terminal before the program starts; older
                // ones ignore this and get the resize below, a moment after the start.
                console_size: spec
                    .tty
                    .as_ref()
                    .map(|t| vec![t.rows as usize, t.columns as usize]),
                env: Some(env),
                cmd: Some(spec.argv.clone()),
                user: (!user.is_empty()).then(|| user.to_string()),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("cannot create the process {:?}", spec.argv))?;
    let started = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                tty,
                output_capacity: Some(if tty {
                    TERMINAL_OUTPUT_CAPACITY
                } else {
                    OUTPUT_CAPACITY
                }),
            }),
        )
        .await
        .with_context(|| format!("cannot start the process {:?}", spec.argv))?;
    let StartExecResults::Attached { output, input } = started else {
        bail!("docker started the process detached");
    };
    let control = Arc::new(DockerProcess {
        docker: docker.clone(),
        container: container.to_string(),
        exec_id: exec.id,
        user: user.to_string(),
        marker,
        timeouts: timeouts.clone(),
    });
    if let Some(t) = &spec.tty {
        // The size must be set after start; a failure only affects layout.
        if let Err(e) = control.resize(t.columns, t.rows).await {
            tracing::debug!(connection_id, error = %e, "initial terminal resize failed");
        }
    }
    let output = output.filter_map(|item| async move {
        match item {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                Some(Ok(Output::Stdout(message)))
            }
            Ok(LogOutput::StdErr { message }) => Some(Ok(Output::Stderr(message))),
            Ok(LogOutput::StdIn { .. }) => None,
            Err(e) => Some(Err(anyhow::Error::new(e).context("reading process output"))),
        }
    });
    Ok(Process {
        stdin: input,
        output: Box::pin(output),
        control,
    })
}

struct DockerProcess {
    docker: Docker,
    container: String,
    exec_id: String,
    user: String,
    marker: String,
    timeouts: DockerTimeouts,
}

#[async_trait]
impl ProcessControl for DockerProcess {
    async fn resize(&self, columns: u32, rows: u32) -> anyhow::Result<()> {
        let options = ResizeExecOptions {
            width: columns.clamp(1, u16::MAX as u32) as u16,
            height: rows.clamp(1, u16::MAX as u32) as u16,
        };
        tokio::time::timeout(
            self.timeouts.window,
            self.docker.resize_exec(&self.exec_id, options),
        )
        .await
        .context("resize timed out")?
        .context("resize failed")
    }

    async fn signal(&self, name: &str) -> anyhow::Result<()> {
        let number = signal_number(name).with_context(|| format!("unknown signal {name}"))?;
        let script = signal_script(&self.marker, number);
        let work = async {
            let exec = self
                .docker
                .create_exec(
                    &self.container,
                    CreateExecOptions {
                        cmd: Some(vec!["/bin/sh".to_string(), "-c".to_string(), script]),
                        user: (!self.user.is_empty()).then(|| self.user.clone()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            if let StartExecResults::Attached { mut output, .. } =
                self.docker.start_exec(&exec.id, None).await?
            {
                while output.next().await.is_some() {}
            }
            Ok::<_, bollard::errors::Error>(())
        };
        tokio::time::timeout(self.timeouts.signal, work)
            .await
            .context("signal delivery timed out")?
            .context("signal delivery failed")
    }

    async fn exit_reason(&self) -> anyhow::Result<ExitReason> {
        // The output stream can end a moment before Docker records the exit code.
        for _ in 0..100 {
            let info = self
                .docker
                .inspect_exec(&self.exec_id)
                .await
                .context("cannot read the exit code")?;
            if info.running != Some(true) {
                let code = info.exit_code.unwrap_or(255);
                return Ok(exit_reason_from_code(code));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("process still running after its output closed")
    }
}
