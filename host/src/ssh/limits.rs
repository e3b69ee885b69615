//! Pre-authentication guards: caps on connections that have not authenticated yet, in all
//! and per source (like OpenSSH's MaxStartups and PerSourceMaxStartups), and failed-login
//! rate limits per source and per user name from one source.
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{AuthRateLimit, SshConfig};

/// Where a connection comes from, for per-source limits: an IPv4 address, or the /64 network
/// of an IPv6 address (one host usually holds a whole /64, so counting its addresses one by
/// one would let it take every slot; OpenSSH's PerSourceNetBlockSize groups them likewise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Source(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

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
    /// Failed logins per source (`authRateLimit.maxFailuresPerIp`).
    pub per_source: FailureWindow<Source>,
    /// Failed logins per user name *and* source (`authRateLimit.maxFailuresPerUser`): wrong
    /// passwords from one place must not lock the user out everywhere else.
    pub per_user: FailureWindow<(String, Source)>,
    pending: Arc<Mutex<Pending>>,
    max_unauthenticated: usize,
}

/// Connections not authenticated yet, in all and per source.
#[derive(Default)]
struct Pending {
    total: usize,
    /// Only sources with at least one pending connection, so at most `total` entries.
    by_source: HashMap<Source, usize>,
}

impl Guards {
    pub fn new(limits: &AuthRateLimit, max_unauthenticated: usize) -> Self {
        Self {
            per_source: FailureWindow::new(limits.max_failures_per_ip, limits.window),
            per_user: FailureWindow::new(limits.max_failures_per_user, limits.window),
            pending: Arc::new(Mutex::new(Pending::default())),
            max_unauthenticated,
        }
    }

    /// Admits a new, not yet authenticated connection from `peer`; `None` (and a log line
    /// saying which limit) if too many are pending, in all or from its source.
    pub fn admit_unauthenticated(
        &self,
        peer: SocketAddr,
        ssh: &SshConfig,
    ) -> Result<PendingSlot, Unadmitted> {
        let source = Source::of(peer.ip());
        let per_source = ssh.max_unauthenticated_per_source;
        let Ok(mut pending) = self.pending.lock() else {
            return Err(Unadmitted::Total);
        };
        if pending.total >= self.max_unauthenticated {
            return Err(Unadmitted::Total);
        }
        let from_source = pending.by_source.get(&source).copied().unwrap_or(0);
        if per_source > 0 && from_source >= per_source {
            tracing::warn!(%peer, %source, pending = from_source, max = per_source,
                "too many unauthenticated connections from this source (ssh.maxUnauthenticatedPerSource)");
            return Err(Unadmitted::PerSource);
        }
        pending.total += 1;
        *pending.by_source.entry(source).or_insert(0) += 1;
        Ok(PendingSlot {
            pending: self.pending.clone(),
            source,
            released: AtomicBool::new(false),
        })
    }
}

/// Why a connection got no place among the unauthenticated ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unadmitted {
    /// `ssh.maxUnauthenticated` connections are logging in already.
    Total,
    /// Its source has `ssh.maxUnauthenticatedPerSource` of them.
    PerSource,
}

/// Holds one place among the unauthenticated connections until authentication or close.
pub struct PendingSlot {
    pending: Arc<Mutex<Pending>>,
    source: Source,
    released: AtomicBool,
}

impl PendingSlot {
    pub fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        pending.total = pending.total.saturating_sub(1);
        if let Some(n) = pending.by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.by_source.remove(&self.source);
            }
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

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn ssh(per_source: usize) -> SshConfig {
        SshConfig {
            max_unauthenticated_per_source: per_source,
            ..SshConfig::default()
        }
    }

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
        let a = g.admit_unauthenticated(peer("10.0.0.1"), &ssh(0)).unwrap();
        let b = g.admit_unauthenticated(peer("10.0.0.2"), &ssh(0)).unwrap();
        assert_eq!(
            g.admit_unauthenticated(peer("10.0.0.3"), &ssh(0)).err(),
            Some(Unadmitted::Total)
        );
        a.release();
        a.release(); // idempotent
        let c = g.admit_unauthenticated(peer("10.0.0.3"), &ssh(0)).unwrap();
        drop(b);
        drop(c);
        assert!(g.admit_unauthenticated(peer("10.0.0.4"), &ssh(0)).is_ok());
    }

    #[test]
    fn one_source_cannot_take_every_slot() {
        let g = Guards::new(&AuthRateLimit::default(), 100);
        let limits = ssh(3);
        let held: Vec<_> = (0..3)
            .map(|_| g.admit_unauthenticated(peer("192.0.2.7"), &limits).unwrap())
            .collect();
        assert_eq!(
            g.admit_unauthenticated(peer("192.0.2.7"), &limits).err(),
            Some(Unadmitted::PerSource)
        );
        // Another address is still admitted, and a refused attempt took no slot.
        let other = g.admit_unauthenticated(peer("192.0.2.8"), &limits).unwrap();
        assert_eq!(g.pending.lock().unwrap().total, 4);
        drop(held);
        assert!(g.admit_unauthenticated(peer("192.0.2.7"), &limits).is_ok());
        drop(other);
        assert!(g.pending.lock().unwrap().by_source.is_empty());
    }

    #[test]
    fn ipv6_addresses_of_one_64_count_as_one_source() {
        let g = Guards::new(&AuthRateLimit::default(), 100);
        let limits = ssh(2);
        let _a = g
            .admit_unauthenticated(peer("2001:db8:1:2::1"), &limits)
            .unwrap();
        let _b = g
            .admit_unauthenticated(peer("2001:db8:1:2:ffff::9"), &limits)
            .unwrap();
        assert_eq!(
            g.admit_unauthenticated(peer("2001:db8:1:2::3"), &limits)
                .err(),
            Some(Unadmitted::PerSource)
        );
        assert!(g
            .admit_unauthenticated(peer("2001:db8:1:3::1"), &limits)
            .is_ok());
        assert_eq!(
            Source::of("2001:db8:1:2::1".parse().unwrap()).to_string(),
            "2001:db8:1:2::/64"
        );
        // An IPv4 client on a dual-stack socket is its IPv4 address.
        assert_eq!(
            Source::of("::ffff:192.0.2.1".parse().unwrap()),
            Source::of("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn failures_of_a_user_from_one_source_do_not_block_it_elsewhere() {
        let g = Guards::new(
            &AuthRateLimit {
                max_failures_per_ip: 0,
                max_failures_per_user: 2,
                window: Duration::from_secs(60),
            },
            100,
        );
        let attacker = Source::of("198.51.100.1".parse().unwrap());
        let home = Source::of("203.0.113.5".parse().unwrap());
        let alice = |s| ("alice".to_string(), s);
        g.per_user.record_failure(&alice(attacker));
        g.per_user.record_failure(&alice(attacker));
        assert!(!g.per_user.allows(&alice(attacker)));
        assert!(g.per_user.allows(&alice(home)));
        assert!(g.per_user.allows(&("bob".to_string(), attacker)));
    }
}
