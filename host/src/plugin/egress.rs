//! Outbound HTTP of plugins: every request is checked against the plugin's allow-list before
//! any connection is made, then sent by the host on the plugin's own pooled client, which holds
//! the TLS settings (CA, client certificate and key) so that keys never enter the sandbox.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::plugin::settings::EgressSettings;

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    host: String,
    /// `None` allows the default ports 80 and 443.
    port: Option<u16>,
}

impl Destination {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() || text.contains('/') || text.contains('@') {
            return None;
        }
        // [v6]:port, host:port or host
        if let Some(rest) = text.strip_prefix('[') {
            let (host, tail) = rest.split_once(']')?;
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p.parse().ok()?),
                None if tail.is_empty() => None,
                None => return None,
            };
            return Some(Self {
                host: host.to_ascii_lowercase(),
                port,
            });
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => Some(Self {
                host: host.to_ascii_lowercase(),
                port: Some(port.parse().ok()?),
            }),
            Some(_) => None,
            None => Some(Self {
                host: text.to_ascii_lowercase(),
                port: None,
            }),
        }
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.host == host && self.port.map_or(port == 80 || port == 443, |p| p == port)
    }
}

/// Outbound HTTP of one plugin: its allow-list and its pooled client (TLS settings included).
/// Built once when the plugin loads; shared by every call.
pub struct Egress {
    plugin: String,
    allow: Vec<Destination>,
    client: reqwest::Client,
    timeout: Duration,
    max_response_bytes: usize,
    metrics: Option<Arc<crate::observe::Metrics>>,
}

/// Default cap on a response body a plugin reads.
const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1 << 20;
/// Cap on a request body a plugin sends (it is buffered before sending).
const MAX_REQUEST_BYTES: usize = 1 << 20;

impl Egress {
    pub fn new(
        plugin: &str,
        settings: &EgressSettings,
        timeout: Duration,
        metrics: Option<Arc<crate::observe::Metrics>>,
    ) -> anyhow::Result<Arc<Self>> {
        let tls = settings.tls.client_config().context("egress.tls")?;
        // No redirects (a plugin that wants them follows them itself, through this same
        // allow-list), no proxy from the environment, connections pooled per plugin.
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build()
            .context("egress: cannot build the HTTP client")?;
        Ok(Arc::new(Self {
            plugin: plugin.to_string(),
            allow: settings
                .allow
                .iter()
                .filter_map(|d| Destination::parse(d))
                .collect(),
            client,
            timeout,
            max_response_bytes: usize::try_from(
                settings
                    .max_response_bytes
                    .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            )
            .unwrap_or(usize::MAX),
            metrics,
        }))
    }

    /// Whether the plugin may send to this URI's host and port.
    pub fn permits(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        self.allow.iter().any(|d| d.allows(&host, port))
    }
}

/// The wasi:http hooks of one call: the plugin's egress plus who is calling (for logs).
pub struct EgressHooks {
    egress: Arc<Egress>,
    connection_id: String,
}

impl EgressHooks {
    pub fn new(egress: Arc<Egress>, connection_id: &str) -> Self {
        Self {
            egress,
            connection_id: connection_id.to_string(),
        }
    }
}

