//! A warm pool: workloads started ahead of logins from the file's configuration, so that a login
//! whose effective settings match takes one instead of waiting for a container or pod to start.
//!
//! One refill task per pool keeps `size` members ready, starting at most `refillConcurrency` at
//! once and backing off (exponentially, with jitter) while the engine refuses. A member serves
//! one connection (or session) and is removed with it like any other workload; the pool never
//! takes one back.
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::PoolSettings;
use crate::observe::Metrics;

/// Why a login did not get a pooled workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MissReason {
    /// The connection's settings differ from the file's (a config server changed them).
    SettingsDiffer,
    /// The settings need something only a fresh workload can have (labels from metadata).
    NotPoolable,
    /// Every member is taken; the refill is under way.
    Empty,
}

impl MissReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            MissReason::SettingsDiffer => "settings_differ",
            MissReason::NotPoolable => "not_poolable",
            MissReason::Empty => "empty",
        }
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a pool compares: a backend's workload settings without the pool's own.
pub fn settings_key<T: serde::Serialize>(settings: &T) -> serde_json::Value {
    let mut value = serde_json::to_value(settings).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("pool");
    }
    value
}

/// Whether any of `keys` is a non-empty object in the settings (metadata exposed at creation).
pub fn uses_any(settings: &serde_json::Value, keys: &[&str]) -> bool {
    keys.iter().any(|k| {
        settings
            .get(*k)
            .and_then(|v| v.as_object())
            .is_some_and(|m| !m.is_empty())
    })
}

