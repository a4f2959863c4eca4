//! Brute-force resistance of the `/o/` endpoints: GCRA rate limits (governor) and a back-off
//! that doubles with every failed attempt beyond a threshold.
//!
//! Client ids and usernames are not secret (RFC 6749 §2.2), so nothing a stranger can do with
//! them may lock their owner out. Limits and back-off are therefore keyed by identity *and*
//! source address: an attacker's failures slow the attacker's address. A distributed attack
//! (many addresses) is met by a separate, higher ceiling on each identity's failures from
//! all addresses together; past it the identity backs off everywhere except from the
//! addresses it has recently succeeded from, so its real owner keeps working.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimits;

/// Whose attempt a request is: the client id it claims, the username of a password grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Client(Arc<str>),
    User(Arc<str>),
}

impl Key {
    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Key::Client(_) => "client",
            Key::User(_) => "user",
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

impl Failures {
    /// Counts one more failure at `now`: from the `threshold`-th on, the key waits 1 s, then
    /// 2 s, 4 s… up to `max`. A count older than `window` starts again.
    fn add(&mut self, now: Instant, threshold: u32, max: Duration, window: Duration) {
        if now.duration_since(self.last) > window {
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.last = now;
        if self.count >= threshold {
            let doublings = (self.count - threshold).min(20);
            let wait = Duration::from_secs(1u64 << doublings).min(max);
            self.blocked_until = Some(now + wait);
        }
    }

    fn held(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }
}

/// Why a request was held back, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// `client`, `user` or `address`.
    pub kind: &'static str,
    /// `rate` (a per-minute limit), `backoff` (this identity's failures from this address)
    /// or `identity_backoff` (this identity's failures from everywhere).
    pub cause: &'static str,
    pub retry_after: Duration,
}

/// How long an identity's failures from all addresses are counted together.
const IDENTITY_WINDOW: Duration = Duration::from_secs(3600);
/// How long a successful address stays exempt from its identity's global back-off.
const KNOWN_ADDRESS_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct Throttle {
    clients: DefaultKeyedRateLimiter<(Arc<str>, IpAddr)>,
    users: DefaultKeyedRateLimiter<(Arc<str>, IpAddr)>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
    /// Kept across a config reload that changes the limits: an attacker's back-off must not
    /// end because an operator edited a route.
    history: Arc<History>,
    config: RateLimits,
}

/// What the throttle remembers of failures and successes.
#[derive(Default)]
struct History {
    /// Failures per identity and source address.
    failures: DashMap<(Key, IpAddr), Failures>,
    /// Failures per identity, from every address.
    identity_failures: DashMap<Key, Failures>,
    /// When each identity last succeeded from each address.
    known: DashMap<(Key, IpAddr), Instant>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("failing_keys", &self.history.failures.len())
            .field("failing_identities", &self.history.identity_failures.len())
            .finish()
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("max(1) is non-zero"))
}

impl Throttle {
    pub fn new(config: RateLimits) -> Throttle {
        Throttle::with_history(config, Arc::default())
    }

    fn with_history(config: RateLimits, history: Arc<History>) -> Throttle {
        Throttle {
            clients: RateLimiter::keyed(per_minute(config.per_client_per_minute)),
            users: RateLimiter::keyed(per_minute(config.per_user_per_minute)),
            addresses: RateLimiter::keyed(per_minute(config.per_address_per_minute)),
            history,
            config,
        }
    }

    /// The throttle for a reloaded config: this one when its limits are the same; otherwise
    /// one with the new limits (their per-minute budgets start full) and this one's history
    /// of failures, back-offs and known addresses.
    pub fn reconfigured(self: &Arc<Self>, config: &RateLimits) -> Arc<Throttle> {
        if self.config == *config {
            return Arc::clone(self);
        }
        Arc::new(Throttle::with_history(
            config.clone(),
            Arc::clone(&self.history),
        ))
    }

    /// Takes one attempt from the source address's budget. Needs nothing but the address, so
    /// it runs before the request body is read or parsed.
    pub fn check_address(&self, address: IpAddr) -> Result<(), Throttled> {
        self.addresses
            .check_key(&address)
            .map_err(|not_until| Throttled {
                kind: "address",
                cause: "rate",
                retry_after: not_until.wait_time_from(self.addresses.clock().now()),
            })
    }

    /// Takes one attempt for each identity from `address`, or says which must wait and how
    /// long.
    pub fn check(&self, keys: &[Key], address: IpAddr) -> Result<(), Throttled> {
        let now = Instant::now();
        for key in keys {
            let pair = (key.clone(), address);
            if let Some(wait) = self.history.failures.get(&pair).and_then(|f| f.held(now)) {
                return Err(Throttled {
                    kind: key.kind(),
                    cause: "backoff",
                    retry_after: wait,
                });
            }
            if let Some(wait) = self
                .history
                .identity_failures
                .get(key)
                .and_then(|f| f.held(now))
                && !self.history.known.contains_key(&pair)
            {
                return Err(Throttled {
                    kind: key.kind(),
                    cause: "identity_backoff",
                    retry_after: wait,
                });
            }
        }
        for key in keys {
            let (limiter, id) = match key {
                Key::Client(id) => (&self.clients, id),
                Key::User(name) => (&self.users, name),
            };
            if let Err(not_until) = limiter.check_key(&(Arc::clone(id), address)) {
                return Err(Throttled {
                    kind: key.kind(),
                    cause: "rate",
                    // The limiter's own clock: a new `DefaultClock` runs CPUID to detect the
                    // TSC, a trap to the hypervisor on a virtual machine (a quarter of
                    // issuance's CPU on one when it was made for every check).
                    retry_after: not_until.wait_time_from(limiter.clock().now()),
                });
            }
        }
        Ok(())
    }

