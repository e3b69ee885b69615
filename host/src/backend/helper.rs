//! The forwarding helper's protocol (`helper/`), for any backend that can place the helper in a
//! workload and run processes there: it runs as a process per forwarded connection and
//! connects from inside; for `ssh -R`, streamlocal-forward, the agent and X11, one process
//! listens and one more per accepted connection takes it over (see `helper/src/listen.rs`). Its stdin and stdout
//! carry length-prefixed frames (an empty frame is EOF), so half-closes are exact whatever the
//! engine does with stream ends; dropping the stream closes the exec's stdin, which ends the
//! helper at once.
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::backend::forward::{
    Accepted, ForwardError, ForwardListener, ForwardStream, ForwardTarget, ListenTarget,
};
use crate::backend::{Output, OutputStream, Process, ProcessSpec};

/// How long the helper may take to start and connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest frame either side sends (the helper sends at most 32 KiB).
const MAX_FRAME: usize = 1 << 20;
/// What the helper says on stderr once it passed the gateway's EOF on to the socket.
const EOF_ACK: &[u8] = b"eof\n";
/// Largest frame the gateway writes at once.
const WRITE_FRAME: usize = 64 * 1024;

/// Starts processes in the container (an exec each); kept by a listener, which starts one
/// per connection it hands over.
pub type Starter =
    Arc<dyn Fn(ProcessSpec) -> BoxFuture<'static, anyhow::Result<Process>> + Send + Sync>;

/// Starts the helper (at `helper` in the workload) for `target` and waits until it has
/// connected.
pub async fn open(
    start: Starter,
    helper: &str,
    target: &ForwardTarget,
) -> Result<ForwardStream, ForwardError> {
    let mut argv = vec![helper.to_string()];
    match target {
        ForwardTarget::Tcp { host, port } => {
            argv.extend(["tcp".to_string(), host.clone(), port.to_string()])
        }
        ForwardTarget::Unix(path) => argv.extend(["unix".to_string(), path.clone()]),
    }
    let started = start_helper(start(helper_spec(argv)), b"connected\n").await?;
    Ok(HelperStream::boxed(started))
}

fn helper_spec(argv: Vec<String>) -> ProcessSpec {
    ProcessSpec {
        argv,
        env: Vec::new(),
        tty: None,
    }
}

/// A helper that said it is ready: its stdin, its output, and what followed the word on
/// stdout in the same read.
struct Started {
    stdin: Pin<Box<dyn AsyncWrite + Send>>,
    output: OutputStream,
    early: BytesMut,
}

