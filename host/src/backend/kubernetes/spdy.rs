//! Exec over SPDY/3.1, for API servers without the v5 WebSocket exec protocol (Kubernetes before
//! 1.30, whose WebSocket exec speaks only `v4.channel.k8s.io` and cannot pass end of input on).
//! `kubectl exec` falls back to the same. Every channel is a SPDY stream of its own, opened by us
//! with a `streamtype` header (error, stdin, stdout, stderr, resize), so end of input is exact:
//! an empty DATA frame with FIN on the stdin stream. The exit status arrives on the error stream
//! as a JSON `Status` (exec protocol v4, asked for in `X-Stream-Protocol-Version`); the server
//! then sends GOAWAY.
//!
//! The server side is always moby/spdystream (kubelet, CRI streaming servers, API server
//! proxies); what we send is what it reads:
//! - Header blocks are one zlib stream per direction with the SPDY/3 dictionary. Ours are
//!   written as stored (uncompressed) deflate blocks, each header block closed by an empty one
//!   as zlib's sync flush closes it, which every inflater reads. The server's
//!   header blocks (only SYN_REPLYs, which carry nothing we need) are skipped unread, so no
//!   zlib is needed at all.
//! - Flow control: spdystream neither sends WINDOW_UPDATE nor honours it (SPDY/3.1 in name
//!   only), so a client that waited for window after the first 64 KiB would stall every upload
//!   for good. TCP is the flow control: the server stops reading when the program does not
//!   read its input, and our writer holds at most one frame of input, so it never reads the
//!   client's input ahead of what the connection takes. Output and the exit status still
//!   flow then (reading is a task of its own); resizes wait behind the unread input, as with
//!   kubectl, since spdystream stops reading the whole connection.
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use kube::Client;
use tokio::io::{
    AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::exec::{self, Ends, Exit};
use crate::backend::Output;

type Io = TokioIo<hyper::upgrade::Upgraded>;

/// The exec protocol asked for: v4 has the exit status as a `Status` on the error stream.
pub const STREAM_PROTOCOL: &str = "v4.channel.k8s.io";
/// The kubelet gives up on streams not opened within 30 s; so do we on their replies.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest input frame, and largest piece of output handed on at once.
const CHUNK: usize = 64 * 1024;
/// A `Status` is a few hundred bytes; more on the error stream is not kept.
const STATUS_LIMIT: usize = 64 * 1024;

/// SPDY frame layout and the few frames a client needs, as pure functions.
pub mod frame {
    pub const VERSION: u16 = 3;
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const FLAG_FIN: u8 = 0x01;
    pub const HEAD_LEN: usize = 8;
    pub const MAX_LENGTH: usize = (1 << 24) - 1;
    /// RST_STREAM status codes.
    pub const REFUSED_STREAM: u32 = 3;
    /// Adler-32 of the SPDY/3 header dictionary: the zlib header names the dictionary by it.
    pub const DICTIONARY_ID: u32 = 0xe3c6_a7c2;

    /// The 8 bytes every frame starts with.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Head {
        Control {
            kind: u16,
            flags: u8,
            length: usize,
        },
        Data {
            stream: u32,
            flags: u8,
            length: usize,
        },
    }

    pub fn parse_head(b: [u8; HEAD_LEN]) -> Result<Head, String> {
        let word = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let flags = b[4];
        let length = u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize;
        if word & 0x8000_0000 == 0 {
            return Ok(Head::Data {
                stream: word,
                flags,
                length,
            });
        }
        let version = (word >> 16) as u16 & 0x7fff;
        if version != VERSION {
            return Err(format!("SPDY version {version} (only 3 is spoken)"));
        }
        Ok(Head::Control {
            kind: word as u16,
            flags,
            length,
        })
    }

    fn control_head(kind: u16, flags: u8, length: usize) -> [u8; HEAD_LEN] {
        let word = 0x8000_0000 | u32::from(VERSION) << 16 | u32::from(kind);
        let mut b = [0; HEAD_LEN];
        b[..4].copy_from_slice(&word.to_be_bytes());
        b[4..].copy_from_slice(&(u32::from(flags) << 24 | length as u32).to_be_bytes());
        b
    }

    /// The head of a DATA frame of `length` (at most `MAX_LENGTH`) bytes.
    pub fn data_head(stream: u32, fin: bool, length: usize) -> [u8; HEAD_LEN] {
        debug_assert!(length <= MAX_LENGTH);
        let mut b = [0; HEAD_LEN];
        b[..4].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        let flags = if fin { FLAG_FIN } else { 0 };
        b[4..].copy_from_slice(&(u32::from(flags) << 24 | length as u32).to_be_bytes());
        b
    }

    /// SYN_STREAM opening `stream` (priority 0, no associated stream) with a header block.
    pub fn syn_stream(stream: u32, header_block: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(HEAD_LEN + 10 + header_block.len());
        f.extend_from_slice(&control_head(SYN_STREAM, 0, 10 + header_block.len()));
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(&0u32.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(header_block);
        f
    }

    pub fn ping(id: u32) -> Vec<u8> {
        let mut f = control_head(PING, 0, 4).to_vec();
        f.extend_from_slice(&id.to_be_bytes());
        f
    }

    pub fn rst_stream(stream: u32, status: u32) -> Vec<u8> {
        let mut f = control_head(RST_STREAM, 0, 8).to_vec();
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(&status.to_be_bytes());
        f
    }

    /// What a control frame says, from the first bytes of its payload (at most 8 are needed).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Control {
        SynStream {
            stream: u32,
        },
        SynReply {
            stream: u32,
        },
        RstStream {
            stream: u32,
            status: u32,
        },
        Ping {
            id: u32,
        },
        GoAway {
            last_good: u32,
        },
        /// SETTINGS, HEADERS, WINDOW_UPDATE and unknown kinds: nothing for this client.
        Other,
    }

    pub fn parse_control(kind: u16, payload: &[u8]) -> Result<Control, String> {
        let word = |i: usize| {
            payload
                .get(i..i + 4)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                .ok_or_else(|| format!("control frame {kind} is too short"))
        };
        Ok(match kind {
            SYN_STREAM => Control::SynStream {
                stream: word(0)? & 0x7fff_ffff,
            },
            SYN_REPLY => Control::SynReply {
                stream: word(0)? & 0x7fff_ffff,
            },
            RST_STREAM => Control::RstStream {
                stream: word(0)? & 0x7fff_ffff,
                status: word(4)?,
            },
            PING => Control::Ping { id: word(0)? },
            GOAWAY => Control::GoAway {
                last_good: word(0)? & 0x7fff_ffff,
            },
            _ => Control::Other,
        })
    }

    /// A name/value header block before compression: counts and lengths are 32-bit, names
    /// lowercase.
    pub fn name_value_block(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            b.extend_from_slice(&(name.len() as u32).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&(value.len() as u32).to_be_bytes());
            b.extend_from_slice(value.as_bytes());
        }
        b
    }

    /// The sending side of the connection's header compression: one zlib stream with the
    /// SPDY/3 dictionary, each header block a run of stored deflate blocks closed by an empty
    /// one, as zlib's sync flush does. Go's inflater hands a stored block's data on only once
    /// it has read the next block's header, and spdystream insists that a frame's header block
    /// is consumed to its last byte: without the empty block it would wait for the next frame.
    #[derive(Default)]
    pub struct HeaderCompressor {
        started: bool,
    }

    impl HeaderCompressor {
        pub fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
            let plain = name_value_block(headers);
            let mut out = Vec::with_capacity(plain.len() + 16);
            if !self.started {
                // Deflate, 32 KiB window, a preset dictionary (FDICT); 0x78BB is a multiple of 31.
                out.extend_from_slice(&[0x78, 0xbb]);
                out.extend_from_slice(&DICTIONARY_ID.to_be_bytes());
                self.started = true;
            }
            for chunk in plain.chunks(0xffff) {
                let len = chunk.len() as u16;
                // BFINAL 0, BTYPE 00 (stored), then LEN and its complement, little-endian.
                out.push(0);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&(!len).to_le_bytes());
                out.extend_from_slice(chunk);
            }
            out.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
            out
        }
    }
}

