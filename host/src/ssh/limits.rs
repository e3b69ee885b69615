//! Pre-authentication guards: a cap on connections that have not authenticated yet
//! (like OpenSSH's MaxStartups) and failed-login rate limits per source IP and per user name.
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::AuthRateLimit;

/// Counts failures per key in a sliding window; a key at its limit is blocked until old
/// failures age out.
pub struct FailureWindow<K> {
    max_failures: usize,
    window: Duration,
    entries: Mutex<HashMap<K, VecDeque<Instant>>>,
}

/// Keys tracked at most; beyond it the oldest-looking entries are pruned first.
const MAX_TRACKED_KEYS: usize = 100_000;

impl<K: Eq + Hash + Clone> FailureWindow<K> {
    pub fn new(max_failures: usize, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// True if `key` may try again now. A limit of 0 disables this guard.
    pub fn allows(&self, key: &K) -> bool {
        if self.max_failures == 0 {
            return true;
        }
        let now = Instant::now();
        let Ok(mut entries) = self.entries.lock() else {
            return true;
        };
        match entries.get_mut(key) {
            Some(times) => {
                prune(times, now, self.window);
                times.len() < self.max_failures
            }
            None => true,
        }
    }

    pub fn record_failure(&self, key: &K) {
        if self.max_failures == 0 {
            return;
        }
        let now = Instant::now();
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_TRACKED_KEYS {
            let window = self.window;
            entries.retain(|_, times| {
                prune(times, now, window);
                !times.is_empty()
            });
        }
        let times = entries.entry(key.clone()).or_default();
        prune(times, now, self.window);
        times.push_back(now);
        while times.len() > self.max_failures {
            times.pop_front();
        }
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

/// All pre-auth guards of one gateway.
pub struct Guards {
    pub per_ip: FailureWindow<IpAddr>,
    pub per_user: FailureWindow<String>,
    unauthenticated: Arc<AtomicUsize>,
    max_unauthenticated: usize,
}

impl Guards {
    pub fn new(limits: &AuthRateLimit, max_unauthenticated: usize) -> Self {
        Self {
            per_ip: FailureWindow::new(limits.max_failures_per_ip, limits.window),
            per_user: FailureWindow::new(limits.max_failures_per_user, limits.window),
            unauthenticated: Arc::new(AtomicUsize::new(0)),
            max_unauthenticated,
        }
    }

    /// Admits a new, not yet authenticated connection; `None` if too many are pending.
    pub fn admit_unauthenticated(&self) -> Option<PendingSlot> {
        let previous = self.unauthenticated.fetch_add(1, Ordering::AcqRel);
        let slot = PendingSlot {
            counter: self.unauthenticated.clone(),
            released: std::sync::atomic::AtomicBool::new(false),
        };
        if previous >= self.max_unauthenticated {
            return None; // dropping `slot` gives the count back
        }
        Some(slot)
    }
}

/// Holds one place among the unauthenticated connections until authentication or close.
pub struct PendingSlot {
    counter: Arc<AtomicUsize>,
    released: std::sync::atomic::AtomicBool,
}

impl PendingSlot {
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.counter.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_and_forgets_after_the_window() {
        let w = FailureWindow::new(3, Duration::from_millis(200));
        let key = "alice".to_string();
        for _ in 0..3 {
            assert!(w.allows(&key));
            w.record_failure(&key);
        }
        assert!(!w.allows(&key));
        assert!(w.allows(&"bob".to_string()));
        std::thread::sleep(Duration::from_millis(250));
        assert!(w.allows(&key));
    }

    #[test]
    fn zero_disables_the_limit() {
        let w = FailureWindow::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            w.record_failure(&1u8);
        }
        assert!(w.allows(&1u8));
    }

    #[test]
    fn unauthenticated_slots_are_capped_and_returned() {
        let g = Guards::new(&AuthRateLimit::default(), 2);
        let a = g.admit_unauthenticated().unwrap();
        let b = g.admit_unauthenticated().unwrap();
        assert!(g.admit_unauthenticated().is_none());
        a.release();
        a.release(); // idempotent
        let c = g.admit_unauthenticated().unwrap();
        drop(b);
        drop(c);
        assert!(g.admit_unauthenticated().is_some());
    }
}
