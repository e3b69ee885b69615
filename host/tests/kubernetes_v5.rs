//! The exec stream against a local server that speaks the API server's exec protocols, for what
//! the Kubernetes 1.20 test cluster cannot show: the v5 WebSocket half-close of stdin
//! (Kubernetes 1.30 and later), how a server without v5 is spoken to over SPDY/3.1 instead, and
//! SPDY corner cases (pings, refused streams, a connection that ends without a status, uploads
//! far past SPDY's nominal 64 KiB window, which spdystream never opens). The server is ours, over
//! real TCP and real HTTP upgrades; its SPDY framing is written here from the protocol, not
//! taken from the gateway. kube's own mock service cannot do protocol upgrades, so it cannot
//! stand in here.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use containerssh::backend::kubernetes::exec::{self, ExecProtocol, Protocol, Target};
use containerssh::backend::{ExitReason, Output};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Io = TokioIo<hyper::upgrade::Upgraded>;

/// What the server saw.
#[derive(Default, Debug)]
struct Seen {
    uri: String,
    /// WebSocket requests and the protocols each offered.
    websocket_offers: Vec<String>,
    /// SPDY requests: method and `X-Stream-Protocol-Version`.
    spdy_requests: Vec<(String, String)>,
    /// WebSocket binary frames from the client.
    frames: Vec<Vec<u8>>,
    /// SPDY streams the client opened: id and `streamtype`.
    streams: Vec<(u32, String)>,
    /// SPDY data the client sent, per stream id, and which streams it finished.
    data: Vec<(u32, Vec<u8>)>,
    fins: Vec<u32>,
    pings: Vec<u32>,
    closed: bool,
}

type WsScript = fn(WebSocketStream<Io>, Arc<Mutex<Seen>>) -> BoxFuture<'static, ()>;
type SpdyScript = fn(Spdy, Arc<Mutex<Seen>>) -> BoxFuture<'static, ()>;

/// Serves exec requests: WebSocket ones with v5 when `v5` is given (else 403 with an empty
/// body, as a 1.20 kubelet refuses a v5-only offer), SPDY ones with `spdy`.
async fn server(v5: Option<WsScript>, spdy: Option<SpdyScript>) -> (String, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    state.lock().unwrap().uri = req.uri().to_string();
                    let upgrade = header("upgrade");
                    let refused = Response::builder()
                        .status(StatusCode::FORBIDDEN)
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    if upgrade.eq_ignore_ascii_case("websocket") {
                        let offered = header("sec-websocket-protocol");
                        state.lock().unwrap().websocket_offers.push(offered.clone());
                        let Some(script) = v5.filter(|_| offered == "v5.channel.k8s.io") else {
                            return Ok::<_, hyper::Error>(refused);
                        };
                        let key = header("sec-websocket-key");
                        let pending = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let io = TokioIo::new(pending.await.unwrap());
                            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                            script(ws, state).await;
                        });
                        return Ok(Response::builder()
                            .status(StatusCode::SWITCHING_PROTOCOLS)
                            .header("upgrade", "websocket")
                            .header("connection", "Upgrade")
                            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
                            .header("sec-websocket-protocol", "v5.channel.k8s.io")
                            .body(Empty::<Bytes>::new())
                            .unwrap());
                    }
                    let version = header("x-stream-protocol-version");
                    state
                        .lock()
                        .unwrap()
                        .spdy_requests
                        .push((req.method().to_string(), version.clone()));
                    let Some(script) = spdy.filter(|_| upgrade == "SPDY/3.1") else {
                        return Ok(refused);
                    };
                    let pending = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let io = TokioIo::new(pending.await.unwrap());
                        script(Spdy { io }, state).await;
                    });
                    Ok(Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("upgrade", "SPDY/3.1")
                        .header("connection", "Upgrade")
                        .header("x-stream-protocol-version", "v4.channel.k8s.io")
                        .body(Empty::<Bytes>::new())
                        .unwrap())
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades(),
            );
        }
    });
    (url, seen)
}