use frame::{Control, Head};

/// The streams of one exec, by id. We open them in client-go's order (odd ids from 1).
#[derive(Debug, Clone, Copy)]
struct StreamIds {
    error: u32,
    stdin: Option<u32>,
    stdout: u32,
    stderr: Option<u32>,
    resize: Option<u32>,
}

impl StreamIds {
    fn new(stdin: bool, tty: bool) -> Self {
        let mut next = 1;
        let mut take = || {
            let id = next;
            next += 2;
            id
        };
        let error = take();
        let stdin = stdin.then(&mut take);
        let stdout = take();
        // With a terminal everything arrives on stdout; the request asks for no stderr.
        let stderr = (!tty).then(&mut take);
        let resize = tty.then(&mut take);
        Self {
            error,
            stdin,
            stdout,
            stderr,
            resize,
        }
    }

    fn all(&self) -> Vec<(u32, &'static str)> {
        let mut v = vec![(self.error, "error")];
        v.extend(self.stdin.map(|id| (id, "stdin")));
        v.push((self.stdout, "stdout"));
        v.extend(self.stderr.map(|id| (id, "stderr")));
        v.extend(self.resize.map(|id| (id, "resize")));
        v
    }

    fn name(&self, id: u32) -> &'static str {
        self.all()
            .into_iter()
            .find(|(i, _)| *i == id)
            .map_or("unknown", |(_, n)| n)
    }
}

