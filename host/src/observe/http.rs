//! A small HTTP(S) server for `/metrics` and the health check (and the OAuth2 redirect page).
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::Metrics;

/// What one listener answers.
#[derive(Clone)]
pub struct Routes {
    pub metrics_path: Option<String>,
    pub health: bool,
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Most connections served at once by one listener.
const MAX_OPEN_CONNECTIONS: usize = 256;

/// Serves until the process ends, over HTTPS with `tls`. `ready` turns false when the gateway
/// starts shutting down, which the health check reports as 503 so load balancers stop sending
/// new users.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("observability listener address")?;
    tracing::info!(%addr, metrics = ?routes.metrics_path, health = routes.health, https = tls.is_some(), "observability endpoint listening");
    serve_pages(listener, tls, "observability", move |req| {
        let response = answer(&req, &routes, &metrics, &ready);
        async move { response }
    })
    .await
}

/// A small HTTP/1 server: every connection on `listener` (over TLS with `tls`) is answered
/// by `page`; `what` names the server in log lines. Runs until the process ends.
pub async fn serve_pages<F, Fut>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    what: &'static str,
    page: F,
) -> anyhow::Result<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let addr = listener.local_addr().context("listener address")?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_OPEN_CONNECTIONS));
    loop {
        // At most MAX_OPEN_CONNECTIONS at once: a flood waits in the listen queue.
        let Ok(permit) = open.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let page = page.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Some(acceptor) = acceptor else {
                return serve_connection(stream, page).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, page).await,
                // A client without a (valid) certificate, a scanner, plain HTTP on the port.
                Ok(Err(e)) => {
                    tracing::debug!(%addr, %peer, error = %e, "{what} TLS handshake failed")
                }
                Err(_) => {
                    tracing::debug!(%addr, %peer, "{what} TLS handshake timed out")
                }
            }
        });
    }
}

async fn serve_connection<S, F, Fut>(stream: S, page: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let response = page(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    // A client that never finishes its request headers does not hold the connection.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn answer(
    req: &Request<Incoming>,
    routes: &Routes,
    metrics: &Metrics,
    ready: &AtomicBool,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let (status, content_type, body) = if routes.metrics_path.as_deref() == Some(path) {
        (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        )
    } else if routes.health && (path == "/" || path == "/health" || path == "/healthz") {
        if ready.load(Ordering::Acquire) {
            (StatusCode::OK, "text/plain", "ok\n".to_string())
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "shutting down\n".to_string(),
            )
        }
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}