fn target(url: &str, protocol: &ExecProtocol) -> Target {
    let config = kube::Config::new(url.parse().unwrap());
    Target {
        client: kube::Client::try_from(config).unwrap(),
        protocol: protocol.clone(),
        connection_id: "test".into(),
        namespace: "ns".into(),
        pod: "pod".into(),
        container: "shell".into(),
    }
}

/// The server's side of a SPDY/3 connection, as far as these tests need it.
struct Spdy {
    io: Io,
}

#[derive(Debug)]
enum Frame {
    Control {
        kind: u16,
        payload: Vec<u8>,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FIN: u8 = 1;

impl Spdy {
    async fn read(&mut self) -> Option<Frame> {
        let mut head = [0u8; 8];
        self.io.read_exact(&mut head).await.ok()?;
        let word = u32::from_be_bytes(head[..4].try_into().unwrap());
        let flags = head[4];
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut payload = vec![0; length];
        self.io.read_exact(&mut payload).await.ok()?;
        Some(if word >> 31 == 1 {
            assert_eq!((word >> 16) & 0x7fff, 3, "SPDY version");
            Frame::Control {
                kind: word as u16,
                payload,
            }
        } else {
            Frame::Data {
                stream: word,
                flags,
                data: payload,
            }
        })
    }

    async fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) {
        let mut f = vec![0x80, 3];
        f.extend_from_slice(&kind.to_be_bytes());
        f.push(flags);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(payload);
        self.io.write_all(&f).await.unwrap();
    }

    async fn data(&mut self, stream: u32, fin: bool, data: &[u8]) {
        let mut f = stream.to_be_bytes().to_vec();
        f.push(if fin { FIN } else { 0 });
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        self.io.write_all(&f).await.unwrap();
    }

    /// Reads the client's SYN_STREAMs and accepts each with a SYN_REPLY. The reply's header
    /// block is arbitrary bytes: the client must skip it unread.
    async fn accept_streams(&mut self, count: usize, seen: &Arc<Mutex<Seen>>) -> Vec<u32> {
        let mut zlib = StoredInflater::default();
        let mut ids = Vec::new();
        // What earlier connections sent does not count.
        seen.lock().unwrap().data.clear();
        while ids.len() < count {
            match self.read().await.expect("a SYN_STREAM") {
                Frame::Control {
                    kind: SYN_STREAM,
                    payload,
                    ..
                } => {
                    let id = u32::from_be_bytes(payload[..4].try_into().unwrap());
                    assert_eq!(&payload[4..10], &[0; 6], "no associated stream, priority 0");
                    let headers = parse_name_values(&zlib.block(&payload[10..]));
                    assert_eq!(headers.len(), 1, "{headers:?}");
                    assert_eq!(headers[0].0, "streamtype");
                    seen.lock()
                        .unwrap()
                        .streams
                        .push((id, headers[0].1.clone()));
                    ids.push(id);
                }
                other => panic!("expected SYN_STREAM, got {other:?}"),
            }
        }
        for id in &ids {
            let mut reply = id.to_be_bytes().to_vec();
            reply.extend_from_slice(&[0x78, 0xbb, 0xe3, 0xc6, 0xa7, 0xc2, 0x62, 0x60, 0x60]);
            self.control(SYN_REPLY, 0, &reply).await;
        }
        ids
    }

    /// Reads the client's frames into `seen` until the stream `until` is finished.
    async fn read_until_fin(&mut self, until: u32, seen: &Arc<Mutex<Seen>>) {
        while let Some(frame) = self.read().await {
            let mut s = seen.lock().unwrap();
            match frame {
                Frame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    if !data.is_empty() {
                        match s.data.iter_mut().find(|(id, _)| *id == stream) {
                            Some((_, d)) => d.extend_from_slice(&data),
                            None => s.data.push((stream, data)),
                        }
                    }
                    if flags & FIN != 0 {
                        s.fins.push(stream);
                        if stream == until {
                            return;
                        }
                    }
                }
                Frame::Control {
                    kind: PING,
                    payload,
                    ..
                } => s
                    .pings
                    .push(u32::from_be_bytes(payload[..4].try_into().unwrap())),
                Frame::Control { kind, .. } => panic!("unexpected control frame {kind}"),
            }
        }
        panic!("the connection ended before stream {until} was finished");
    }

