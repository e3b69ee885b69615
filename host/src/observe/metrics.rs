//! The gateway's Prometheus metrics (prometheus-client, OpenMetrics text format).
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum AuthResult {
    Success,
    Failure,
    Unsupported,
    Error,
    RateLimited,
    /// The auth plugin had no free slot: nothing was checked, nothing counted as a failure.
    Overloaded,
    /// A service the auth plugin depends on is down: nothing was checked.
    Unavailable,
}

impl AuthResult {
    /// The name used in the audit log.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthResult::Success => "success",
            AuthResult::Failure => "failure",
            AuthResult::Unsupported => "unsupported",
            AuthResult::Error => "error",
            AuthResult::RateLimited => "rate_limited",
            AuthResult::Overloaded => "overloaded",
            AuthResult::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    method: String,
    result: AuthResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CountryLabels {
    country: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    /// `direct-tcpip` or `direct-streamlocal`.
    kind: String,
    /// `ok` (connected), `connect_failed` or `unavailable` (no helper, wrong execution mode).
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardBytesLabels {
    kind: String,
    /// `to_container` or `to_client`.
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginHttpLabels {
    plugin: String,
    /// `answered` (any HTTP status) or `failed` (no answer: TLS, connection, timeout).
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginOverloadLabels {
    plugin: String,
    /// `queue_full` (maxQueued calls already waiting) or `queue_timeout` (no slot in time).
    reason: String,
}

fn plugin_http_histogram() -> Histogram {
    // 100 µs .. ~30 s
    Histogram::new(exponential_buckets(0.0001, 2.5, 14))
}

pub struct Metrics {
    registry: Registry,
    connections: Counter,
    connections_by_country: Family<CountryLabels, Counter>,
    active_connections: Gauge,
    refused_connections: Family<StageLabels, Counter>,
    auth: Family<AuthLabels, Counter>,
    backend_errors: Family<StageLabels, Counter>,
    /// Requests the security policy denied, by request type (the `stage` label).
    denied_requests: Family<StageLabels, Counter>,
    forwards: Family<ForwardLabels, Counter>,
    forward_bytes: Family<ForwardBytesLabels, Counter>,
    container_start: Histogram,
    first_byte: Histogram,
    plugin_call: Histogram,
    config_call: Histogram,
    /// Each HTTP request a plugin makes (webhook calls, retries counted one by one).
    plugin_http: Family<PluginHttpLabels, Histogram, fn() -> Histogram>,
    /// Plugin calls refused for want of a free slot.
    plugin_overload: Family<PluginOverloadLabels, Counter>,
    pub(super) pool: super::pool_metrics::PoolMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("containerssh");
        let connections = Counter::default();
        registry.register(
            "connections",
            "SSH connections accepted",
            connections.clone(),
        );
        let connections_by_country = Family::<CountryLabels, Counter>::default();
        registry.register(
            "connections_by_country",
            "SSH connections accepted, by the client's country (geoip; XX when unknown)",
            connections_by_country.clone(),
        );
        let active_connections = Gauge::default();
        registry.register(
            "active_connections",
            "SSH connections open now",
            active_connections.clone(),
        );
        let refused_connections = Family::<StageLabels, Counter>::default();
        registry.register(
            "refused_connections",
            "Connections closed at accept, by reason",
            refused_connections.clone(),
        );
        let auth = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_attempts",
            "Authentication attempts by method and result",
            auth.clone(),
        );
        let backend_errors = Family::<StageLabels, Counter>::default();
        registry.register(
            "backend_errors",
            "Backend failures by stage",
            backend_errors.clone(),
        );
        let denied_requests = Family::<StageLabels, Counter>::default();
        registry.register(
            "denied_requests",
            "SSH requests denied by the security policy, by request type",
            denied_requests.clone(),
        );
        let forwards = Family::<ForwardLabels, Counter>::default();
        registry.register(
            "forwards",
            "Forwarded connections allowed by the policy, by kind and result",
            forwards.clone(),
        );
        let forward_bytes = Family::<ForwardBytesLabels, Counter>::default();
        registry.register(
            "forward_bytes",
            "Bytes carried by forwarded connections, by kind and direction",
            forward_bytes.clone(),
        );
        // 10 ms .. ~80 s
        let container_start = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "container_start_seconds",
            "Time to pull, create and start a container",
            container_start.clone(),
        );
        let first_byte = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "time_to_first_byte_seconds",
            "From TCP accept to the first byte of program output",
            first_byte.clone(),
        );
        // 10 µs .. ~10 s
        let plugin_call = Histogram::new(exponential_buckets(0.00001, 2.7, 15));
        registry.register(
            "plugin_call_seconds",
            "Duration of auth plugin logins: the wait for a slot, the check and authorization, webhook requests included",
            plugin_call.clone(),
        );
        let config_call = Histogram::new(exponential_buckets(0.00001, 2.7, 15));
        registry.register(
            "config_plugin_call_seconds",
            "Duration of config plugin calls (config server webhook requests included)",
            config_call.clone(),
        );
        let plugin_http =
            Family::<PluginHttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                plugin_http_histogram,
            );
        registry.register(
            "plugin_http_request_seconds",
            "Duration of each HTTP request a plugin makes (webhook calls), by plugin and outcome",
            plugin_http.clone(),
        );
        let plugin_overload = Family::<PluginOverloadLabels, Counter>::default();
        registry.register(
            "plugin_overload",
            "Plugin calls refused because no slot came free (maxQueued, queueTimeout), by plugin and reason",
            plugin_overload.clone(),
        );
        let pool = super::pool_metrics::PoolMetrics::register(&mut registry);
        Self {
            registry,
            pool,
            plugin_http,
            plugin_overload,
            connections,
            connections_by_country,
            active_connections,
            refused_connections,
            auth,
            backend_errors,
            denied_requests,
            forwards,
            forward_bytes,
            container_start,
            first_byte,
            plugin_call,
            config_call,
        }
    }

    pub fn plugin_http_request(&self, plugin: &str, answered: bool, took: Duration) {
        self.plugin_http
            .get_or_create(&PluginHttpLabels {
                plugin: plugin.into(),
                outcome: if answered { "answered" } else { "failed" }.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn plugin_overloaded(&self, plugin: &str, reason: &str) {
        self.plugin_overload
            .get_or_create(&PluginOverloadLabels {
                plugin: plugin.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// A connection accepted from `country` (a GeoIP country code, `XX` when unknown).
    pub fn connection_opened(&self, country: &str) {
        self.connections.inc();
        self.active_connections.inc();
        self.connections_by_country
            .get_or_create(&CountryLabels {
                country: country.into(),
            })
            .inc();
    }

    pub fn connection_closed(&self) {
        self.active_connections.dec();
    }

    pub fn connection_refused(&self, reason: &str) {
        self.refused_connections
            .get_or_create(&StageLabels {
                stage: reason.into(),
            })
            .inc();
    }

    pub fn auth_attempt(&self, method: &str, result: AuthResult) {
        self.auth
            .get_or_create(&AuthLabels {
                method: method.into(),
                result,
            })
            .inc();
    }

    pub fn backend_error(&self, stage: &str) {
        self.backend_errors
            .get_or_create(&StageLabels {
                stage: stage.into(),
            })
            .inc();
    }

    pub fn request_denied(&self, kind: &str) {
        self.denied_requests
            .get_or_create(&StageLabels { stage: kind.into() })
            .inc();
    }

    pub fn forward(&self, kind: &str, result: &str) {
        self.forwards
            .get_or_create(&ForwardLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn forward_bytes(&self, kind: &str, to_container: u64, to_client: u64) {
        for (direction, n) in [("to_container", to_container), ("to_client", to_client)] {
            self.forward_bytes
                .get_or_create(&ForwardBytesLabels {
                    kind: kind.into(),
                    direction: direction.into(),
                })
                .inc_by(n);
        }
    }

    pub fn container_started(&self, elapsed: Duration) {
        self.container_start.observe(elapsed.as_secs_f64());
    }

    pub fn first_byte(&self, elapsed: Duration) {
        self.first_byte.observe(elapsed.as_secs_f64());
    }

    /// An auth plugin login: the wait for a slot, the password or key check, and authorization.
    pub fn plugin_call(&self, elapsed: Duration) {
        self.plugin_call.observe(elapsed.as_secs_f64());
    }

    pub fn config_call(&self, elapsed: Duration) {
        self.config_call.observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        m.connection_opened("DE");
        m.auth_attempt("password", AuthResult::Failure);
        m.container_started(Duration::from_millis(300));
        m.plugin_overloaded("auth", "queue_timeout");
        let text = m.render();
        assert!(
            text.contains(
                r#"containerssh_plugin_overload_total{plugin="auth",reason="queue_timeout"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("containerssh_connections_total 1"), "{text}");
        assert!(
            text.contains(r#"containerssh_connections_by_country_total{country="DE"} 1"#),
            "{text}"
        );
        assert!(text.contains("containerssh_active_connections 1"), "{text}");
        assert!(
            text.contains(
                r#"containerssh_auth_attempts_total{method="password",result="Failure"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("containerssh_container_start_seconds_count 1"),
            "{text}"
        );
    }
}
