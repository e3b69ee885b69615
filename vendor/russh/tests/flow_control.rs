//! containerssh patch: flow control per channel. The server grants window only as a channel's
//! reader takes data, so a reader that stops reading stops its own peer by window exhaustion
//! while every other channel, pings and disconnects go on.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::server::{self, Auth, Msg, Server as _, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, Disconnect, client};
use ssh_key::PrivateKey;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::time::timeout;

const WINDOW: u32 = 256 * 1024;
const UPLOAD: usize = 8 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_stalls_only_its_own_channel() -> Result<(), anyhow::Error> {
    let state = Arc::new(Shared::default());
    let addr = start_server(state.clone()).await?;
    let session = connect(addr).await?;

    // Channel A: its reader on the server stops until released.
    let stalled = session.channel_open_session().await?;
    stalled.exec(true, "stall").await?;
    let (_stalled_read, stalled_write) = stalled.split();
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    let upload = tokio::spawn(async move {
        let mut writer = stalled_write.make_writer();
        let chunk = vec![7u8; 32 * 1024];
        while counter.load(Ordering::Relaxed) < UPLOAD {
            writer.write_all(&chunk).await?;
            counter.fetch_add(chunk.len(), Ordering::Relaxed);
        }
        writer.flush().await?;
        Ok::<_, anyhow::Error>(())
    });

    // The uploader runs into the window and stays there.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let plateau = written.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        written.load(Ordering::Relaxed),
        plateau,
        "the stalled channel kept accepting data"
    );
    assert!(
        plateau <= WINDOW as usize,
        "the client sent {plateau} bytes into a window of {WINDOW}"
    );
    assert!(
        state.taken.load(Ordering::Relaxed) == 0,
        "the stalled reader read"
    );

    // Channel B and the connection itself still work.
    let echo = session.channel_open_session().await?;
    echo.exec(true, "echo").await?;
    let (mut echo_read, echo_write) = echo.split();
    echo_write
        .data_bytes(&b"ping through a busy connection"[..])
        .await?;
    let reply = timeout(Duration::from_secs(5), async {
        loop {
            match echo_read.wait().await {
                Some(ChannelMsg::Data { data }) => return Some(data),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
    .expect("a second channel answers while the first is stalled");
    assert_eq!(
        reply.as_deref(),
        Some(&b"ping through a busy connection"[..])
    );
    timeout(Duration::from_secs(5), session.send_ping())
        .await
        .expect("pings are answered while a channel is stalled")?;

    // Once the reader reads again, the whole upload arrives.
    state.release.notify_one();
    timeout(Duration::from_secs(30), upload)
        .await
        .expect("the upload finishes once the reader reads")??;
    timeout(Duration::from_secs(10), async {
        while state.taken.load(Ordering::Relaxed) < UPLOAD {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every byte reaches the reader");
    assert_eq!(state.taken.load(Ordering::Relaxed), UPLOAD);

    timeout(
        Duration::from_secs(5),
        session.disconnect(Disconnect::ByApplication, "", ""),
    )
    .await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_nobody_reads_does_not_stall_its_peer() -> Result<(), anyhow::Error> {
    let state = Arc::new(Shared::default());
    let addr = start_server(state.clone()).await?;
    let session = connect(addr).await?;
    let channel = session.channel_open_session().await?;
    // The server drops its reader at once: data for it is granted back as it arrives.
    channel.exec(true, "drop").await?;
    let (_read, write) = channel.split();
    let mut writer = write.make_writer();
    timeout(Duration::from_secs(30), async {
        let chunk = vec![1u8; 64 * 1024];
        for _ in 0..(UPLOAD / chunk.len()) {
            writer.write_all(&chunk).await?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .expect("a dropped reader does not hold the window")?;
    Ok(())
}

#[derive(Default)]
struct Shared {
    taken: AtomicUsize,
    release: Notify,
}

async fn start_server(state: Arc<Shared>) -> Result<SocketAddr, anyhow::Error> {
    let config = Arc::new(server::Config {
        keys: vec![PrivateKey::random(
            &mut rand::rng(),
            ssh_key::Algorithm::Ed25519,
        )?],
        window_size: WINDOW,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = Server {
                state: state.clone(),
                channels: Default::default(),
            };
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(session) = server::run_stream(config, stream, handler).await {
                    let _ = session.await;
                }
            });
        }
    });
    Ok(addr)
}

async fn connect(addr: SocketAddr) -> Result<client::Handle<Client>, anyhow::Error> {
    let config = Arc::new(client::Config::default());
    let mut session = client::connect(config, addr, Client).await?;
    let key = Arc::new(PrivateKey::random(
        &mut rand::rng(),
        ssh_key::Algorithm::Ed25519,
    )?);
    let auth = session
        .authenticate_publickey("user", PrivateKeyWithHashAlg::new(key, None))
        .await?;
    assert!(auth.success(), "authentication failed");
    Ok(session)
}

struct Server {
    state: Arc<Shared>,
    channels: std::collections::HashMap<ChannelId, Channel<Msg>>,
}

impl server::Server for Server {
    type Handler = Self;

    fn new_client(&mut self, _: Option<SocketAddr>) -> Self::Handler {
        unreachable!("connections are served with run_stream")
    }
}

impl server::Handler for Server {
    type Error = anyhow::Error;

    async fn auth_publickey(
        &mut self,
        _: &str,
        _: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        self.channels.insert(channel.id(), channel);
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(id)?;
        let Some(channel) = self.channels.remove(&id) else {
            return Ok(());
        };
        let state = self.state.clone();
        match command {
            b"stall" => {
                tokio::spawn(async move {
                    let (mut read, _write) = channel.split();
                    state.release.notified().await;
                    while let Some(msg) = read.wait().await {
                        if let ChannelMsg::Data { data } = msg {
                            state.taken.fetch_add(data.len(), Ordering::Relaxed);
                        }
                    }
                });
            }
            b"echo" => {
                tokio::spawn(async move {
                    let (mut read, write) = channel.split();
                    while let Some(msg) = read.wait().await {
                        if let ChannelMsg::Data { data } = msg
                            && write.data_bytes(data).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
            _ => drop(channel),
        }
        Ok(())
    }
}

struct Client;

impl client::Handler for Client {
    type Error = anyhow::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}
