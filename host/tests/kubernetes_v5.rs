//! The exec stream against a local server that speaks the API server's WebSocket exec protocol,
//! for what the Kubernetes 1.20 test cluster cannot show: the v5 half-close of stdin
//! (Kubernetes 1.30 and later), and how a v4 stream is closed after end of input only once
//! the program's output has stopped. The server is ours, over real TCP and a real WebSocket
//! handshake; kube's own mock service cannot do protocol upgrades, so it cannot stand in here.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use containerssh::backend::kubernetes::exec::{self, Target};
use containerssh::backend::{ExitReason, Output};
use futures::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What the server saw: the request URI and every binary frame from the client, and whether
/// the client closed the WebSocket.
#[derive(Default, Debug)]
struct Seen {
    uri: String,
    frames: Vec<Vec<u8>>,
    closed: bool,
}

type Script = fn(
    WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    Arc<Mutex<Seen>>,
) -> futures::future::BoxFuture<'static, ()>;

/// Serves one exec request with `protocol`, then runs `script` on the WebSocket.
async fn server(protocol: &'static str, script: Script) -> (String, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = seen.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let state = state.clone();
            async move {
                state.lock().unwrap().uri = req.uri().to_string();
                let offered = req
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                assert!(offered.contains(protocol), "client offered {offered}");
                let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
                let upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    let upgraded = upgrade.await.unwrap();
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        None,
                    )
                    .await;
                    script(ws, state).await;
                });
                Ok::<_, hyper::Error>(
                    Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("upgrade", "websocket")
                        .header("connection", "Upgrade")
                        .header("sec-websocket-accept", derive_accept_key(&key))
                        .header("sec-websocket-protocol", protocol)
                        .body(Empty::<Bytes>::new())
                        .unwrap(),
                )
            }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades()
            .await
            .unwrap();
    });
    (url, seen)
}

fn target(url: &str) -> Target {
    let config = kube::Config::new(url.parse().unwrap());
    Target {
        client: kube::Client::try_from(config).unwrap(),
        connection_id: "test".into(),
        namespace: "ns".into(),
        pod: "pod".into(),
        container: "shell".into(),
    }
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

/// v5: end of input goes to the server as "close channel 0"; output after it still arrives,
/// and so does the exit status.
#[tokio::test]
async fn v5_passes_end_of_input_and_keeps_the_output_flowing() {
    let (url, seen) = server("v5.channel.k8s.io", |mut ws, seen| {
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
            let mut lines: Vec<&[u8]> = input
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            lines.sort();
            for line in lines {
                ws.send(binary(1, &[line, b"\n"].concat())).await.unwrap();
            }
            ws.send(binary(2, b"done\n")).await.unwrap();
            ws.send(binary(3, br#"{"status":"Success"}"#))
                .await
                .unwrap();
            let _ = ws.close(None).await;
        })
    })
    .await;
    let argv = ["sort".to_string()];
    let mut stream = exec::open(&target(&url), &argv, true, None).await.unwrap();
    assert!(stream.half_close);
    stream.stdin.write_all(b"pear\napple\n").await.unwrap();
    stream.stdin.shutdown().await.unwrap();
    let printed = collect(&mut stream).await;
    assert_eq!(printed, "apple\npear\ndone\n");
    assert_eq!(
        exec::wait_exit(&mut stream.exit).await.unwrap(),
        ExitReason::Status(0)
    );
    let seen = seen.lock().unwrap();
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

/// v4 cannot say "end of input": the stream stays open while output goes on, then closes once
/// the program has been quiet for a moment, and the exit status is reported as unknown.
#[tokio::test]
async fn v4_closes_the_stream_only_after_output_stops() {
    let (url, seen) = server("v4.channel.k8s.io", |mut ws, seen| {
        Box::pin(async move {
            // Output keeps coming for a while after the input (gaps below the quiet time).
            let first = ws.next().await;
            assert!(matches!(first, Some(Ok(Message::Binary(_)))), "{first:?}");
            for i in 0..4 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                ws.send(binary(1, format!("tick {i}\n").as_bytes()))
                    .await
                    .unwrap();
            }
            while let Some(message) = ws.next().await {
                match message {
                    Ok(Message::Binary(frame)) => seen.lock().unwrap().frames.push(frame.to_vec()),
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            seen.lock().unwrap().closed = true;
        })
    })
    .await;
    let argv = ["cat".to_string()];
    let mut stream = exec::open(&target(&url), &argv, true, None).await.unwrap();
    assert!(!stream.half_close);
    stream.stdin.write_all(b"x").await.unwrap();
    stream.stdin.shutdown().await.unwrap();
    let started = tokio::time::Instant::now();
    let printed = collect(&mut stream).await;
    assert_eq!(printed, "tick 0\ntick 1\ntick 2\ntick 3\n");
    // 4 × 0.4 s of output, then one quiet second.
    assert!(started.elapsed() >= Duration::from_millis(1600) + exec::V4_EOF_QUIET);
    let exit = exec::wait_exit(&mut stream.exit).await;
    assert!(
        exit.as_ref()
            .is_err_and(|e| e.to_string().contains("cannot pass end of input")),
        "{exit:?}"
    );
    let seen = seen.lock().unwrap();
    assert!(seen.closed);
    assert!(
        !seen.frames.iter().any(|f| f.first() == Some(&255)),
        "{seen:?}"
    );
}

/// A terminal: the first frame on the resize channel carries the client's size; later
/// resizes follow, and a non-zero exit code arrives as the status.
#[tokio::test]
async fn terminal_size_and_exit_codes_travel_on_their_channels() {
    let (url, seen) = server("v5.channel.k8s.io", |mut ws, seen| {
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
    })
    .await;
    let argv = ["/bin/sh".to_string()];
    let mut stream = exec::open(&target(&url), &argv, true, Some((80, 24)))
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
