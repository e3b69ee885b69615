//! The client's TCP stream as russh sees it. It records the client's SSH identification line
//! (authentication callbacks get no session handle, yet plugins want the client version), and
//! it has a kill switch: once cancelled, reads end, so russh ends the connection even when a
//! polite disconnect is not getting through (e.g. a client stalled in the key exchange).
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The identification line is at most 255 bytes (RFC 4253 §4.2); stop looking after that.
const MAX_ID_LEN: usize = 255;

pub struct ClientStream<S> {
    inner: S,
    seen: Vec<u8>,
    done: bool,
    version: Arc<OnceLock<String>>,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> ClientStream<S> {
    pub fn new(inner: S, version: Arc<OnceLock<String>>, kill: CancellationToken) -> Self {
        Self {
            inner,
            seen: Vec::new(),
            done: false,
            version,
            killed: Box::pin(kill.cancelled_owned()),
        }
    }

    fn observe(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.seen).trim_end().to_string();
                if line.starts_with("SSH-") {
                    let _ = self.version.set(line);
                    self.done = true;
                    return;
                }
                // Lines before the identification are allowed; keep looking.
                self.seen.clear();
            } else if self.seen.len() < MAX_ID_LEN {
                self.seen.push(b);
            } else {
                self.done = true;
                return;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection closed by the gateway",
            )));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.done {
            let fresh = buf.filled()[before..].to_vec();
            self.observe(&fresh);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_identification_line_after_other_lines() {
        let slot = Arc::new(OnceLock::new());
        let mut s = ClientStream::new((), slot.clone(), CancellationToken::new());
        s.observe(b"hello\r\nSSH-2.0-Open");
        s.observe(b"SSH_9.2p1\r\n\x00\x00binary");
        assert_eq!(
            slot.get().map(String::as_str),
            Some("SSH-2.0-OpenSSH_9.2p1")
        );
    }
}