/// A ready member with the pool slot's name, for logs.
pub fn slot_id() -> String {
    format!("pool-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// How a backend starts and removes pool members.
pub trait PoolBackend: Send + Sync + 'static {
    type Member: Send + 'static;
    /// "docker" or "kubernetes", for logs and metrics.
    fn kind(&self) -> &'static str;
    /// Starts one member. Cancelling `cancel` abandons it; whatever was created is removed
    /// before the future ends.
    fn start(&self, cancel: CancellationToken) -> BoxFuture<anyhow::Result<Self::Member>>;
    /// Removes a member nobody took.
    fn discard(&self, member: Self::Member) -> BoxFuture<()>;
}

pub struct WarmPool<B: PoolBackend> {
    inner: Arc<Inner<B>>,
}

struct Inner<B: PoolBackend> {
    backend: B,
    settings: PoolSettings,
    /// The settings members are started with (`settings_key`), as compared with a login's.
    key: serde_json::Value,
    ready: Mutex<VecDeque<B::Member>>,
    /// Woken when a member is taken.
    taken: Notify,
    cancel: CancellationToken,
    tasks: TaskTracker,
    metrics: Option<Arc<Metrics>>,
}

/// Shortest and longest wait after the engine refused to start a member.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl<B: PoolBackend> WarmPool<B> {
    /// Starts the refill task; the pool fills in the background.
    pub fn start(
        backend: B,
        settings: PoolSettings,
        key: serde_json::Value,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let inner = Arc::new(Inner {
            backend,
            settings,
            key,
            ready: Mutex::new(VecDeque::new()),
            taken: Notify::new(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            metrics,
        });
        tracing::info!(
            backend = inner.backend.kind(),
            size = inner.settings.size,
            refill_concurrency = inner.settings.refill_concurrency.get(),
            "warm pool filling"
        );
        inner.tasks.spawn(refill(inner.clone()));
        Self { inner }
    }

    /// A member for a login whose settings are `key`, if they are the pool's and `poolable`
    /// accepts them; every miss is counted with its reason.
    pub fn take_matching(
        &self,
        key: &serde_json::Value,
        poolable: impl Fn(&serde_json::Value) -> Result<(), MissReason>,
    ) -> Option<B::Member> {
        if *key != self.inner.key {
            self.miss(MissReason::SettingsDiffer);
            return None;
        }
        if let Err(reason) = poolable(key) {
            self.miss(reason);
            return None;
        }
        self.take().ok()
    }

    /// Takes a ready member, or says why there is none.
    pub fn take(&self) -> Result<B::Member, MissReason> {
        let member = self.lock_ready().pop_front();
        match member {
            Some(member) => {
                self.inner.taken.notify_one();
                self.report_size();
                if let Some(m) = &self.inner.metrics {
                    m.pool_hit(self.inner.backend.kind());
                }
                Ok(member)
            }
            None => {
                self.miss(MissReason::Empty);
                Err(MissReason::Empty)
            }
        }
    }

    /// Counts a login that did not get a member.
    fn miss(&self, reason: MissReason) {
        tracing::debug!(
            backend = self.inner.backend.kind(),
            reason = reason.as_str(),
            "warm pool miss"
        );
        if let Some(m) = &self.inner.metrics {
            m.pool_miss(self.inner.backend.kind(), reason.as_str());
        }
    }

    /// Members ready now.
    #[cfg(test)]
    pub fn ready_count(&self) -> usize {
        self.lock_ready().len()
    }

    /// Stops starting members (shutdown has begun); the ready ones stay until `shutdown`.
    pub fn stop_refilling(&self) {
        self.inner.cancel.cancel();
    }

    /// Stops refilling, lets starts under way finish (they remove what they created when
    /// cancelled), and removes every member nobody took. Bounded by `deadline`.
    pub async fn shutdown(&self, deadline: Duration) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(deadline, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                backend = self.inner.backend.kind(),
                "warm pool refill did not stop in time"
            );
        }
        let members: Vec<_> = self.lock_ready().drain(..).collect();
        self.report_size();
        let removals = members
            .into_iter()
            .map(|m| self.inner.backend.discard(m))
            .collect::<FuturesUnordered<_>>()
            .collect::<Vec<()>>();
        if tokio::time::timeout(deadline, removals).await.is_err() {
            tracing::warn!(
                backend = self.inner.backend.kind(),
                "removing warm pool members timed out"
            );
        }
    }

    fn lock_ready(&self) -> std::sync::MutexGuard<'_, VecDeque<B::Member>> {
        lock(&self.inner.ready)
    }

    fn report_size(&self) {
        report_size(&self.inner);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave the queue half-changed (push and pop are single steps).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn report_size<B: PoolBackend>(inner: &Inner<B>) {
    if let Some(m) = &inner.metrics {
        let ready = lock(&inner.ready).len();
        m.pool_ready(inner.backend.kind(), ready);
    }
}

/// Keeps the pool full until cancelled.
async fn refill<B: PoolBackend>(inner: Arc<Inner<B>>) {
    let kind = inner.backend.kind();
    let size = inner.settings.size;
    let concurrency = inner.settings.refill_concurrency.get();
    let new_backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(BACKOFF_MIN)
            .with_max_delay(BACKOFF_MAX)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    let mut failing = false;
    let mut announced = false;
    let mut starting = FuturesUnordered::new();
    loop {
        let ready = lock(&inner.ready).len();
        while !inner.cancel.is_cancelled()
            && ready + starting.len() < size
            && starting.len() < concurrency
        {
            let started = Instant::now();
            let start = inner.backend.start(inner.cancel.child_token());
            starting.push(async move { (start.await, started.elapsed()) });
        }
        if starting.is_empty() {
            if inner.cancel.is_cancelled() {
                return;
            }
            tokio::select! {
                _ = inner.taken.notified() => continue,
                _ = inner.cancel.cancelled() => return,
            }
        }
        // Starts under way are always awaited: cancelled, they remove what they created.
        let Some((outcome, elapsed)) = starting.next().await else {
            continue;
        };
        match outcome {
            Ok(member) => {
                if failing {
                    tracing::info!(backend = kind, "warm pool: starting members works again");
                    failing = false;
                }
                backoff = new_backoff();
                if inner.cancel.is_cancelled() {
                    inner.backend.discard(member).await;
                    continue;
                }
                let ready = {
                    let mut queue = lock(&inner.ready);
                    queue.push_back(member);
                    queue.len()
                };
                if ready == size {
                    // Said once at info (the pool is ready for logins), then at debug.
                    if announced {
                        tracing::debug!(backend = kind, ready, "warm pool full");
                    } else {
                        tracing::info!(backend = kind, ready, "warm pool full");
                        announced = true;
                    }
                }
                report_size(&inner);
                if let Some(m) = &inner.metrics {
                    m.pool_refill(kind, elapsed);
                }
            }
            Err(e) if inner.cancel.is_cancelled() => {
                tracing::debug!(
                    backend = kind,
                    error = format!("{e:#}"),
                    "warm pool start abandoned at shutdown"
                );
            }
            Err(e) => {
                let wait = backoff.next().unwrap_or(BACKOFF_MAX);
                // The first failure of a streak is a warning; repeats are quieter so that an
                // image that cannot start does not flood the log.
                if failing {
                    tracing::debug!(
                        backend = kind,
                        error = format!("{e:#}"),
                        retry_in_ms = wait.as_millis() as u64,
                        "warm pool member did not start"
                    );
                } else {
                    tracing::warn!(
                        backend = kind,
                        error = format!("{e:#}"),
                        retry_in_ms = wait.as_millis() as u64,
                        "warm pool member did not start; retrying with backoff"
                    );
                    failing = true;
                }
                // Let the other starts finish before waiting, so none is left unowned.
                while let Some((outcome, _)) = starting.next().await {
                    match outcome {
                        Ok(member) if !inner.cancel.is_cancelled() => {
                            lock(&inner.ready).push_back(member);
                            report_size(&inner);
                        }
                        Ok(member) => inner.backend.discard(member).await,
                        Err(_) => {}
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = inner.cancel.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Members are numbers; `fail_first` starts fail before any succeeds.
    #[derive(Clone, Default)]
    struct Counting {
        started: Arc<AtomicUsize>,
        discarded: Arc<AtomicUsize>,
        attempts: Arc<AtomicUsize>,
        fail_first: usize,
    }

    impl PoolBackend for Counting {
        type Member = usize;
        fn kind(&self) -> &'static str {
            "test"
        }
        fn start(&self, _cancel: CancellationToken) -> BoxFuture<anyhow::Result<usize>> {
            let this = self.clone();
            Box::pin(async move {
                let attempt = this.attempts.fetch_add(1, Ordering::SeqCst);
                if attempt < this.fail_first {
                    anyhow::bail!("engine refused");
                }
                Ok(this.started.fetch_add(1, Ordering::SeqCst))
            })
        }
        fn discard(&self, _member: usize) -> BoxFuture<()> {
            let this = self.clone();
            Box::pin(async move {
                this.discarded.fetch_add(1, Ordering::SeqCst);
            })
        }
    }

    fn settings(size: usize) -> PoolSettings {
        PoolSettings {
            size,
            refill_concurrency: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
        }
    }

    async fn until(what: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if what() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("condition never held");
    }

    #[tokio::test(start_paused = true)]
    async fn fills_refills_and_empties_at_shutdown() {
        let backend = Counting::default();
        let pool = WarmPool::start(backend.clone(), settings(3), serde_json::Value::Null, None);
        until(|| pool.ready_count() == 3).await;
        assert_eq!(pool.take(), Ok(0));
        assert_eq!(pool.take(), Ok(1));
        until(|| pool.ready_count() == 3).await;
        assert_eq!(
            backend.started.load(Ordering::SeqCst),
            5,
            "refilled exactly what was taken"
        );
        pool.shutdown(Duration::from_secs(5)).await;
        assert_eq!(backend.discarded.load(Ordering::SeqCst), 3);
        assert_eq!(pool.ready_count(), 0);
        assert_eq!(pool.take(), Err(MissReason::Empty));
    }

    #[tokio::test(start_paused = true)]
    async fn empty_pool_is_a_miss() {
        let pool = WarmPool::start(
            Counting::default(),
            settings(1),
            serde_json::Value::Null,
            None,
        );
        until(|| pool.ready_count() == 1).await;
        assert!(pool.take().is_ok());
        // Taken before the refill finished: a miss, never a wait.
        assert_eq!(pool.take(), Err(MissReason::Empty));
        pool.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_back_off_instead_of_spinning() {
        let backend = Counting {
            fail_first: 6,
            ..Default::default()
        };
        let started = tokio::time::Instant::now();
        let pool = WarmPool::start(backend.clone(), settings(1), serde_json::Value::Null, None);
        until(|| pool.ready_count() == 1).await;
        // Six refusals, each followed by a growing wait (at least 0.5 s, 1 s, 2 s ... with jitter).
        assert_eq!(backend.attempts.load(Ordering::SeqCst), 7);
        assert!(
            started.elapsed() >= Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        pool.shutdown(Duration::from_secs(5)).await;
    }
}
