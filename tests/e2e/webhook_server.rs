//! Test support: a private PKI made with rcgen, and an HTTPS server that answers JSON POSTs
//! like a ContainerSSH auth or config server, optionally demanding client certificates. It runs
//! on its own thread and runtime, so plain `#[test]` functions can use it.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// PEM files of a test CA, a server and a client certificate it signed, and an unrelated CA
/// with a client certificate of its own (one the server must refuse).
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca_cert: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

/// Certificate parameters with a CN; CAs may sign, leaves get one extended key usage.
fn params(cn: &str, sans: Vec<SanType>, eku: Option<Eku>) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("certificate params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    if let Some(eku) = eku {
        params.extended_key_usages = vec![eku];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    } else {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    }
    params
}

impl Pki {
    /// Writes fresh certificates and keys into `dir` (usually a tempdir).
    pub fn generate(dir: &Path) -> Pki {
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
            path
        };
        let ca = |cn: &str| {
            let key = KeyPair::generate().expect("generate CA key");
            let params = params(cn, vec![], None);
            let cert = params.self_signed(&key).expect("self-sign CA");
            (Issuer::new(params, key), cert.pem())
        };
        let leaf = |issuer: &Issuer<KeyPair>, cn: &str, sans: Vec<SanType>, eku: Eku| {
            let key = KeyPair::generate().expect("generate leaf key");
            let cert = params(cn, sans, Some(eku)).signed_by(&key, issuer);
            (cert.expect("sign leaf").pem(), key.serialize_pem())
        };
        let (issuer, ca_pem) = ca("containerssh test CA");
        let localhost = vec![
            SanType::DnsName("localhost".try_into().expect("DNS name")),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        let (server, server_key) = leaf(&issuer, "localhost", localhost, Eku::ServerAuth);
        let (client, client_key) = leaf(&issuer, "containerssh", vec![], Eku::ClientAuth);
        let (other_issuer, other_pem) = ca("unrelated CA");
        let (other, other_key) = leaf(&other_issuer, "stranger", vec![], Eku::ClientAuth);
        Pki {
            dir: dir.to_path_buf(),
            ca_cert: write("ca.pem", ca_pem),
            server_cert: write("server.pem", server),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client),
            client_key: write("client-key.pem", client_key),
            other_ca_cert: write("other-ca.pem", other_pem),
            other_client_cert: write("other-client.pem", other),
            other_client_key: write("other-client-key.pem", other_key),
        }
    }
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .unwrap_or_else(|e| panic!("read certificates {path:?}: {e}"))
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap_or_else(|e| panic!("read key {path:?}: {e}"))
}

fn roots(path: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(certs(path));
    roots
}

/// What the handler answers: a status and a JSON body, after an optional delay (for timeouts).
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub delay: Duration,
}

impl Answer {
    pub fn json(status: u16, body: Value) -> Self {
        let delay = Duration::ZERO;
        Self {
            status,
            body,
            delay,
        }
    }
    pub fn ok(body: Value) -> Self {
        Self::json(200, body)
    }
    pub fn delayed(self, delay: Duration) -> Self {
        Self { delay, ..self }
    }
}

/// Called with the request path and its JSON body (`Value::Null` if it was not JSON).
pub type Handler = Arc<dyn Fn(&str, &Value) -> Answer + Send + Sync>;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub body: Value,
    /// CN of the verified client certificate (`Some("")` if it has none), `None` without one.
    pub client_cert_cn: Option<String>,
}

pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A client certificate is asked for; one signed by the PKI's CA is accepted, none is too.
    Optional,
    /// Only client certificates signed by the PKI's CA are accepted.
    Required,
}

#[derive(Default)]
struct Stats {
    requests: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
    failed_handshakes: AtomicUsize,
}

pub struct WebhookServer {
    pub port: u16,
    /// `https://127.0.0.1:PORT`, without a trailing slash.
    pub url: String,
    stats: Arc<Stats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookServer {
    /// Serves HTTPS (TLS 1.2 and 1.3, HTTP/1.1 keep-alive) on a free port of 127.0.0.1 until
    /// dropped. The socket listens before this returns, so clients may connect at once.
    pub fn start(pki: &Pki, client_auth: ClientAuth, handler: Handler) -> WebhookServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional | ClientAuth::Required => {
                let roots = Arc::new(roots(&pki.ca_cert));
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = match client_auth {
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                builder.with_client_cert_verifier(verifier.build().expect("client verifier"))
            }
        };
        let config = builder
            .with_single_cert(certs(&pki.server_cert), key(&pki.server_key))
            .expect("server TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("listener address").port();
        let stats = Arc::new(Stats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread_stats = stats.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("webhook server runtime");
            // Dropping the runtime afterwards cancels open keep-alive connections too.
            rt.block_on(serve(listener, acceptor, handler, thread_stats, stopped));
        });
        let url = format!("https://127.0.0.1:{port}");
        let (stop, thread) = (Some(stop), Some(thread));
        WebhookServer {
            port,
            url,
            stats,
            stop,
            thread,
        }
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.stats.requests.lock().expect("requests lock").clone()
    }