type IoFuture = Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<
        dyn std::future::Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>>
            + Send,
    > {
        drop(fut);
        let egress = self.egress.clone();
        let connection_id = self.connection_id.clone();
        let uri = request.uri().clone();
        if !egress.permits(&uri) {
            tracing::warn!(
                plugin = %egress.plugin,
                connection_id = %connection_id,
                destination = %format!("{}:{}", uri.host().unwrap_or("?"), uri.port_u16().map(|p| p.to_string()).unwrap_or_default()),
                "plugin request denied: destination not in egress.allow"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        // The host's timeout bounds whatever the guest asked for.
        let timeout = options
            .and_then(|o| o.first_byte_timeout)
            .map_or(egress.timeout, |t| t.min(egress.timeout));
        Box::new(async move {
            let started = std::time::Instant::now();
            let result = send(&egress, request, timeout).await;
            if let Some(metrics) = &egress.metrics {
                metrics.plugin_http_request(&egress.plugin, result.is_ok(), started.elapsed());
            }
            match &result {
                Ok(response) => tracing::debug!(
                    plugin = %egress.plugin, connection_id = %connection_id, %uri,
                    status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64,
                    "plugin HTTP request answered"
                ),
                Err((code, why)) => tracing::warn!(
                    plugin = %egress.plugin, connection_id = %connection_id, %uri,
                    error = %why, code = ?code,
                    "plugin HTTP request failed"
                ),
            }
            let response = result.map_err(|(code, _)| code)?;
            Ok((response, Box::new(async { Ok(()) }) as IoFuture))
        })
    }
}

/// Sends one request with the plugin's pooled client; an error comes with a readable reason.
async fn send(
    egress: &Egress,
    request: http::Request<WasiBody>,
    timeout: Duration,
) -> Result<http::Response<WasiBody>, (HttpError, String)> {
    use http_body_util::{BodyExt, Limited};
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| {
            (
                HttpError::HttpRequestBodySize(Some(MAX_REQUEST_BYTES as u64)),
                format!("request body: {e}"),
            )
        })?
        .to_bytes();
    let request = http::Request::from_parts(parts, body);
    let mut request = reqwest::Request::try_from(request)
        .map_err(|e| (HttpError::HttpRequestUriInvalid, e.to_string()))?;
    *request.timeout_mut() = Some(timeout);
    let response = egress
        .client
        .execute(request)
        .await
        .map_err(|e| classify(&e))?;
    let limit = egress.max_response_bytes;
    let response: http::Response<reqwest::Body> = response.into();
    // A body larger than the limit ends in an error the guest sees, never in memory.
    Ok(response.map(|body| {
        Limited::new(body, limit)
            .map_err(move |e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    HttpError::HttpResponseBodySize(Some(limit as u64))
                } else if let Some(e) = e.downcast_ref::<reqwest::Error>() {
                    classify(e).0
                } else {
                    HttpError::InternalError(Some(e.to_string()))
                }
            })
            .boxed_unsync()
    }))
}

/// Maps a client error to the wasi:http error code the guest sees, with the whole cause chain
/// for the log (e.g. "invalid peer certificate: UnknownIssuer").
fn classify(error: &reqwest::Error) -> (HttpError, String) {
    let mut why = error.to_string();
    let mut code = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        why.push_str(": ");
        why.push_str(&e.to_string());
        if let Some(tls) = rustls_error(e) {
            code.get_or_insert(match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    HttpError::TlsCertificateError
                }
                rustls::Error::AlertReceived(alert) => HttpError::TlsAlertReceived {
                    alert_id: Some(u8::from(*alert)),
                    alert_message: Some(format!("{alert:?}")),
                },
                _ => HttpError::TlsProtocolError,
            });
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                code.get_or_insert(HttpError::ConnectionRefused);
            }
        }
        source = e.source();
    }
    let code = code.unwrap_or(if error.is_timeout() {
        HttpError::HttpResponseTimeout
    } else if error.is_connect() {
        HttpError::ConnectionTerminated
    } else {
        HttpError::InternalError(Some(why.clone()))
    });
    (code, why)
}

/// The rustls error in `e`, looking inside io::Errors: they hide what they wrap from
/// `source()`, and hyper-rustls wraps tokio-rustls's io::Error in another one.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(allow: &[&str]) -> Arc<Egress> {
        let settings = EgressSettings {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Egress::new("p", &settings, Duration::from_secs(1), None).unwrap()
    }

    #[test]
    fn only_listed_destinations_are_permitted() {
        let h = hooks(&["auth.example.com:8443", "config.example.com", "[::1]:9000"]);
        assert!(h.permits(&"https://auth.example.com:8443/password".parse().unwrap()));
        assert!(!h.permits(&"https://auth.example.com/password".parse().unwrap()));
        assert!(h.permits(&"https://CONFIG.example.com/x".parse().unwrap()));
        assert!(h.permits(&"http://config.example.com/x".parse().unwrap()));
        assert!(!h.permits(&"https://config.example.com:8443/x".parse().unwrap()));
        assert!(h.permits(&"http://[::1]:9000/".parse().unwrap()));
        assert!(!h.permits(&"https://evil.example.com/".parse().unwrap()));
        assert!(!hooks(&[]).permits(&"https://auth.example.com:8443/".parse().unwrap()));
    }

    /// A real handshake with a server whose certificate nobody trusts: the error must come out
    /// as a certificate error (which is not retried), not as a broken connection.
    #[tokio::test]
    async fn tls_failures_are_classified_as_tls() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        let client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(client_tls)
            .build()
            .unwrap();
        let err = client
            .get(format!("https://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let (code, why) = classify(&err);
        assert!(
            matches!(code, HttpError::TlsCertificateError),
            "{code:?}: {why}"
        );
    }

    #[test]
    fn destinations_parse_strictly() {
        assert!(Destination::parse("a.b:1").is_some());
        assert!(Destination::parse("a.b").is_some());
        assert!(Destination::parse("https://a.b").is_none());
        assert!(Destination::parse("a.b:x").is_none());
        assert!(Destination::parse("").is_none());
    }
}
