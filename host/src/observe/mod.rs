//! Observability: Prometheus metrics and a health endpoint.
mod http;
mod metrics;
mod pool_metrics;

pub use http::{serve, Routes};
pub use metrics::{AuthResult, Metrics};