/// Upgrades the exec request to SPDY, opens the streams and waits until the server accepted
/// them all (the program starts then); the program's ends are served from then on.
pub async fn open(
    client: &Client,
    request: http::Request<Vec<u8>>,
    tty: bool,
    ends: Ends,
) -> anyhow::Result<()> {
    let io = upgrade(client, request).await?;
    let (read, mut write) = tokio::io::split(io);
    let ids = StreamIds::new(ends.stdin.is_some(), tty);
    let mut compressor = frame::HeaderCompressor::default();
    let mut opening = Vec::new();
    for (id, kind) in ids.all() {
        opening.extend(frame::syn_stream(
            id,
            &compressor.block(&[("streamtype", kind)]),
        ));
    }
    send(&mut write, &opening)
        .await
        .context("cannot open the exec streams")?;

    let (ready_tx, ready_rx) = oneshot::channel();
    let (control_tx, control_rx) = mpsc::channel(8);
    let stdin_gone = Arc::new(Notify::new());
    let reader = Reader {
        ids,
        output: ends.output,
        control: control_tx,
        stdin_gone: stdin_gone.clone(),
        ready: Some(ready_tx),
        replied: Vec::new(),
        status: Vec::new(),
        finished: Finished::default(),
    };
    tokio::spawn(reader.run(
        BufReader::with_capacity(CHUNK, read),
        ends.exit,
        ends.cancel.clone(),
    ));
    let ready = tokio::time::timeout(REPLY_TIMEOUT, ready_rx)
        .await
        .map_err(|_| {
            anyhow::anyhow!("the server did not accept the exec streams within {REPLY_TIMEOUT:?}")
        })?
        .map_err(|_| anyhow::anyhow!("the exec stream ended before it started"))?;
    ready?;
    tokio::spawn(
        Writer {
            io: write,
            ids,
            stdin: ends.stdin,
            resize: ends.resize,
            control: control_rx,
            stdin_gone,
            connection_id: ends.connection_id,
        }
        .run(ends.cancel),
    );
    Ok(())
}

