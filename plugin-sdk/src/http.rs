//! Blocking HTTP for plugins over `wasi:http`. The gateway makes the actual connection: it
//! checks the destination against the plugin's `egress.allow`, holds the TLS client
//! certificate, pools connections and bounds timeouts and response sizes. A plugin therefore
//! only says where to send what.
use std::fmt;
use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// An HTTP response, body read in full.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL cannot be sent (bad syntax, unsupported scheme).
    InvalidUrl(String),
    /// The gateway refused the destination (not in the plugin's `egress.allow`).
    Denied,
    /// TLS failed: unknown certificate authority, a certificate the server rejected, a
    /// protocol mismatch. Retrying does not help until someone changes a certificate.
    Tls(String),
    /// No answer in time.
    Timeout(String),
    /// Connection refused, reset, DNS failure and the like: usually temporary.
    Transport(String),
    /// The answer is larger than the gateway lets a plugin read: asking again gets the same.
    TooLarge(String),
}

impl HttpError {
    /// Whether trying again later might succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, HttpError::Timeout(_) | HttpError::Transport(_))
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            HttpError::Denied => write!(f, "destination not allowed by the gateway (egress.allow)"),
            HttpError::Tls(m) => write!(f, "TLS error: {m}"),
            HttpError::Timeout(m) => write!(f, "timeout: {m}"),
            HttpError::Transport(m) => write!(f, "transport error: {m}"),
            HttpError::TooLarge(m) => write!(f, "answer too large: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// POSTs `body` as JSON to `url` and reads the whole response.
pub fn post_json(url: &str, body: &[u8], timeout: Duration) -> Result<Response, HttpError> {
    send(
        "POST",
        url,
        &[
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ],
        body,
        timeout,
    )
}

/// Sends one request. `timeout` bounds connecting, the first byte and each gap between bytes;
/// the gateway may bound them further.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, HttpError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| HttpError::InvalidUrl(format!("{url}: {e}")))?;
    let scheme = match uri.scheme_str() {
        Some("https") => Scheme::Https,
        Some("http") => Scheme::Http,
        _ => return Err(HttpError::InvalidUrl(format!("{url}: not http(s)"))),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| HttpError::InvalidUrl(format!("{url}: no host")))?
        .as_str()
        .to_string();
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());

    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| HttpError::InvalidUrl(format!("header {name}: {e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    let bad = |what: &str| HttpError::InvalidUrl(format!("{url}: bad {what}"));
    request.set_method(&method).map_err(|_| bad("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|_| bad("scheme"))?;
    request
        .set_authority(Some(&authority))
        .map_err(|_| bad("host"))?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|_| bad("path"))?;

    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    // A host that does not support an option refuses to set it; the gateway's own bounds
    // apply anyway.
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));

    let outgoing_body = request
        .body()
        .map_err(|_| HttpError::Transport("request body unavailable".into()))?;
    let pending = outgoing_handler::handle(request, Some(options)).map_err(map_error)?;
    {
        let stream = outgoing_body
            .write()
            .map_err(|_| HttpError::Transport("request body stream unavailable".into()))?;
        // One write may carry at most 4096 bytes.
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| stream_error("writing the request body", e))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None).map_err(map_error)?;

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(map_error(code)),
        Some(Err(())) | None => return Err(HttpError::Transport("response already taken".into())),
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|_| HttpError::Transport("response body unavailable".into()))?;
    let body = read_body(&incoming)?;
    drop(incoming);
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn read_body(incoming: &IncomingBody) -> Result<Vec<u8>, HttpError> {
    let stream = incoming
        .stream()
        .map_err(|_| HttpError::Transport("response body stream unavailable".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(e) => return Err(stream_error("reading the response body", e)),
        }
    }
}

fn stream_error(doing: &str, e: StreamError) -> HttpError {
    match e {
        StreamError::Closed => HttpError::Transport(format!("{doing}: connection closed")),
        StreamError::LastOperationFailed(err) => match wasip2::http::types::http_error_code(&err) {
            Some(code) => map_error(code),
            None => HttpError::Transport(format!("{doing}: {}", err.to_debug_string())),
        },
    }
}

fn map_error(code: ErrorCode) -> HttpError {
    use ErrorCode as E;
    match code {
        E::HttpRequestDenied => HttpError::Denied,
        E::HttpRequestUriInvalid => HttpError::InvalidUrl("rejected by the gateway".into()),
        E::TlsProtocolError => HttpError::Tls("protocol error".into()),
        E::TlsCertificateError => HttpError::Tls("certificate rejected".into()),
        E::TlsAlertReceived(alert) => HttpError::Tls(format!(
            "the server sent alert {}",
            alert
                .alert_message
                .or(alert.alert_id.map(|id| id.to_string()))
                .unwrap_or_default()
        )),
        E::DnsTimeout
        | E::ConnectionTimeout
        | E::ConnectionReadTimeout
        | E::ConnectionWriteTimeout
        | E::HttpResponseTimeout => HttpError::Timeout(format!("{code:?}")),
        E::HttpResponseBodySize(limit) => HttpError::TooLarge(format!(
            "response body larger than the gateway allows ({} bytes)",
            limit.unwrap_or_default()
        )),
        other => HttpError::Transport(format!("{other:?}")),
    }
}

/// Monotonic time and sleeping, for deadlines and backoff.
pub mod clock {
    use std::time::Duration;

    /// Time since an arbitrary fixed point.
    pub fn now() -> Duration {
        Duration::from_nanos(wasip2::clocks::monotonic_clock::now())
    }

    pub fn sleep(duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        wasip2::clocks::monotonic_clock::subscribe_duration(nanos).block();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_can_heal_by_itself_is_temporary() {
        assert!(HttpError::Timeout("t".into()).is_temporary());
        assert!(HttpError::Transport("reset".into()).is_temporary());
        assert!(!HttpError::Tls("UnknownIssuer".into()).is_temporary());
        assert!(!HttpError::Denied.is_temporary());
        assert!(!HttpError::TooLarge("2 MiB".into()).is_temporary());
        assert!(!HttpError::InvalidUrl("x".into()).is_temporary());
    }
}