    /// Status on the error stream, then GOAWAY, as a kubelet ends an exec; then waits for the
    /// client to close the connection.
    async fn finish(&mut self, error_stream: u32, status: &[u8], seen: &Arc<Mutex<Seen>>) {
        self.data(error_stream, false, status).await;
        self.control(GOAWAY, 0, &[0; 8]).await;
        // The answer to a ping may come after the end of input: frames are read to the end.
        while let Some(frame) = self.read().await {
            if let Frame::Control {
                kind: PING,
                payload,
                ..
            } = frame
            {
                seen.lock()
                    .unwrap()
                    .pings
                    .push(u32::from_be_bytes(payload[..4].try_into().unwrap()));
            }
        }
        seen.lock().unwrap().closed = true;
    }
}

/// Reads header blocks written as stored deflate blocks after a zlib header naming the SPDY/3
/// dictionary (which is what the gateway writes; a real inflater reads them too).
#[derive(Default)]
struct StoredInflater {
    started: bool,
}

impl StoredInflater {
    fn block(&mut self, mut b: &[u8]) -> Vec<u8> {
        if !self.started {
            assert_eq!(b[0] & 0x0f, 8, "deflate");
            assert_eq!(b[1] & 0x20, 0x20, "FDICT");
            assert_eq!(u16::from_be_bytes([b[0], b[1]]) % 31, 0, "FCHECK");
            assert_eq!(&b[2..6], &[0xe3, 0xc6, 0xa7, 0xc2], "the SPDY/3 dictionary");
            b = &b[6..];
            self.started = true;
        }
        let mut out = Vec::new();
        // Stored blocks up to the sync-flush marker (an empty one), which Go's inflater needs to
        // hand the data on.
        loop {
            assert_eq!(b[0], 0, "a non-final stored block");
            let len = u16::from_le_bytes([b[1], b[2]]);
            assert_eq!(!len, u16::from_le_bytes([b[3], b[4]]));
            out.extend_from_slice(&b[5..5 + len as usize]);
            b = &b[5 + len as usize..];
            if len == 0 {
                assert!(b.is_empty(), "the block ends at the marker");
                return out;
            }
        }
    }
}

fn parse_name_values(b: &[u8]) -> Vec<(String, String)> {
    let word = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let mut at = 4;
    let mut out = Vec::new();
    for _ in 0..word(0) {
        let n = word(at);
        let name = String::from_utf8(b[at + 4..at + 4 + n].to_vec()).unwrap();
        at += 4 + n;
        let v = word(at);
        let value = String::from_utf8(b[at + 4..at + 4 + v].to_vec()).unwrap();
        at += 4 + v;
        out.push((name, value));
    }
    assert_eq!(at, b.len());
    out
}

fn binary(channel: u8, data: &[u8]) -> Message {
    let mut frame = vec![channel];
    frame.extend_from_slice(data);
    Message::Binary(frame.into())
}

async fn collect(stream: &mut exec::ExecStream) -> String {
    let mut out = Vec::new();
    while let Some(item) = stream.output.next().await {
        match item.unwrap() {
            Output::Stdout(b) | Output::Stderr(b) => out.extend_from_slice(&b),
        }
    }
    String::from_utf8(out).unwrap()
}