/// The HTTP/1.1 upgrade, through the client's own connection setup (TLS, authentication).
async fn upgrade(client: &Client, request: http::Request<Vec<u8>>) -> anyhow::Result<Io> {
    use http::header::{HeaderValue, CONNECTION, UPGRADE};
    let (mut parts, body) = request.into_parts();
    // As kubectl does; POST is authorized as "create" on pods/exec.
    parts.method = http::Method::POST;
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    parts
        .headers
        .insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    parts.headers.insert(
        "X-Stream-Protocol-Version",
        HeaderValue::from_static(STREAM_PROTOCOL),
    );
    let response = client
        .send(http::Request::from_parts(
            parts,
            kube::client::Body::from(body),
        ))
        .await
        .context("the exec request failed")?;
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        bail!("{}", exec::refusal(response).await);
    }
    let (upgrade, version) = (
        exec::header(&response, "upgrade").to_ascii_lowercase(),
        exec::header(&response, "x-stream-protocol-version"),
    );
    if !upgrade.contains("spdy/3.1") {
        bail!("the API server switched to {upgrade:?}, not SPDY/3.1");
    }
    // Nothing has run yet (the program starts once its streams are open): safe to give up.
    if version != STREAM_PROTOCOL {
        bail!("the API server offers exec protocol {version:?}, not {STREAM_PROTOCOL}");
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .context("the SPDY upgrade failed")?;
    Ok(TokioIo::new(upgraded))
}

async fn send<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// Frames the writer sends on the reader's behalf.
#[derive(Debug)]
enum Reply {
    Ping(u32),
    Refuse(u32),
}

/// Which of the server's halves of our streams have ended.
#[derive(Default)]
struct Finished {
    error: bool,
    stdout: bool,
    stderr: bool,
}

/// How reading ended.
enum End {
    /// GOAWAY, the connection's end, or every stream finished.
    Closed,
    Broken(String),
    SessionGone,
}

struct Reader {
    ids: StreamIds,
    output: mpsc::Sender<anyhow::Result<Output>>,
    control: mpsc::Sender<Reply>,
    /// Told when the server ended or reset its stdin: input can no longer go anywhere.
    stdin_gone: Arc<Notify>,
    ready: Option<oneshot::Sender<anyhow::Result<()>>>,
    /// Streams the server accepted.
    replied: Vec<u32>,
    status: Vec<u8>,
    finished: Finished,
}

impl Reader {
    async fn run(
        mut self,
        mut io: BufReader<ReadHalf<Io>>,
        exit: tokio::sync::watch::Sender<Option<Exit>>,
        cancel: CancellationToken,
    ) {
        let end = tokio::select! {
            _ = cancel.cancelled() => End::SessionGone,
            end = self.frames(&mut io) => end,
        };
        if let Some(ready) = self.ready.take() {
            let why = match &end {
                End::Broken(e) => e.clone(),
                _ => "the API server closed the exec stream before it started".into(),
            };
            let _ = ready.send(Err(anyhow::anyhow!(why)));
        }
        let ended = match end {
            // A status that arrived counts, however the connection ended afterwards.
            _ if !self.status.is_empty() => {
                let (reason, message) = exec::status_exit(&self.status);
                if let Some(message) = message {
                    let _ = self
                        .output
                        .send(Ok(Output::Stderr(Bytes::from(format!(
                            "containerssh: {message}\n"
                        )))))
                        .await;
                }
                Exit::Ended(reason)
            }
            End::Closed => {
                Exit::Lost("the API server closed the stream without an exit status".into())
            }
            End::Broken(e) => Exit::Lost(format!("the exec stream broke: {e}")),
            End::SessionGone => Exit::Lost("the session closed the stream".into()),
        };
        // The exit first, then the end of output: whoever sees the output end finds the exit.
        let _ = exit.send(Some(ended));
        drop(self.output);
        cancel.cancel();
    }

    async fn frames(&mut self, io: &mut BufReader<ReadHalf<Io>>) -> End {
        loop {
            match io.fill_buf().await {
                Ok([]) => return End::Closed,
                Ok(_) => {}
                Err(e) => return End::Broken(e.to_string()),
            }
            let mut head = [0u8; frame::HEAD_LEN];
            if let Err(e) = io.read_exact(&mut head).await {
                return End::Broken(e.to_string());
            }
            let step = match frame::parse_head(head) {
                Ok(Head::Data {
                    stream,
                    flags,
                    length,
                }) => self.data(io, stream, flags, length).await,
                Ok(Head::Control {
                    kind,
                    flags,
                    length,
                }) => self.control(io, kind, flags, length).await,
                Err(e) => Err(End::Broken(e)),
            };
            if let Err(end) = step {
                return end;
            }
            let f = &self.finished;
            if f.error && f.stdout && (f.stderr || self.ids.stderr.is_none()) {
                return End::Closed;
            }
        }
    }

