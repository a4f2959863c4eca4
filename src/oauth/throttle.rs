//! Brute-force resistance of the token endpoint: GCRA rate limits per client id, per
//! username and per source address (governor), and a back-off that doubles with every failed
//! attempt beyond a threshold, per client, user and address alike.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimits;

/// What a limit applies to. Keys are bounded by the limiter's periodic clean-up, never by
/// the number of distinct values an attacker sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Client(Arc<str>),
    User(Arc<str>),
    Address(IpAddr),
}

impl Key {
    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Key::Client(_) => "client",
            Key::User(_) => "user",
            Key::Address(_) => "address",
        }
    }
}

/// Consecutive failures of one key and when it may try again.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    blocked_until: Option<Instant>,
    last: Instant,
}

/// Why a request was held back, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub kind: &'static str,
    /// `rate` (the per-minute limit) or `backoff` (after failures).
    pub cause: &'static str,
    pub retry_after: Duration,
}

pub struct Throttle {
    clients: DefaultKeyedRateLimiter<Arc<str>>,
    users: DefaultKeyedRateLimiter<Arc<str>>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
    failures: DashMap<Key, Failures>,
    config: RateLimits,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("failing_keys", &self.failures.len())
            .finish()
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("max(1) is non-zero"))
}

impl Throttle {
    pub fn new(config: RateLimits) -> Throttle {
        Throttle {
            clients: RateLimiter::keyed(per_minute(config.per_client_per_minute)),
            users: RateLimiter::keyed(per_minute(config.per_user_per_minute)),
            addresses: RateLimiter::keyed(per_minute(config.per_address_per_minute)),
            failures: DashMap::new(),
            config,
        }
    }

    /// Takes one attempt for each key, or says which key must wait and how long.
    pub fn check(&self, keys: &[Key]) -> Result<(), Throttled> {
        let now = Instant::now();
        for key in keys {
            if let Some(f) = self.failures.get(key)
                && let Some(until) = f.blocked_until
                && until > now
            {
                return Err(Throttled {
                    kind: key.kind(),
                    cause: "backoff",
                    retry_after: until - now,
                });
            }
        }
        let clock = DefaultClock::default();
        for key in keys {
            let verdict = match key {
                Key::Client(id) => self.clients.check_key(id),
                Key::User(name) => self.users.check_key(name),
                Key::Address(ip) => self.addresses.check_key(ip),
            };
            if let Err(not_until) = verdict {
                return Err(Throttled {
                    kind: key.kind(),
                    cause: "rate",
                    retry_after: not_until.wait_time_from(clock.now()),
                });
            }
        }
        Ok(())
    }

    /// Records a failed attempt (bad client secret or password) for each key: from the
    /// `failures_before_backoff`-th on, the key waits 1 s, then 2 s, 4 s… up to `max_backoff`.
    pub fn failed(&self, keys: &[Key]) {
        let now = Instant::now();
        for key in keys {
            let mut entry = self.failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                blocked_until: None,
                last: now,
            });
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
            if entry.count >= self.config.failures_before_backoff {
                let doublings = (entry.count - self.config.failures_before_backoff).min(20);
                let wait = Duration::from_secs(1u64 << doublings).min(self.config.max_backoff);
                entry.blocked_until = Some(now + wait);
            }
        }
    }

    /// A successful attempt clears the failures of its keys.
    pub fn succeeded(&self, keys: &[Key]) {
        for key in keys {
            self.failures.remove(key);
        }
    }

    /// Forgets idle keys so that the tables stay bounded; called periodically.
    pub fn forget_idle(&self) {
        self.clients.retain_recent();
        self.users.retain_recent();
        self.addresses.retain_recent();
        let horizon = self.config.max_backoff * 2;
        let now = Instant::now();
        self.failures
            .retain(|_, f| now.duration_since(f.last) < horizon);
        self.clients.shrink_to_fit();
        self.users.shrink_to_fit();
        self.addresses.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32, failures: u32) -> RateLimits {
        RateLimits {
            per_client_per_minute: per_minute,
            per_user_per_minute: per_minute,
            per_address_per_minute: per_minute,
            failures_before_backoff: failures,
            max_backoff: Duration::from_secs(8),
        }
    }

    #[test]
    fn rate_limit_per_key() {
        let t = Throttle::new(limits(2, 100));
        let a = [Key::Client("a".into())];
        let b = [Key::Client("b".into())];
        assert!(t.check(&a).is_ok());
        assert!(t.check(&a).is_ok());
        let held = t.check(&a).unwrap_err();
        assert_eq!((held.kind, held.cause), ("client", "rate"));
        assert!(held.retry_after > Duration::ZERO && held.retry_after <= Duration::from_secs(30));
        assert!(t.check(&b).is_ok(), "another key has its own budget");
    }

    #[test]
    fn backoff_grows_after_failures_and_success_clears_it() {
        let t = Throttle::new(limits(1000, 3));
        let user = [Key::User("alice".into())];
        t.failed(&user);
        t.failed(&user);
        assert!(t.check(&user).is_ok(), "below the threshold");
        t.failed(&user);
        let first = t.check(&user).unwrap_err();
        assert_eq!(first.cause, "backoff");
        assert!(first.retry_after <= Duration::from_secs(1));
        t.failed(&user);
        let second = t.check(&user).unwrap_err();
        assert!(
            second.retry_after > Duration::from_secs(1)
                && second.retry_after <= Duration::from_secs(2)
        );
        for _ in 0..10 {
            t.failed(&user);
        }
        assert!(
            t.check(&user).unwrap_err().retry_after <= Duration::from_secs(8),
            "capped"
        );
        t.succeeded(&user);
        assert!(t.check(&user).is_ok());
    }
}
