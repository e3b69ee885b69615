//! Observability: Prometheus metrics and a health endpoint, over HTTP or HTTPS; GeoIP lookups.
pub mod geoip;
mod http;
mod metrics;
mod pool_metrics;
pub mod probe;
mod tls;

pub use http::{serve, serve_pages, Routes};
pub use metrics::{AuthResult, Metrics};
pub use tls::ServerTls;