    async fn data(
        &mut self,
        io: &mut BufReader<ReadHalf<Io>>,
        stream: u32,
        flags: u8,
        length: usize,
    ) -> Result<(), End> {
        let ids = self.ids;
        let mut left = length;
        if stream == ids.stdout || Some(stream) == ids.stderr {
            // Handed on in bounded pieces however large the frame; a full output channel
            // holds the connection, and so the server, until the client reads.
            while left > 0 {
                let n = left.min(CHUNK);
                let mut chunk = BytesMut::zeroed(n);
                io.read_exact(&mut chunk).await.map_err(broken)?;
                left -= n;
                let chunk = chunk.freeze();
                let item = if stream == ids.stdout {
                    Output::Stdout(chunk)
                } else {
                    Output::Stderr(chunk)
                };
                if self.output.send(Ok(item)).await.is_err() {
                    return Err(End::SessionGone);
                }
            }
        } else if stream == ids.error {
            let keep = left.min(STATUS_LIMIT.saturating_sub(self.status.len()));
            let start = self.status.len();
            self.status.resize(start + keep, 0);
            io.read_exact(&mut self.status[start..])
                .await
                .map_err(broken)?;
            discard(io, left - keep).await?;
        } else {
            discard(io, left).await?;
        }
        if flags & frame::FLAG_FIN != 0 {
            self.finish(stream);
        }
        Ok(())
    }

    async fn control(
        &mut self,
        io: &mut BufReader<ReadHalf<Io>>,
        kind: u16,
        flags: u8,
        length: usize,
    ) -> Result<(), End> {
        // Only the first 8 bytes matter; header blocks after them are skipped unread.
        let mut first = [0u8; 8];
        let n = length.min(first.len());
        io.read_exact(&mut first[..n]).await.map_err(broken)?;
        discard(io, length - n).await?;
        match frame::parse_control(kind, &first[..n]).map_err(End::Broken)? {
            Control::SynReply { stream } => {
                if self.ids.name(stream) != "unknown" && !self.replied.contains(&stream) {
                    self.replied.push(stream);
                    if self.replied.len() == self.ids.all().len() {
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                    }
                }
                if flags & frame::FLAG_FIN != 0 {
                    self.finish(stream);
                }
            }
            Control::RstStream { stream, status } => {
                let name = self.ids.name(stream);
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(anyhow::anyhow!(
                        "the server refused the exec's {name} stream (status {status})"
                    )));
                    return Err(End::Closed);
                }
                self.finish(stream);
            }
            Control::Ping { id } => {
                // Even ids are the server's own pings; odd ones answer ours.
                if id % 2 == 0 {
                    let _ = self.control.try_send(Reply::Ping(id));
                }
            }
            Control::SynStream { stream } => {
                let _ = self.control.try_send(Reply::Refuse(stream));
            }
            Control::GoAway { .. } => return Err(End::Closed),
            Control::Other => {}
        }
        Ok(())
    }

    fn finish(&mut self, stream: u32) {
        let ids = &self.ids;
        if stream == ids.error {
            self.finished.error = true;
        } else if stream == ids.stdout {
            self.finished.stdout = true;
        } else if Some(stream) == ids.stderr {
            self.finished.stderr = true;
        } else if Some(stream) == ids.stdin {
            self.stdin_gone.notify_one();
        }
    }
}

fn broken(e: std::io::Error) -> End {
    End::Broken(e.to_string())
}

async fn discard(io: &mut BufReader<ReadHalf<Io>>, n: usize) -> Result<(), End> {
    if n == 0 {
        return Ok(());
    }
    let copied = tokio::io::copy(&mut (&mut *io).take(n as u64), &mut tokio::io::sink())
        .await
        .map_err(broken)?;
    if copied < n as u64 {
        return Err(End::Broken("the connection ended inside a frame".into()));
    }
    Ok(())
}

struct Writer {
    io: WriteHalf<Io>,
    ids: StreamIds,
    stdin: Option<ReadHalf<tokio::io::SimplexStream>>,
    resize: Option<mpsc::Receiver<(u16, u16)>>,
    control: mpsc::Receiver<Reply>,
    stdin_gone: Arc<Notify>,
    connection_id: String,
}

