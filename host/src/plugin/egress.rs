//! Outbound HTTP of plugins: every request is checked against the plugin's allow-list before
//! any connection is made, then sent by the host with timeouts.
use std::time::Duration;

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

/// The wasi:http hooks of one call of one plugin.
pub struct EgressHooks {
    plugin: String,
    connection_id: String,
    allow: Vec<Destination>,
    timeout: Duration,
    max_response_bytes: usize,
}

/// Default cap on a response body a plugin reads.
const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1 << 20;

impl EgressHooks {
    pub fn new(
        plugin: &str,
        connection_id: &str,
        settings: &EgressSettings,
        timeout: Duration,
    ) -> Self {
        Self {
            plugin: plugin.to_string(),
            connection_id: connection_id.to_string(),
            allow: settings
                .allow
                .iter()
                .filter_map(|d| Destination::parse(d))
                .collect(),
            timeout,
            max_response_bytes: usize::try_from(
                settings
                    .max_response_bytes
                    .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            )
            .unwrap_or(usize::MAX),
        }
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

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        drop(fut);
        let uri = request.uri().clone();
        if !self.permits(&uri) {
            tracing::warn!(
                plugin = %self.plugin,
                connection_id = %self.connection_id,
                destination = %format!("{}:{}", uri.host().unwrap_or("?"), uri.port_u16().map(|p| p.to_string()).unwrap_or_default()),
                "plugin request denied: destination not in egress.allow"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        // The host's timeouts bound whatever the guest asked for.
        let cap =
            |asked: Option<Duration>| Some(asked.map_or(self.timeout, |a| a.min(self.timeout)));
        let options = RequestOptions {
            connect_timeout: cap(options.and_then(|o| o.connect_timeout)),
            first_byte_timeout: cap(options.and_then(|o| o.first_byte_timeout)),
            between_bytes_timeout: cap(options.and_then(|o| o.between_bytes_timeout)),
        };
        tracing::debug!(plugin = %self.plugin, connection_id = %self.connection_id, %uri, "plugin HTTP request");
        let limit = self.max_response_bytes;
        Box::new(async move {
            use http_body_util::{BodyExt, Limited};
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            // A body larger than the limit ends in an error the guest sees, never in memory.
            let response = response.map(|body| {
                Limited::new(body, limit)
                    .map_err(move |e| match e.downcast::<HttpError>() {
                        Ok(inner) => *inner,
                        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                            HttpError::HttpResponseBodySize(Some(limit as u64))
                        }
                        Err(e) => HttpError::InternalError(Some(e.to_string())),
                    })
                    .boxed_unsync()
            });
            Ok((
                response,
                Box::new(io) as Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(allow: &[&str]) -> EgressHooks {
        let settings = EgressSettings {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        EgressHooks::new("p", "c", &settings, Duration::from_secs(1))
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

    #[test]
    fn destinations_parse_strictly() {
        assert!(Destination::parse("a.b:1").is_some());
        assert!(Destination::parse("a.b").is_some());
        assert!(Destination::parse("https://a.b").is_none());
        assert!(Destination::parse("a.b:x").is_none());
        assert!(Destination::parse("").is_none());
    }
}