fn sorted_lines(input: &[u8]) -> Vec<u8> {
    let mut lines: Vec<&[u8]> = input
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines.iter().flat_map(|l| [*l, b"\n"].concat()).collect()
}

/// v5: end of input goes to the server as "close channel 0"; output after it still arrives,
/// and so does the exit status. Only v5 is offered.
#[tokio::test]
async fn v5_passes_end_of_input_and_keeps_the_output_flowing() {
    let (url, seen) = server(
        Some(|mut ws, seen| {
            Box::pin(async move {
                // Like `sort`: read everything, answer only after end of input.
                let mut input = Vec::new();
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Binary(frame) = message {
                        seen.lock().unwrap().frames.push(frame.to_vec());
                        match frame[0] {
                            0 => input.extend_from_slice(&frame[1..]),
                            255 if frame[1..] == [0] => break,
                            _ => {}
                        }
                    }
                }
                ws.send(binary(1, &sorted_lines(&input))).await.unwrap();
                ws.send(binary(2, b"done\n")).await.unwrap();
                ws.send(binary(3, br#"{"status":"Success"}"#))
                    .await
                    .unwrap();
                let _ = ws.close(None).await;
            })
        }),
        None,
    )
    .await;
    let protocol = ExecProtocol::for_version("1", "31");
    let argv = ["sort".to_string()];
    let mut stream = exec::open(&target(&url, &protocol), &argv, true, None)
        .await
        .unwrap();
    assert_eq!(stream.protocol, Protocol::WebSocketV5);
    assert_eq!(protocol.known(), Some(Protocol::WebSocketV5));
    stream.stdin.write_all(b"pear\napple\n").await.unwrap();
    stream.stdin.shutdown().await.unwrap();
    let printed = collect(&mut stream).await;
    assert_eq!(printed, "apple\npear\ndone\n");
    assert_eq!(
        exec::wait_exit(&mut stream.exit).await.unwrap(),
        ExitReason::Status(0)
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.websocket_offers, ["v5.channel.k8s.io"]);
    assert!(seen.spdy_requests.is_empty());
    assert!(
        seen.uri.contains("/api/v1/namespaces/ns/pods/pod/exec?"),
        "{}",
        seen.uri
    );
    assert!(
        seen.uri.contains("stdin=true") && seen.uri.contains("command=sort"),
        "{}",
        seen.uri
    );
    assert_eq!(seen.frames.last().map(Vec::as_slice), Some(&[255u8, 0][..]));
}

/// A server without v5 refuses the v5-only WebSocket request before anything runs; the exec
/// is made over SPDY, where end of input is a FIN on the stdin stream and the exit status
/// comes on the error stream. The next exec goes to SPDY directly.
#[tokio::test]
async fn without_v5_the_exec_runs_over_spdy_with_an_exact_end_of_input() {
    let (url, seen) = server(
        None,
        Some(|mut spdy, seen| {
            Box::pin(async move {
                let ids = spdy.accept_streams(4, &seen).await;
                // A server ping must come back with the same id.
                spdy.control(PING, 0, &2u32.to_be_bytes()).await;
                spdy.read_until_fin(ids[1], &seen).await;
                let input = seen
                    .lock()
                    .unwrap()
                    .data
                    .iter()
                    .find(|(id, _)| *id == ids[1])
                    .map(|(_, d)| d.clone())
                    .unwrap_or_default();
                // Output after end of input, in two frames, and on stderr.
                let sorted = sorted_lines(&input);
                let (a, b) = sorted.split_at(sorted.len() / 2);
                spdy.data(ids[2], false, a).await;
                spdy.data(ids[2], false, b).await;
                spdy.data(ids[3], false, b"done\n").await;
                let status = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
                spdy.finish(ids[0], status, &seen).await;
            })
        }),
    )
    .await;
    let protocol = ExecProtocol::default();
    let target = target(&url, &protocol);
    let argv = ["sort".to_string()];
    let mut stream = exec::open(&target, &argv, true, None).await.unwrap();
    assert_eq!(stream.protocol, Protocol::Spdy);
    assert_eq!(protocol.known(), Some(Protocol::Spdy));
    stream.stdin.write_all(b"pear\napple\n").await.unwrap();
    stream.stdin.shutdown().await.unwrap();
    assert_eq!(collect(&mut stream).await, "apple\npear\ndone\n");
    assert_eq!(
        exec::wait_exit(&mut stream.exit).await.unwrap(),
        ExitReason::Status(3)
    );
    drop(stream);
    for _ in 0..100 {
        if seen.lock().unwrap().closed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.websocket_offers, ["v5.channel.k8s.io"]);
        assert_eq!(
            seen.spdy_requests,
            [("POST".to_string(), "v4.channel.k8s.io".to_string())]
        );
        let types: Vec<(u32, &str)> = seen.streams.iter().map(|(i, t)| (*i, t.as_str())).collect();
        assert_eq!(
            types,
            [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")]
        );
        assert_eq!(seen.fins, [3], "stdin and nothing else is half-closed");
        assert_eq!(seen.pings, [2], "the server's ping is answered");
        assert!(seen.closed, "the client closes the connection after GOAWAY");
        assert!(
            seen.uri.contains("stdin=true") && seen.uri.contains("command=sort"),
            "{}",
            seen.uri
        );
    }
    // Learnt: the next exec asks for no WebSocket.
    let mut stream = exec::open(&target, &argv, true, None).await.unwrap();
    stream.stdin.write_all(b"b\na\n").await.unwrap();
    stream.stdin.shutdown().await.unwrap();
    assert_eq!(collect(&mut stream).await, "a\nb\ndone\n");
    assert_eq!(seen.lock().unwrap().websocket_offers.len(), 1);
    assert_eq!(seen.lock().unwrap().spdy_requests.len(), 2);
}

/// SPDY/3.1 nominally gives each stream a 64 KiB window, but spdystream never sends a
/// WINDOW_UPDATE: 8 MiB go up and come back whole, with no window granted.
#[tokio::test]
async fn spdy_uploads_are_not_held_to_a_window_the_server_never_opens() {
    let (url, _seen) = server(
        None,
        Some(|mut spdy, seen| {
            Box::pin(async move {
                let ids = spdy.accept_streams(4, &seen).await;
                // cat: every input frame straight back on stdout.
                loop {
                    match spdy.read().await.expect("input") {
                        Frame::Data {
                            stream,
                            flags,
                            data,
                        } if stream == ids[1] => {
                            if !data.is_empty() {
                                spdy.data(ids[2], false, &data).await;
                            }
                            if flags & FIN != 0 {
                                break;
                            }
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                spdy.finish(ids[0], br#"{"metadata":{},"status":"Success"}"#, &seen)
                    .await;
            })
        }),
    )
    .await;
    let protocol = ExecProtocol::for_version("1", "20");
    let argv = ["cat".to_string()];
    let mut stream = exec::open(&target(&url, &protocol), &argv, true, None)
        .await
        .unwrap();
    let input: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let expected = input.clone();
    let mut stdin = stream.stdin;
    let writer = tokio::spawn(async move {
        stdin.write_all(&input).await.unwrap();
        stdin.shutdown().await.unwrap();
    });
    let mut out = Vec::new();
    while let Some(item) = stream.output.next().await {
        match item.unwrap() {
            Output::Stdout(b) => out.extend_from_slice(&b),
            Output::Stderr(b) => panic!("stderr: {b:?}"),
        }
    }
    writer.await.unwrap();
    assert!(out == expected, "{} bytes came back", out.len());
    assert_eq!(
        exec::wait_exit(&mut stream.exit).await.unwrap(),
        ExitReason::Status(0)
    );
}

/// A terminal over SPDY: a resize stream instead of stderr, each size a JSON line on it.
#[tokio::test]
async fn spdy_terminals_get_their_size_on_the_resize_stream() {
    let (url, seen) = server(
        None,
        Some(|mut spdy, seen| {
            Box::pin(async move {
                let ids = spdy.accept_streams(4, &seen).await;
                // Two sizes, then end of input.
                spdy.read_until_fin(ids[1], &seen).await;
                spdy.data(ids[2], false, b"$ ").await;
                spdy.finish(ids[0], br#"{"metadata":{},"status":"Success"}"#, &seen)
                    .await;
            })
        }),
    )
    .await;
    let protocol = ExecProtocol::for_version("1", "20");
    let argv = ["/bin/sh".to_string()];
    let mut stream = exec::open(&target(&url, &protocol), &argv, true, Some((80, 24)))
        .await
        .unwrap();
    stream
        .resize
        .clone()
        .unwrap()
        .send((132, 50))
        .await
        .unwrap();
    // Both sizes are out before the end of input.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.stdin.shutdown().await.unwrap();
    assert_eq!(collect(&mut stream).await, "$ ");
    assert_eq!(
        exec::wait_exit(&mut stream.exit).await.unwrap(),
        ExitReason::Status(0)
    );
    let seen = seen.lock().unwrap();
    let types: Vec<&str> = seen.streams.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(types, ["error", "stdin", "stdout", "resize"]);
    let resize = seen
        .data
        .iter()
        .find(|(id, _)| *id == 7)
        .map(|(_, d)| d.clone());
    assert_eq!(
        String::from_utf8(resize.unwrap()).unwrap(),
        "{\"Width\":80,\"Height\":24}\n{\"Width\":132,\"Height\":50}\n"
    );
    assert!(
        seen.uri.contains("tty=true") && !seen.uri.contains("stderr=true"),
        "{}",
        seen.uri
    );
}

/// A refused stream fails the start with a reason; a connection that ends without a status
/// is reported as such, not as success.
#[tokio::test]
async fn spdy_failures_are_told_apart() {
    let (url, _) = server(
        None,
        Some(|mut spdy, _seen| {
            Box::pin(async move {
                let _ = spdy.read().await;
                // RST_STREAM, REFUSED_STREAM, for stream 1.
                spdy.control(RST_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 3]).await;
                let mut rest = Vec::new();
                let _ = spdy.io.read_to_end(&mut rest).await;
            })
        }),
    )
    .await;
    let protocol = ExecProtocol::for_version("1", "20");
    let argv = ["true".to_string()];
    let err = exec::open(&target(&url, &protocol), &argv, false, None)
        .await
        .err()
        .expect("a refused stream fails the start");
    assert!(
        format!("{err:#}").contains("refused the exec's error stream"),
        "{err:#}"
    );

    let (url, _) = server(
        None,
        Some(|mut spdy, seen| {
            Box::pin(async move {
                let ids = spdy.accept_streams(3, &seen).await;
                spdy.data(ids[1], false, b"partial").await;
                spdy.control(GOAWAY, 0, &[0; 8]).await;
            })
        }),
    )
    .await;
    let mut stream = exec::open(&target(&url, &protocol), &argv, false, None)
        .await
        .unwrap();
    assert_eq!(collect(&mut stream).await, "partial");
    let exit = exec::wait_exit(&mut stream.exit).await;
    assert!(
        exit.as_ref()
            .is_err_and(|e| e.to_string().contains("without an exit status")),
        "{exit:?}"
    );
}

/// A terminal over v5: the first frame on the resize channel carries the client's size; later
/// resizes follow, and a non-zero exit code arrives as the status.
#[tokio::test]
async fn terminal_size_and_exit_codes_travel_on_their_channels() {
    let (url, seen) = server(
        Some(|mut ws, seen| {
            Box::pin(async move {
                let mut resizes = 0;
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Binary(frame) = message {
                        seen.lock().unwrap().frames.push(frame.to_vec());
                        if frame[0] == 4 {
                            resizes += 1;
                            if resizes == 2 {
                                break;
                            }
                        }
                    }
                }
                let status = br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"42"}]}}"#;
                ws.send(binary(3, status)).await.unwrap();
                let _ = ws.close(None).await;
            })
        }),
        None,
    )
    .await;
    let argv = ["/bin/sh".to_string()];
    let protocol = ExecProtocol::default();
    let mut stream = exec::open(&target(&url, &protocol), &argv, true, Some((80, 24)))
        .await
        .unwrap();
    let resize = stream.resize.clone().unwrap();
    resize.send((132, 50)).await.unwrap();
    assert_eq!(collect(&mut stream).await, "");
    assert_eq!(
        exec::wait_exit(&mut stream.exit).await.unwrap(),
        ExitReason::Status(42)
    );
    let seen = seen.lock().unwrap();
    let resizes: Vec<String> = seen
        .frames
        .iter()
        .filter(|f| f[0] == 4)
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .collect();
    assert_eq!(
        resizes,
        [
            r#"{"Width":80,"Height":24}"#,
            r#"{"Width":132,"Height":50}"#
        ]
    );
    assert!(
        seen.uri.contains("tty=true") && !seen.uri.contains("stderr=true"),
        "{}",
        seen.uri
    );
}