impl Writer {
    async fn run(mut self, cancel: CancellationToken) {
        tokio::select! {
            _ = cancel.cancelled() => {
                // Input written before the stream was dropped still reaches the program, then
                // its end (a forwarded connection's last bytes before its close).
                let _ = tokio::time::timeout(exec::STDIN_DRAIN, self.drain_stdin()).await;
            }
            result = self.frames() => if let Err(e) = result {
                // The reader sees the broken connection too and reports it.
                tracing::debug!(connection_id = %self.connection_id, error = %e, "exec stream: cannot write");
            },
        }
        // Closes our half of the connection (TLS close_notify); the server then ends.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }

    /// The input still buffered, then its end.
    async fn drain_stdin(&mut self) -> std::io::Result<()> {
        let mut buffer = vec![0u8; frame::HEAD_LEN + CHUNK];
        let stdin_id = self.ids.stdin.unwrap_or_default();
        while self.stdin.is_some() {
            let read = exec::read_stdin(&mut self.stdin, &mut buffer[frame::HEAD_LEN..]).await;
            self.send_stdin(read, stdin_id, &mut buffer).await?;
        }
        Ok(())
    }

    /// Sends what `read_stdin` read behind the head room of `buffer`: a data frame, or at the
    /// end of input the empty one with FIN (and no more input).
    async fn send_stdin(
        &mut self,
        read: Option<usize>,
        stdin_id: u32,
        buffer: &mut [u8],
    ) -> std::io::Result<()> {
        match read {
            Some(n) => {
                buffer[..frame::HEAD_LEN].copy_from_slice(&frame::data_head(stdin_id, false, n));
                send(&mut self.io, &buffer[..frame::HEAD_LEN + n]).await
            }
            None => {
                // End of input: the exact half-close v4 WebSocket streams lack.
                self.stdin = None;
                send(&mut self.io, &frame::data_head(stdin_id, true, 0)).await
            }
        }
    }

    async fn frames(&mut self) -> std::io::Result<()> {
        // One frame: its head, then up to CHUNK bytes of input read straight behind it.
        let mut buffer = vec![0u8; frame::HEAD_LEN + CHUNK];
        let mut ping =
            tokio::time::interval_at(Instant::now() + exec::PING_INTERVAL, exec::PING_INTERVAL);
        let mut next_ping: u32 = 1;
        let stdin_id = self.ids.stdin.unwrap_or_default();
        loop {
            let stdin_open = self.stdin.is_some();
            tokio::select! {
                read = exec::read_stdin(&mut self.stdin, &mut buffer[frame::HEAD_LEN..]) => {
                    self.send_stdin(read, stdin_id, &mut buffer).await?;
                }
                _ = self.stdin_gone.notified(), if stdin_open => {
                    // The program's input is closed: stop taking the client's, and close our
                    // half so the stream can end (as kubectl does).
                    self.stdin = None;
                    send(&mut self.io, &frame::data_head(stdin_id, true, 0)).await?;
                }
                size = exec::next_size(&mut self.resize) => match (size, self.ids.resize) {
                    (Some((columns, rows)), Some(id)) => {
                        let json = format!("{{\"Width\":{columns},\"Height\":{rows}}}\n");
                        let mut f = frame::data_head(id, false, json.len()).to_vec();
                        f.extend_from_slice(json.as_bytes());
                        send(&mut self.io, &f).await?;
                    }
                    _ => self.resize = None,
                },
                reply = self.control.recv() => match reply {
                    Some(Reply::Ping(id)) => send(&mut self.io, &frame::ping(id)).await?,
                    Some(Reply::Refuse(id)) => {
                        send(&mut self.io, &frame::rst_stream(id, frame::REFUSED_STREAM)).await?
                    }
                    None => return Ok(()),
                },
                _ = ping.tick() => {
                    // Keeps idle sessions' connections open through proxies.
                    send(&mut self.io, &frame::ping(next_ping)).await?;
                    next_ping = next_ping.wrapping_add(2) & 0x7fff_ffff | 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::frame::*;
    use super::*;

    #[test]
    fn data_heads_round_trip() {
        let head = data_head(3, true, 70_000);
        assert_eq!(head, [0, 0, 0, 3, 1, 0x01, 0x11, 0x70]);
        assert_eq!(
            parse_head(head),
            Ok(Head::Data {
                stream: 3,
                flags: FLAG_FIN,
                length: 70_000
            })
        );
        assert_eq!(data_head(5, false, 0), [0, 0, 0, 5, 0, 0, 0, 0]);
    }

    #[test]
    fn control_frames_have_version_kind_and_length() {
        let p = ping(7);
        assert_eq!(p, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
        let head = parse_head(p[..8].try_into().unwrap()).unwrap();
        assert_eq!(
            head,
            Head::Control {
                kind: PING,
                flags: 0,
                length: 4
            }
        );
        assert_eq!(parse_control(PING, &p[8..]), Ok(Control::Ping { id: 7 }));
        let r = rst_stream(9, REFUSED_STREAM);
        assert_eq!(&r[..8], &[0x80, 3, 0, 3, 0, 0, 0, 8]);
        assert_eq!(
            parse_control(RST_STREAM, &r[8..]),
            Ok(Control::RstStream {
                stream: 9,
                status: 3
            })
        );
        // Only SPDY/3 is spoken; SPDY/2 frames are refused.
        assert!(parse_head([0x80, 2, 0, 6, 0, 0, 0, 4]).is_err());
        // Short payloads are errors, unknown kinds are ignored.
        assert!(parse_control(GOAWAY, &[0, 0]).is_err());
        assert_eq!(parse_control(9, &[0, 0, 0, 1]), Ok(Control::Other));
        assert_eq!(
            parse_control(SYN_REPLY, &[0x80, 0, 0, 5]),
            Ok(Control::SynReply { stream: 5 })
        );
    }

    #[test]
    fn syn_stream_carries_id_and_header_block() {
        let block = [1, 2, 3];
        let f = syn_stream(1, &block);
        assert_eq!(&f[..8], &[0x80, 3, 0, 1, 0, 0, 0, 13]);
        assert_eq!(&f[8..12], &[0, 0, 0, 1]);
        assert_eq!(&f[12..18], &[0, 0, 0, 0, 0, 0]);
        assert_eq!(&f[18..], &block);
    }

    #[test]
    fn header_blocks_are_one_zlib_stream_of_stored_blocks() {
        assert_eq!(
            name_value_block(&[("streamType", "error")]),
            b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05error"
        );
        let mut c = HeaderCompressor::default();
        let first = c.block(&[("streamtype", "error")]);
        // zlib header with FDICT and the dictionary's id, then one stored block.
        assert_eq!(&first[..6], &[0x78, 0xbb, 0xe3, 0xc6, 0xa7, 0xc2]);
        assert_eq!((0x78u16 << 8 | 0xbb) % 31, 0);
        let plain = name_value_block(&[("streamtype", "error")]);
        assert_eq!(
            &first[6..11],
            &[0, plain.len() as u8, 0, !(plain.len() as u8), 0xff]
        );
        assert_eq!(&first[11..first.len() - 5], &plain[..]);
        // The sync-flush marker: an empty stored block.
        assert_eq!(&first[first.len() - 5..], &[0, 0, 0, 0xff, 0xff]);
        // Later blocks continue the stream: no second zlib header.
        let second = c.block(&[("streamtype", "stdin")]);
        assert_eq!(second[0], 0);
        assert_eq!(
            &second[5..second.len() - 5],
            &name_value_block(&[("streamtype", "stdin")])[..]
        );
    }

    #[test]
    fn streams_are_opened_in_client_go_order() {
        let plain = StreamIds::new(true, false);
        assert_eq!(
            plain.all(),
            [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")]
        );
        let tty = StreamIds::new(true, true);
        assert_eq!(
            tty.all(),
            [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")]
        );
        let helper = StreamIds::new(false, false);
        assert_eq!(helper.all(), [(1, "error"), (3, "stdout"), (5, "stderr")]);
        assert_eq!(helper.name(9), "unknown");
    }
}