/// Starts a helper process and waits until it says `ready` on stdout, or why not on stderr.
/// The word comes first on stdout itself: the engines copy stdout and stderr independently, so
/// only the same stream keeps it ahead of the data.
async fn start_helper(
    start: impl std::future::Future<Output = anyhow::Result<Process>>,
    ready: &[u8],
) -> Result<Started, ForwardError> {
    let started = async {
        let process = start
            .await
            .map_err(|e| ForwardError::Unavailable(format!("cannot start the helper: {e:#}")))?;
        let Process {
            stdin,
            mut output,
            control: _,
        } = process;
        let mut said = Vec::new();
        let mut early = BytesMut::new();
        loop {
            match output.next().await {
                Some(Ok(Output::Stdout(b))) => {
                    early.extend_from_slice(&b);
                    if early.starts_with(ready) {
                        early.advance(ready.len());
                        return Ok(Started {
                            stdin,
                            output,
                            early,
                        });
                    }
                    if !ready.starts_with(&early) {
                        return Err(ForwardError::ConnectFailed(
                            "the helper wrote before it was ready".into(),
                        ));
                    }
                }
                Some(Ok(Output::Stderr(b))) => {
                    said.extend_from_slice(&b);
                    if said.contains(&b'\n') || said.len() > 4096 {
                        let text = String::from_utf8_lossy(&said);
                        let line = text.lines().next().unwrap_or_default();
                        return Err(ForwardError::ConnectFailed(
                            line.trim_start_matches("error: ").chars().take(300).collect(),
                        ));
                    }
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
    tokio::time::timeout(CONNECT_TIMEOUT, started)
        .await
        .map_err(|_| ForwardError::ConnectFailed(format!("no answer within {CONNECT_TIMEOUT:?}")))?
}

/// Starts a listener helper (at `helper` in the workload) for `target`; `start` runs processes
/// in the same workload.
pub async fn listen(
    start: Starter,
    helper: &str,
    target: &ListenTarget,
) -> Result<Box<dyn ForwardListener>, ForwardError> {
    let name = format!("containerssh-{}", hex::encode(rand::random::<[u8; 12]>()));
    let secret = hex::encode(rand::random::<[u8; 16]>());
    let mut argv = vec![helper.to_string(), "listen".to_string()];
    match target {
        ListenTarget::Tcp { host, port } => {
            argv.extend(["tcp".to_string(), host.clone(), port.to_string()])
        }
        ListenTarget::Unix(path) => argv.extend(["unix".to_string(), path.clone()]),
        ListenTarget::Agent(path) => argv.extend(["agent".to_string(), path.clone()]),
        ListenTarget::X11 {
            display,
            xauthority,
            protocol,
            cookie,
        } => argv.extend([
            "x11".to_string(),
            display.to_string(),
            xauthority.clone(),
            protocol.clone(),
            cookie.clone(),
        ]),
    }
    argv.extend([name.clone(), secret.clone()]);
    let started = start_helper(start(helper_spec(argv)), b"listening\n").await?;
    Ok(Box::new(HelperListener {
        start,
        helper: helper.to_string(),
        name,
        secret,
        stdin: tokio::sync::Mutex::new(started.stdin),
        lines: tokio::sync::Mutex::new((started.output, started.early)),
    }))
}

/// A listener helper: its stdout says what it accepted, its stdin takes refusals, and its
/// stdin's end (this being dropped) ends it.
struct HelperListener {
    start: Starter,
    helper: String,
    name: String,
    secret: String,
    stdin: tokio::sync::Mutex<Pin<Box<dyn AsyncWrite + Send>>>,
    lines: tokio::sync::Mutex<(OutputStream, BytesMut)>,
}

/// Longest line the listener helper writes.
const MAX_LINE: usize = 1024;

#[async_trait::async_trait]
impl ForwardListener for HelperListener {
    async fn accepted(&self) -> Option<Accepted> {
        let mut guard = self.lines.lock().await;
        let (output, buffered) = &mut *guard;
        loop {
            if let Some(end) = buffered.iter().position(|b| *b == b'\n') {
                let line = buffered.split_to(end + 1);
                match parse_accept(&line[..end]) {
                    Some(a) => return Some(a),
                    None => continue,
                }
            }
            if buffered.len() > MAX_LINE {
                return None;
            }
            match output.next().await {
                Some(Ok(Output::Stdout(b))) => buffered.extend_from_slice(&b),
                Some(Ok(Output::Stderr(_))) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    async fn take(&self, id: u64) -> Result<ForwardStream, ForwardError> {
        let argv = vec![
            self.helper.clone(),
            "join".to_string(),
            self.name.clone(),
            self.secret.clone(),
            id.to_string(),
        ];
        let started = start_helper((self.start)(helper_spec(argv)), b"connected\n").await?;
        Ok(HelperStream::boxed(started))
    }

    async fn refuse(&self, id: u64) {
        let mut stdin = self.stdin.lock().await;
        let line = format!("drop {id}\n");
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        })
        .await;
    }
}

/// `accept ID HOST PORT` (HOST is `-` for a Unix socket).
fn parse_accept(line: &[u8]) -> Option<Accepted> {
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    if words.next()? != "accept" {
        return None;
    }
    let id = words.next()?.parse().ok()?;
    let host = words.next()?;
    let port = words.next()?.parse().ok()?;
    Some(Accepted {
        id,
        originator_host: if host == "-" {
            String::new()
        } else {
            host.to_string()
        },
        originator_port: port,
    })
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
    /// The helper said it passed the gateway's EOF on (everything before it is in the socket).
    eof_acked: bool,
    /// The end of what the helper said on stderr, where the acknowledgement is looked for.
    stderr_tail: Vec<u8>,
    /// The helper's output ended (with this error, if any).
    output_ended: bool,
    output_error: Option<String>,
    /// Whoever waits for output the other half took: both halves take from one stream.
    read_waker: Option<Waker>,
    shutdown_waker: Option<Waker>,
}

impl HelperStream {
    fn boxed(started: Started) -> ForwardStream {
        Box::pin(HelperStream {
            stdin: started.stdin,
            output: started.output,
            to_helper: BytesMut::new(),
            eof_queued: false,
            from_helper: started.early,
            frame_left: 0,
            read_eof: false,
            eof_acked: false,
            stderr_tail: Vec::new(),
            output_ended: false,
            output_error: None,
            read_waker: None,
            shutdown_waker: None,
        })
    }

    /// Takes one item of the helper's output: stdout for the reader, stderr for the EOF
    /// acknowledgement. Ready once something was taken; wakes the other half when it was its.
    fn pump(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.output_ended {
            return Poll::Ready(());
        }
        match ready!(Pin::new(&mut self.output).poll_next(cx)) {
            Some(Ok(Output::Stdout(b))) => {
                self.from_helper.extend_from_slice(&b);
                if let Some(w) = self.read_waker.take() {
                    w.wake();
                }
            }
            Some(Ok(Output::Stderr(b))) => {
                // Nothing but the acknowledgement is expected there once connected; it never
                // reaches the client.
                self.stderr_tail.extend_from_slice(&b);
                if self
                    .stderr_tail
                    .windows(EOF_ACK.len())
                    .any(|w| w == EOF_ACK)
                {
                    self.eof_acked = true;
                    if let Some(w) = self.shutdown_waker.take() {
                        w.wake();
                    }
                }
                let keep = self.stderr_tail.len().saturating_sub(EOF_ACK.len());
                self.stderr_tail.drain(..keep);
            }
            other => {
                if let Some(Err(e)) = other {
                    self.output_error = Some(format!("{e:#}"));
                }
                self.output_ended = true;
                for w in [self.read_waker.take(), self.shutdown_waker.take()]
                    .into_iter()
                    .flatten()
                {
                    w.wake();
                }
            }
        }
        Poll::Ready(())
    }

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

    /// The client's EOF: an empty frame (the helper shuts its socket's write side). Done once
    /// the helper says it passed the EOF on, so everything written before it is in the socket
    /// (an engine may drop input still in flight when the stream closes). The helper's stdin
    /// stays open: closing it would end the connection.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.eof_queued {
            ready!(this.poll_drain(cx))?;
            this.to_helper.put_u32(0);
            this.eof_queued = true;
        }
        ready!(this.poll_drain(cx))?;
        ready!(this.stdin.as_mut().poll_flush(cx))?;
        loop {
            if this.eof_acked || this.output_ended {
                return Poll::Ready(Ok(()));
            }
            if this.pump(cx).is_pending() {
                this.shutdown_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
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
            if this.output_ended {
                if let Some(e) = this.output_error.take() {
                    return Poll::Ready(Err(io::Error::other(e)));
                }
                this.read_eof = true;
                continue;
            }
            if this.pump(cx).is_pending() {
                this.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lines_are_read_and_anything_else_is_not() {
        assert_eq!(
            parse_accept(b"accept 7 127.0.0.1 40028"),
            Some(Accepted {
                id: 7,
                originator_host: "127.0.0.1".into(),
                originator_port: 40028
            })
        );
        assert_eq!(
            parse_accept(b"accept 8 - 0").map(|a| a.originator_host),
            Some(String::new())
        );
        for bad in [
            &b"accept x 1.2.3.4 5"[..],
            b"accept 1 1.2.3.4",
            b"accept 1 1.2.3.4 99999999999",
            b"hello",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_accept(bad), None, "{bad:?}");
        }
    }
}