    /// TCP connections that completed a TLS handshake (fewer than requests: reuse).
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed, on either side (no or untrusted client cert, wrong CA).
    pub fn failed_handshakes(&self) -> usize {
        self.stats.failed_handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
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
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let tcp = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let (acceptor, handler, stats) = (acceptor.clone(), handler.clone(), stats.clone());
        tokio::spawn(async move {
            // The server's handshake ends only after the client's Finished, so a missing or
            // untrusted client certificate fails here even with TLS 1.3.
            let Ok(tls) = acceptor.accept(tcp).await else {
                stats.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                return;
            };
            stats.connections.fetch_add(1, Ordering::SeqCst);
            let cn = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let cn = cn.map(|cert| subject_cn(cert).unwrap_or_default());
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let (handler, stats, cn) = (handler.clone(), stats.clone(), cn.clone());
                async move {
                    let path = req.uri().path().to_string();
                    let bytes = req.into_body().collect().await?.to_bytes();
                    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let (path2, body2) = (path.clone(), body.clone());
                    let recorded = Recorded {
                        path: path2,
                        body: body2,
                        client_cert_cn: cn,
                    };
                    stats.requests.lock().expect("requests lock").push(recorded);
                    let answer = handler(&path, &body);
                    tokio::time::sleep(answer.delay).await;
                    let json = Bytes::from(answer.body.to_string());
                    let mut response = hyper::Response::new(Full::new(json));
                    *response.status_mut() = answer.status.try_into().expect("HTTP status");
                    let json = "application/json".try_into().expect("header value");
                    response
                        .headers_mut()
                        .insert(hyper::header::CONTENT_TYPE, json);
                    Ok::<_, hyper::Error>(response)
                }
            });
            let io = hyper_util::rt::TokioIo::new(tls);
            let http = hyper::server::conn::http1::Builder::new(); // keep-alive by default
            let _ = http.serve_connection(io, service).await;
        });
    }
}

/// Splits one DER element off the front: (tag, contents, rest).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n > 4 || rest.len() < n {
            return None;
        }
        let (len, rest) = rest.split_at(n);
        (
            len.iter().fold(0, |acc, b| acc << 8 | usize::from(*b)),
            rest,
        )
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The subject CN of a DER certificate: a few lines of DER walking instead of a parser crate.
fn subject_cn(cert: &[u8]) -> Option<String> {
    let (_, tbs, _) = tlv(tlv(cert)?.1)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2; // [0] version
    }
    for _ in 0..4 {
        rest = tlv(rest)?.2; // serial, signature algorithm, issuer, validity
    }
    let (_, mut subject, _) = tlv(rest)?;
    while let Some((_, set, next)) = tlv(subject) {
        let (_, oid, value) = tlv(tlv(set)?.1)?;
        if oid == [0x55, 4, 3] {
            return String::from_utf8(tlv(value)?.1.to_vec()).ok();
        }
        subject = next;
    }
    None
}

#[cfg(test)] // also compiled into the webhook_auth benchmark, which has no tests
mod tests {
    use super::*;
    use serde_json::json;

    type Identity<'a> = Option<(&'a PathBuf, &'a PathBuf)>;

