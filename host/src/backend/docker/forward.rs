//! Forwarded connections in a Docker container: the forwarding helper (`helper/`), placed in the
//! container once, runs as an exec per connection and connects from inside. Its stdin and stdout
//! carry length-prefixed frames (an empty frame is EOF), so half-closes are exact whatever the
//! engine does with stream ends; dropping the stream closes the exec's stdin, which ends the
//! helper at once.
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::backend::forward::{ForwardError, ForwardStream, ForwardTarget};
use crate::backend::{Output, OutputStream, Process, ProcessSpec, Workload, HELPER_PATH};

/// How long the helper may take to start and connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest frame either side sends (the helper sends at most 32 KiB).
const MAX_FRAME: usize = 1 << 20;
/// Largest frame the gateway writes at once.
const WRITE_FRAME: usize = 64 * 1024;

/// Starts the helper for `target` in `workload` (the helper is already in place) and waits
/// until it has connected.
pub async fn open(
    workload: &dyn Workload,
    target: &ForwardTarget,
) -> Result<ForwardStream, ForwardError> {
    let mut argv = vec![HELPER_PATH.to_string()];
    match target {
        ForwardTarget::Tcp { host, port } => {
            argv.extend(["tcp".to_string(), host.clone(), port.to_string()])
        }
        ForwardTarget::Unix(path) => argv.extend(["unix".to_string(), path.clone()]),
    }
    let spec = ProcessSpec {
        argv,
        env: Vec::new(),
        tty: None,
    };
    let connected = async {
        let process = workload
            .start_process(spec)
            .await
            .map_err(|e| ForwardError::Unavailable(format!("cannot start the helper: {e:#}")))?;
        let Process {
            stdin,
            mut output,
            control: _,
        } = process;
        // The helper says "connected" or "error: ..." on stderr before anything else.
        let mut said = Vec::new();
        loop {
            match output.next().await {
                Some(Ok(Output::Stderr(b))) => {
                    said.extend_from_slice(&b);
                    if said.starts_with(b"connected\n") {
                        return Ok(Box::pin(HelperStream {
                            stdin,
                            output,
                            to_helper: BytesMut::new(),
                            eof_queued: false,
                            from_helper: BytesMut::new(),
                            frame_left: 0,
                            read_eof: false,
                        }) as ForwardStream);
                    }
                    if said.contains(&b'\n') || said.len() > 4096 {
                        let text = String::from_utf8_lossy(&said);
                        let line = text.lines().next().unwrap_or_default();
                        return Err(ForwardError::ConnectFailed(
                            line.trim_start_matches("error: ").chars().take(300).collect(),
                        ));
                    }
                }
                Some(Ok(Output::Stdout(_))) => {
                    return Err(ForwardError::ConnectFailed(
                        "the helper wrote before it connected".into(),
                    ))
                }
                Some(Err(e)) => return Err(ForwardError::ConnectFailed(format!("{e:#}"))),
                None => {
                    return Err(ForwardError::Unavailable(
                        "the helper ended without a word (does the container run the gateway's CPU architecture?)".into(),
                    ))
                }
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connected)
        .await
        .map_err(|_| {
            ForwardError::ConnectFailed(format!("no connection within {CONNECT_TIMEOUT:?}"))
        })?
}

/// The helper's framed stdin and stdout as one byte stream.
struct HelperStream {
    stdin: Pin<Box<dyn AsyncWrite + Send>>,
    output: OutputStream,
    /// Framed bytes not yet taken by the helper's stdin.
    to_helper: BytesMut,
    eof_queued: bool,
    /// Bytes from the helper not yet parsed or handed out.
    from_helper: BytesMut,
    /// Bytes of the current frame not yet handed out.
    frame_left: usize,
    read_eof: bool,
}

impl HelperStream {
    /// Writes queued frames until none are left or the helper's stdin is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.to_helper.is_empty() {
            let n = ready!(self.stdin.as_mut().poll_write(cx, &self.to_helper))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.to_helper.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HelperStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // One frame in flight at a time: the helper's pace is the client's window.
        ready!(this.poll_drain(cx))?;
        if this.eof_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(WRITE_FRAME);
        this.to_helper.put_u32(n as u32);
        this.to_helper.extend_from_slice(&buf[..n]);
        // Start sending now; what is left goes with the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        this.stdin.as_mut().poll_flush(cx)
    }

    /// The client's EOF: an empty frame (the helper shuts its socket's write side). The
    /// helper's stdin stays open: closing it would end the connection.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.eof_queued {
            ready!(this.poll_drain(cx))?;
            this.to_helper.put_u32(0);
            this.eof_queued = true;
        }
        ready!(this.poll_drain(cx))?;
        this.stdin.as_mut().poll_flush(cx)
    }
}

impl AsyncRead for HelperStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.frame_left > 0 && !this.from_helper.is_empty() {
                let n = this
                    .frame_left
                    .min(this.from_helper.len())
                    .min(buf.remaining());
                buf.put_slice(&this.from_helper[..n]);
                this.from_helper.advance(n);
                this.frame_left -= n;
                return Poll::Ready(Ok(()));
            }
            if this.frame_left == 0 && this.from_helper.len() >= 4 {
                let len = this.from_helper.get_u32() as usize;
                if len == 0 {
                    this.read_eof = true;
                } else if len > MAX_FRAME {
                    return Poll::Ready(Err(io::Error::other(format!(
                        "the helper sent a frame of {len} bytes"
                    ))));
                } else {
                    this.frame_left = len;
                }
                continue;
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.output).poll_next(cx)) {
                Some(Ok(Output::Stdout(b))) => this.from_helper.extend_from_slice(&b),
                // Nothing is expected there once connected; it never reaches the client.
                Some(Ok(Output::Stderr(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(format!("{e:#}")))),
                None => this.read_eof = true,
            }
        }
    }
}
