//! Test support: a private PKI made with rcgen, and an HTTPS server that answers JSON POSTs
//! like a ContainerSSH auth or config server, optionally demanding client certificates. It runs
//! on its own thread and runtime, so plain `#[test]` functions can use it.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// PEM files of a test CA, a server and client certificate it signed, and an unrelated CA
/// with a client certificate of its own (one the server must refuse).
pub struct Pki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca_cert: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("ca key");
    let cert = params.self_signed(&key).expect("ca cert");
    (Issuer::new(params, key), cert.pem())
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    cn: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn generate(dir: &Path) -> Pki {
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        let (issuer, ca_pem) = ca("containerssh test CA");
        let localhost = vec![
            SanType::DnsName("localhost".try_into().expect("dns name")),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        let (server, server_key) = leaf(
            &issuer,
            "localhost",
            localhost,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client, client_key) = leaf(
            &issuer,
            "containerssh",
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (other_issuer, other_pem) = ca("unrelated CA");
        let (other, other_key) = leaf(
            &other_issuer,
            "stranger",
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca_cert: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &server),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client),
            client_key: write("client-key.pem", &client_key),
            other_ca_cert: write("other-ca.pem", &other_pem),
            other_client_cert: write("other-client.pem", &other),
            other_client_key: write("other-client-key.pem", &other_key),
        }
    }
}

/// What the handler answers: a status and a JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn json(status: u16, body: Value) -> Self {
        Self { status, body }
    }
    pub fn ok(body: Value) -> Self {
        Self::json(200, body)
    }
}

pub type Handler = Arc<dyn Fn(&str, &Value) -> Answer + Send + Sync>;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub body: Value,
    /// Whether the request came over a connection with a verified client certificate.
    pub client_cert_cn: Option<String>,
}

pub enum ClientAuth {
    /// Only client certificates signed by the PKI's CA are accepted.
    Required,
    /// Any client, with or without a certificate.
    Optional,
}

#[derive(Default)]
struct Stats {
    requests: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
    failed_handshakes: AtomicUsize,
}

pub struct WebhookServer {
    #[allow(dead_code)] // used by the webhook_auth benchmark
    pub port: u16,
    pub url: String,
    stats: Arc<Stats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookServer {
    /// Serves HTTPS on 127.0.0.1 (a free port) until dropped.
    pub fn start(pki: &Pki, client_auth: ClientAuth, handler: Handler) -> WebhookServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let read = |p: &PathBuf| std::fs::read(p).expect("read PEM");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(&pki.server_cert))
                .collect::<Result<_, _>>()
                .expect("server cert");
        let key = PrivateKeyDer::from_pem_slice(&read(&pki.server_key)).expect("server key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_auth {
            ClientAuth::Optional => builder.with_no_client_auth(),
            ClientAuth::Required => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&read(&pki.ca_cert)) {
                    roots.add(c.expect("ca cert")).expect("ca cert");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key).expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stats = Arc::new(Stats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread_stats = stats.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(serve(listener, acceptor, handler, thread_stats, stopped));
        });
        WebhookServer {
            port,
            url: format!("https://127.0.0.1:{port}"),
            stats,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.stats.requests.lock().expect("lock").clone()
    }

    /// TCP connections that completed a TLS handshake.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    pub fn failed_handshakes(&self) -> usize {
        self.stats.failed_handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: Handler,
    stats: Arc<Stats>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, _peer): (_, SocketAddr) = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let (acceptor, handler, stats) = (acceptor.clone(), handler.clone(), stats.clone());
        tasks.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(_) => {
                    stats.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            };
            stats.connections.fetch_add(1, Ordering::SeqCst);
            let client_cn = tls
                .get_ref()
                .1
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(|_| "verified".to_string());
            let request_stats = stats.clone();
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (handler, stats, client_cn) =
                        (handler.clone(), request_stats.clone(), client_cn.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let bytes = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        stats.requests.lock().expect("lock").push(Recorded {
                            path: path.clone(),
                            body: body.clone(),
                            client_cert_cn: client_cn,
                        });
                        let answer = handler(&path, &body);
                        hyper::Response::builder()
                            .status(answer.status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(answer.body.to_string())))
                    }
                });
            let io = hyper_util::rt::TokioIo::new(tls);
            // A failed handshake with TLS 1.3 client auth surfaces here, on the first read.
            if hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
                .is_err()
            {
                stats.failed_handshakes.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    tasks.abort_all();
}
