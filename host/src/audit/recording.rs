//! What a session's data path hands its recording: an asciicast file of a terminal session
//! (`format: asciinema`) or the session's I/O in the binary log (`format: binary`).
use bytes::Bytes;

use super::cast;
use super::log::SessionIo;

/// The recording of one session.
pub enum Recording {
    Cast(cast::Recording),
    Binary(SessionIo),
}

impl Recording {
    /// What the program wrote to its standard output (a terminal's output).
    pub async fn output(&self, data: &Bytes) {
        match self {
            Recording::Cast(r) => r.output(data).await,
            Recording::Binary(io) => io.stdout(data).await,
        }
    }

    /// What the program wrote to its standard error (a terminal has none).
    pub async fn stderr(&self, data: &Bytes) {
        if let Recording::Binary(io) = self {
            io.stderr(data).await;
        }
    }

    /// Writes what is queued (a cast file is closed; the binary log notes the channel's close).
    pub async fn finish(self) {
        match self {
            Recording::Cast(r) => r.finish().await,
            Recording::Binary(io) => io.close().await,
        }
    }

    /// A handle for another task of the same session (input or resizes).
    pub fn sender(&self) -> RecordingSender {
        match self {
            Recording::Cast(r) => RecordingSender::Cast(r.sender()),
            Recording::Binary(io) => RecordingSender::Binary(io.clone()),
        }
    }
}

/// Lets the stdin and control tasks of a session add to its recording.
#[derive(Clone)]
pub enum RecordingSender {
    Cast(cast::RecordingSender),
    Binary(SessionIo),
}

impl RecordingSender {
    /// What the client sent to the program.
    pub async fn input(&self, data: &Bytes) {
        match self {
            RecordingSender::Cast(r) => r.input(data).await,
            RecordingSender::Binary(io) => io.stdin(data).await,
        }
    }

    /// The terminal's new size (the binary log has it from the window-change request).
    pub async fn resize(&self, columns: u32, rows: u32) {
        if let RecordingSender::Cast(r) = self {
            r.resize(columns, rows).await;
        }
    }
}