/// A server known to speak v5 that refuses an exec gets no second try over SPDY.
#[tokio::test]
async fn a_refusal_from_a_known_v5_server_is_final() {
    let (url, seen) = server(None, None).await;
    let protocol = ExecProtocol::default();
    // What an earlier exec taught: this server speaks v5.
    let (v5_url, _) = server(
        Some(|ws, _| {
            Box::pin(async move {
                let mut ws = ws;
                ws.send(binary(3, br#"{"status":"Success"}"#))
                    .await
                    .unwrap();
                let _ = ws.close(None).await;
            })
        }),
        None,
    )
    .await;
    let argv = ["true".to_string()];
    let mut first = exec::open(&target(&v5_url, &protocol), &argv, false, None)
        .await
        .unwrap();
    assert_eq!(collect(&mut first).await, "");
    let err = exec::open(&target(&url, &protocol), &argv, false, None)
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    assert!(seen.lock().unwrap().spdy_requests.is_empty());
}

/// A program that closes its input (the server ends the stdin stream) frees the client from
/// sending any: the gateway half-closes stdin itself, as kubectl does, and the stream ends
/// with the program although the client never ended its input.
#[tokio::test]
async fn spdy_stdin_closed_by_the_program_is_closed_by_the_gateway_too() {
    let (url, seen) = server(
        None,
        Some(|mut spdy, seen| {
            Box::pin(async move {
                let ids = spdy.accept_streams(4, &seen).await;
                spdy.data(ids[1], true, b"").await;
                spdy.read_until_fin(ids[1], &seen).await;
                spdy.data(ids[2], false, b"bye\n").await;
                spdy.finish(ids[0], br#"{"metadata":{},"status":"Success"}"#, &seen)
                    .await;
            })
        }),
    )
    .await;
    let protocol = ExecProtocol::for_version("1", "20");
    let argv = ["exec 0<&-; echo bye".to_string()];
    let mut stream = exec::open(&target(&url, &protocol), &argv, true, None)
        .await
        .unwrap();
    // The client's input stays open throughout.
    let _stdin = stream.stdin;
    let mut out = Vec::new();
    while let Some(item) = stream.output.next().await {
        if let Output::Stdout(b) = item.unwrap() {
            out.extend_from_slice(&b);
        }
    }
    assert_eq!(out, b"bye\n");
    assert_eq!(
        exec::wait_exit(&mut stream.exit).await.unwrap(),
        ExitReason::Status(0)
    );
    assert_eq!(seen.lock().unwrap().fins, [3]);
}