    /// Records a failed attempt (bad client secret or password) for each identity from
    /// `address`, and against the identity as a whole.
    pub fn failed(&self, keys: &[Key], address: IpAddr) {
        let now = Instant::now();
        let fresh = Failures {
            count: 0,
            blocked_until: None,
            last: now,
        };
        let max = self.config.max_backoff;
        for key in keys {
            self.history
                .failures
                .entry((key.clone(), address))
                .or_insert(fresh)
                .add(now, self.config.failures_before_backoff, max, max * 2);
            self.history
                .identity_failures
                .entry(key.clone())
                .or_insert(fresh)
                .add(
                    now,
                    self.config.identity_failures_before_backoff,
                    max,
                    IDENTITY_WINDOW,
                );
        }
    }

    /// A successful attempt clears the failures of its identities from `address` and exempts
    /// that address from their identity-wide back-off. The identity-wide count is left to
    /// age: a success from one place says nothing about the attempts from the others.
    pub fn succeeded(&self, keys: &[Key], address: IpAddr) {
        let now = Instant::now();
        for key in keys {
            let pair = (key.clone(), address);
            self.history.failures.remove(&pair);
            self.history.known.insert(pair, now);
        }
    }

    /// Forgets idle keys so that the tables stay bounded; called periodically.
    pub fn forget_idle(&self) {
        self.clients.retain_recent();
        self.users.retain_recent();
        self.addresses.retain_recent();
        let horizon = self.config.max_backoff * 2;
        let now = Instant::now();
        self.history
            .failures
            .retain(|_, f| now.duration_since(f.last) < horizon);
        self.history
            .identity_failures
            .retain(|_, f| now.duration_since(f.last) < horizon.max(IDENTITY_WINDOW));
        self.history
            .known
            .retain(|_, at| now.duration_since(*at) < KNOWN_ADDRESS_FOR);
        self.clients.shrink_to_fit();
        self.users.shrink_to_fit();
        self.addresses.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32, failures: u32, identity_failures: u32) -> RateLimits {
        RateLimits {
            per_client_per_minute: per_minute,
            per_user_per_minute: per_minute,
            per_address_per_minute: per_minute,
            failures_before_backoff: failures,
            identity_failures_before_backoff: identity_failures,
            max_backoff: Duration::from_secs(8),
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn rate_limit_per_identity_and_address() {
        let t = Throttle::new(limits(2, 100, 1000));
        let a = [Key::Client("a".into())];
        let b = [Key::Client("b".into())];
        assert!(t.check(&a, ip(1)).is_ok());
        assert!(t.check(&a, ip(1)).is_ok());
        let held = t.check(&a, ip(1)).unwrap_err();
        assert_eq!((held.kind, held.cause), ("client", "rate"));
        assert!(held.retry_after > Duration::ZERO && held.retry_after <= Duration::from_secs(30));
        assert!(
            t.check(&b, ip(1)).is_ok(),
            "another identity has its own budget"
        );
        assert!(t.check(&a, ip(2)).is_ok(), "so has another address");
        assert!(t.check_address(ip(3)).is_ok());
        assert!(t.check_address(ip(3)).is_ok());
        assert_eq!(t.check_address(ip(3)).unwrap_err().kind, "address");
    }

    #[test]
    fn backoff_grows_after_failures_and_success_clears_it() {
        let t = Throttle::new(limits(1000, 3, 1000));
        let user = [Key::User("alice".into())];
        t.failed(&user, ip(1));
        t.failed(&user, ip(1));
        assert!(t.check(&user, ip(1)).is_ok(), "below the threshold");
        t.failed(&user, ip(1));
        let first = t.check(&user, ip(1)).unwrap_err();
        assert_eq!(first.cause, "backoff");
        assert!(first.retry_after <= Duration::from_secs(1));
        t.failed(&user, ip(1));
        let second = t.check(&user, ip(1)).unwrap_err();
        assert!(
            second.retry_after > Duration::from_secs(1)
                && second.retry_after <= Duration::from_secs(2)
        );
        for _ in 0..10 {
            t.failed(&user, ip(1));
        }
        assert!(
            t.check(&user, ip(1)).unwrap_err().retry_after <= Duration::from_secs(8),
            "capped"
        );
        t.succeeded(&user, ip(1));
        assert!(t.check(&user, ip(1)).is_ok());
    }

    /// A stranger's failures hold the stranger's address, never the identity's owner
    /// elsewhere; failures from many addresses trip the identity-wide ceiling, which spares
    /// the addresses the identity has succeeded from.
    #[test]
    fn failures_slow_whoever_makes_them() {
        let t = Throttle::new(limits(1000, 3, 6));
        let client = [Key::Client("known-id".into())];
        let (owner, attacker, helper, newcomer) = (ip(1), ip(66), ip(67), ip(9));
        t.succeeded(&client, owner);
        for _ in 0..3 {
            t.failed(&client, attacker);
        }
        assert_eq!(t.check(&client, attacker).unwrap_err().cause, "backoff");
        assert!(
            t.check(&client, owner).is_ok(),
            "the owner is not locked out"
        );
        assert!(t.check(&client, newcomer).is_ok(), "nor is anyone else yet");
        for _ in 0..3 {
            t.failed(&client, helper);
        }
        let held = t.check(&client, newcomer).unwrap_err();
        assert_eq!((held.kind, held.cause), ("client", "identity_backoff"));
        assert!(
            t.check(&client, owner).is_ok(),
            "a known address passes the identity-wide back-off"
        );
        t.succeeded(&client, owner);
        assert!(
            t.check(&client, newcomer).is_err(),
            "one success does not clear the identity-wide count"
        );
    }
}
