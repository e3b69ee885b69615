//! Warm pool metrics: members ready, logins served from the pool and why others were not, and
//! how long a refill start takes.
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MissLabels {
    backend: String,
    /// `empty`, `settings_differ` or `not_poolable`.
    reason: String,
}

fn refill_histogram() -> Histogram {
    // 10 ms .. ~80 s
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

pub struct PoolMetrics {
    ready: Family<BackendLabels, Gauge>,
    hits: Family<BackendLabels, Counter>,
    misses: Family<MissLabels, Counter>,
    refill: Family<BackendLabels, Histogram, fn() -> Histogram>,
}

impl PoolMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let ready = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "pool_ready",
            "Warm pool members started and not taken",
            ready.clone(),
        );
        let hits = Family::<BackendLabels, Counter>::default();
        registry.register(
            "pool_hits",
            "Logins served by a warm pool member",
            hits.clone(),
        );
        let misses = Family::<MissLabels, Counter>::default();
        registry.register(
            "pool_misses",
            "Logins that started cold with a pool configured, by reason",
            misses.clone(),
        );
        let refill = Family::<BackendLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            refill_histogram,
        );
        registry.register(
            "pool_refill_seconds",
            "Time to start one warm pool member",
            refill.clone(),
        );
        Self {
            ready,
            hits,
            misses,
            refill,
        }
    }

    fn labels(backend: &str) -> BackendLabels {
        BackendLabels {
            backend: backend.into(),
        }
    }
}

impl super::Metrics {
    pub fn pool_ready(&self, backend: &str, ready: usize) {
        self.pool
            .ready
            .get_or_create(&PoolMetrics::labels(backend))
            .set(i64::try_from(ready).unwrap_or(i64::MAX));
    }

    pub fn pool_hit(&self, backend: &str) {
        self.pool
            .hits
            .get_or_create(&PoolMetrics::labels(backend))
            .inc();
    }

    pub fn pool_miss(&self, backend: &str, reason: &str) {
        self.pool
            .misses
            .get_or_create(&MissLabels {
                backend: backend.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn pool_refill(&self, backend: &str, took: Duration) {
        self.pool
            .refill
            .get_or_create(&PoolMetrics::labels(backend))
            .observe(took.as_secs_f64());
    }
}
