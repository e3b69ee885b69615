//! A small HTTP(S) server for `/metrics` and the health check.
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
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "observability accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let routes = routes.clone();
        let metrics = metrics.clone();
        let ready = ready.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                return serve_connection(stream, routes, metrics, ready).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, routes, metrics, ready).await,
                // A client without a (valid) certificate, a scanner, plain HTTP on the port.
                Ok(Err(e)) => {
                    tracing::debug!(%addr, %peer, error = %e, "observability TLS handshake failed")
                }
                Err(_) => {
                    tracing::debug!(%addr, %peer, "observability TLS handshake timed out")
                }
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    routes: Routes,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let response = answer(&req, &routes, &metrics, &ready);
        async move { Ok::<_, Infallible>(response) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
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
