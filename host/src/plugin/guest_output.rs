//! What a plugin writes to stdout and stderr: kept per call (the last `KEEP` bytes of each, so a
//! chatty plugin costs bounded memory and never sees a write fail), then written to the
//! gateway's log tagged with the plugin and the connection. When a call fails, its last lines
//! go into the error (a Python traceback or C's `fprintf(stderr, ...)` is what explains a trap).
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Bytes kept per stream and call (the end of the output; earlier bytes are counted only).
const KEEP: usize = 16 * 1024;
/// Lines of a failed call's output quoted in its error.
const QUOTED_LINES: usize = 12;

/// One of a call's output streams.
#[derive(Clone, Default)]
pub struct GuestStream {
    inner: Arc<Mutex<Tail>>,
}

#[derive(Default)]
struct Tail {
    bytes: VecDeque<u8>,
    dropped: usize,
}

impl GuestStream {
    fn append(&self, data: &[u8]) {
        let Ok(mut tail) = self.inner.lock() else {
            return;
        };
        tail.bytes.extend(data);
        let excess = tail.bytes.len().saturating_sub(KEEP);
        if excess > 0 {
            tail.bytes.drain(..excess);
            tail.dropped += excess;
        }
    }

    /// The text written so far (cleared), and how many earlier bytes were dropped.
    fn take(&self) -> (String, usize) {
        let Ok(mut tail) = self.inner.lock() else {
            return (String::new(), 0);
        };
        let bytes: Vec<u8> = tail.bytes.drain(..).collect();
        let dropped = std::mem::take(&mut tail.dropped);
        (String::from_utf8_lossy(&bytes).into_owned(), dropped)
    }
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A call's stdout and stderr.
#[derive(Clone, Default)]
pub struct GuestOutput {
    pub stdout: GuestStream,
    pub stderr: GuestStream,
}

impl GuestOutput {
    /// Logs what the call wrote (stdout at info, stderr at warn) and returns its last lines.
    pub fn emit(&self, plugin: &str, connection_id: &str) -> Vec<String> {
        let mut last = VecDeque::new();
        for (name, stream) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let (text, dropped) = stream.take();
            if dropped > 0 {
                tracing::warn!(
                    plugin,
                    connection_id,
                    stream = name,
                    dropped,
                    "plugin output too long; only its end is logged"
                );
            }
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if name == "stdout" {
                    tracing::info!(plugin, connection_id, stream = name, "{line}");
                } else {
                    tracing::warn!(plugin, connection_id, stream = name, "{line}");
                }
                if last.len() == QUOTED_LINES {
                    last.pop_front();
                }
                last.push_back(format!("{name}: {line}"));
            }
        }
        last.into()
    }
}

/// `error` with the last lines the plugin wrote, if any.
pub fn with_output(error: anyhow::Error, last: &[String]) -> anyhow::Error {
    if last.is_empty() {
        error
    } else {
        error.context(format!(
            "the plugin's last output:\n  {}",
            last.join("\n  ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_end_counts_the_rest_and_quotes_the_last_lines() {
        let out = GuestOutput::default();
        out.stdout.append(b"starting\n");
        let big = vec![b'x'; KEEP * 2];
        out.stderr.append(&big);
        out.stderr.append(
            b"\nTraceback (most recent call last):\n  File \"app.py\", line 3\nValueError: bad\n",
        );
        let last = out.emit("auth", "c0ffee");
        assert_eq!(last.first().map(String::as_str), Some("stdout: starting"));
        assert_eq!(
            last.last().map(String::as_str),
            Some("stderr: ValueError: bad")
        );
        assert!(last.iter().any(|l| l.contains("Traceback")));
        // Taken: a second emit has nothing.
        assert!(out.emit("auth", "c0ffee").is_empty());
        let e = with_output(anyhow::anyhow!("wasm trap"), &last);
        assert!(format!("{e:#}").contains("ValueError: bad"), "{e:#}");
    }
}
