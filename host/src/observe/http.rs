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
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection is served, keep-alive included (probes and scrapers reconnect).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Most connections served at once by one listener.
const MAX_OPEN_CONNECTIONS: usize = 256;
/// Most of them from one address: one host's idle sockets cannot shut out the others' probes.
const MAX_OPEN_PER_ADDRESS: usize = 16;

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
    let slots = Slots::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over a limit the connection is closed at once (accept never waits), so a flood of
        // idle sockets costs its senders retries, not everyone else the endpoint.
        let Some(slot) = slots.take(peer.ip()) else {
            tracing::debug!(%addr, %peer, "{what}: too many open connections; closed");
            drop(stream);
            continue;
        };
        let page = page.clone();
        let acceptor = acceptor.clone();
        // Each connection's task ends by itself: the handshake, the headers and the whole
        // connection have deadlines.
        tokio::spawn(async move {
            let _slot = slot;
            let served = async {
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
            };
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, served).await;
        });
    }
}

/// The open connections of one listener, in all and per client address.
#[derive(Default, Clone)]
struct Slots(Arc<std::sync::Mutex<SlotCounts>>);

#[derive(Default)]
struct SlotCounts {
    total: usize,
    per_address: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// One open connection's place; given back when dropped.
struct Slot {
    slots: Slots,
    address: std::net::IpAddr,
}

impl Slots {
    fn take(&self, address: std::net::IpAddr) -> Option<Slot> {
        let address = client_of(address);
        // Nothing panics while holding the lock; a poisoned one is still right.
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = counts.per_address.get(&address).copied().unwrap_or(0);
        if counts.total >= MAX_OPEN_CONNECTIONS || mine >= MAX_OPEN_PER_ADDRESS {
            return None;
        }
        counts.total += 1;
        counts.per_address.insert(address, mine + 1);
        Some(Slot {
            slots: self.clone(),
            address,
        })
    }
}

/// Whose connection it is: an IPv6 client has a whole /64 to pick addresses from, so the
/// /64 counts as one client.
fn client_of(address: std::net::IpAddr) -> std::net::IpAddr {
    match address {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.into(),
            None => std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)).into(),
        },
        v4 => v4,
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .slots
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                counts.per_address.remove(&self.address);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_every_slot() {
        let slots = Slots::default();
        let flooder: std::net::IpAddr = [10, 0, 0, 1].into();
        let held: Vec<Slot> = (0..MAX_OPEN_PER_ADDRESS)
            .map(|_| slots.take(flooder).expect("a slot"))
            .collect();
        assert!(slots.take(flooder).is_none());
        // Another client (a probe) still gets in.
        let probe = slots.take([10, 0, 0, 2].into());
        assert!(probe.is_some());
        drop(held);
        assert!(slots.take(flooder).is_some());
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let slots = Slots::default();
        let held: Vec<Slot> = (0..MAX_OPEN_PER_ADDRESS as u16)
            .map(|i| {
                let address = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, i, i, i, i);
                slots.take(address.into()).expect("a slot")
            })
            .collect();
        let same_64 = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 9, 9, 9, 0xffff);
        assert!(slots.take(same_64.into()).is_none());
        let next_64 = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1);
        assert!(slots.take(next_64.into()).is_some());
        drop(held);
    }

    #[test]
    fn the_total_is_bounded_and_slots_come_back() {
        let slots = Slots::default();
        let held: Vec<Slot> = (0..MAX_OPEN_CONNECTIONS)
            .map(|i| {
                let address = std::net::IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8]);
                slots.take(address).expect("a slot")
            })
            .collect();
        assert!(slots.take([10, 9, 9, 9].into()).is_none());
        drop(held);
        let counts = slots.0.lock().expect("lock");
        assert_eq!(counts.total, 0);
        assert!(counts.per_address.is_empty());
    }
}