    fn client(trust: &Path, identity: Identity, tls12: bool) -> reqwest::Client {
        let version = if tls12 {
            &rustls::version::TLS12
        } else {
            &rustls::version::TLS13
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("TLS versions")
            .with_root_certificates(roots(trust));
        let config = match identity {
            Some((c, k)) => builder
                .with_client_auth_cert(certs(c), key(k))
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        let builder = reqwest::Client::builder().use_preconfigured_tls(config);
        builder
            .timeout(Duration::from_millis(500))
            .build()
            .expect("reqwest client")
    }

    type Got = Result<(u16, Value), String>;

    /// POSTs each (path, body) in turn on one runtime, so the client can reuse its connection.
    fn post(c: &reqwest::Client, url: &str, calls: &[(&str, &str)]) -> Vec<Got> {
        let rt = tokio::runtime::Runtime::new().expect("test runtime");
        rt.block_on(async {
            let mut got = vec![];
            for (path, body) in calls {
                let sent = c.post(format!("{url}{path}")).body(body.to_string()).send();
                let answer = async {
                    let response = sent.await?;
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await?;
                    Ok((
                        status,
                        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    ))
                };
                got.push(answer.await.map_err(|e: reqwest::Error| format!("{e:?}")));
                // hyper hands a connection back to its pool from the connection's own task just
                // after the body ends; on a busy machine a request sent at once can find the
                // pool empty and open a second connection.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            got
        })
    }

    /// The server may count a failed handshake just after the client saw it fail.
    fn eventually(check: impl Fn() -> bool) -> bool {
        let pause = || std::thread::sleep(Duration::from_millis(20));
        (0..250).any(|_| check() || (pause(), false).1)
    }

    fn echo() -> Handler {
        Arc::new(|path, body| Answer::json(201, json!({"path": path, "got": body})))
    }

    #[test]
    fn webhook_server_answers_and_records_mutual_tls_requests_on_one_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::generate(dir.path());
        assert!(pki.ca_cert.starts_with(&pki.dir));
        for tls12 in [false, true] {
            let server = WebhookServer::start(&pki, ClientAuth::Required, echo());
            assert_eq!(server.url, format!("https://127.0.0.1:{}", server.port));
            let c = client(
                &pki.ca_cert,
                Some((&pki.client_cert, &pki.client_key)),
                tls12,
            );
            let calls = [("/password", r#"{"username":"alice"}"#), ("/x", "not json")];
            let got = post(&c, &server.url, &calls);
            let answer = json!({"path": "/password", "got": {"username": "alice"}});
            assert_eq!(got[0], Ok((201, answer)));
            assert_eq!(got[1], Ok((201, json!({"path": "/x", "got": null}))));
            let requests = server.requests();
            assert_eq!(requests.len(), 2);
            assert_eq!(requests[0].path, "/password");
            assert_eq!(requests[0].body, json!({"username": "alice"}));
            assert_eq!(requests[1].body, Value::Null);
            assert_eq!(requests[0].client_cert_cn.as_deref(), Some("containerssh"));
            assert_eq!((server.connections(), server.failed_handshakes()), (1, 0));
        }
    }

    #[test]
    fn webhook_server_refuses_clients_without_a_trusted_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::generate(dir.path());
        let server = WebhookServer::start(&pki, ClientAuth::Required, echo());
        for tls12 in [false, true] {
            for identity in [None, Some((&pki.other_client_cert, &pki.other_client_key))] {
                let c = client(&pki.ca_cert, identity, tls12);
                // With TLS 1.3 the client only learns of it when it reads the answer.
                assert!(post(&c, &server.url, &[("/", "{}")])[0].is_err());
            }
        }
        let failed = || server.failed_handshakes();
        assert!(
            eventually(|| failed() == 4),
            "{} failed handshakes",
            failed()
        );
        assert!(server.requests().is_empty());
        assert_eq!(server.connections(), 0);
    }

    #[test]
    fn webhook_server_is_not_trusted_by_a_client_of_another_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::generate(dir.path());
        let server = WebhookServer::start(&pki, ClientAuth::None, echo());
        let c = client(&pki.other_ca_cert, None, false);
        let got = post(&c, &server.url, &[("/", "{}")]).remove(0);
        let err = got.expect_err("the server's certificate must not be trusted");
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert!(eventually(|| server.failed_handshakes() == 1));
        assert!(server.requests().is_empty());
    }

    #[test]
    fn webhook_server_delays_answers_and_allows_optional_client_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::generate(dir.path());
        let handler: Handler = Arc::new(|path, _| {
            let slow = if path == "/slow" { 2 } else { 0 };
            Answer::ok(json!({"ok": true})).delayed(Duration::from_secs(slow))
        });
        let server = WebhookServer::start(&pki, ClientAuth::Optional, handler);
        let anonymous = client(&pki.ca_cert, None, false);
        let got = post(&anonymous, &server.url, &[("/slow", "{}")]).remove(0);
        let err = got.expect_err("the client should time out");
        assert!(err.contains("TimedOut"), "{err}");
        let with_cert = client(
            &pki.ca_cert,
            Some((&pki.client_cert, &pki.client_key)),
            true,
        );
        let got = post(&with_cert, &server.url, &[("/", "{}")]).remove(0);
        assert_eq!(got, Ok((200, json!({"ok": true}))));
        let cns: Vec<_> = server
            .requests()
            .into_iter()
            .map(|r| r.client_cert_cn)
            .collect();
        assert_eq!(cns, [None, Some("containerssh".to_string())]);
    }
}
