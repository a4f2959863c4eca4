//! The token cache: token digest -> [`Principal`], read through to the [`Store`].
//!
//! A hit is a plain function call (moka's synchronous cache: no future, nothing to await); a
//! miss reads the store. Concurrent first uses of one token each read it (the reads are
//! cheap and a read pool bounds them) and the first answer stays. Only valid tokens are
//! cached, and a cached token is never used past its expiry: every hit is checked against the clock
//! (and an expired entry dropped), and the sweeper purges expired entries periodically.
//! Revocations reach the cache directly (same process) or through the store's revocation log
//! (other processes). A store read that an invalidation overtakes is not cached (see
//! [`TokenCache::invalidate`]), so no lookup racing a revocation can put the revoked token
//! back. An optional `cache.ttl_seconds` adds a time-to-live backstop, at the cost
//! of memory per entry.
//!
//! A client connection remembers the last token it presented and what the cache said of it
//! ([`LastToken`]): a keep-alive client sends the same token on every request, and while no
//! invalidation has run since that answer and the token has not expired, the next request on
//! the connection is answered without hashing the token or touching the shared cache. The
//! token is compared whole, in constant time, so a remembered answer is never given for
//! another token, and any invalidation (a revocation here or on another replica, an expired
//! entry swept, the whole cache dropped) makes every connection ask the cache again. With a
//! TTL backstop, which is per cache entry, nothing is remembered.
//!
//! A decision (allow/deny) is never cached: scopes are checked against the route on every
//! request.
//!
//! Memory: the identity behind a token (client id, username, scopes) is interned, the key is
//! half the digest and a principal is 16 bytes, so a million cached tokens of a few thousand
//! users cost little more than the cache's own bookkeeping per entry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use moka::sync::Cache;

use super::{SharedStore, StoreError};
use crate::clock::SharedClock;
use crate::config::CacheConfig;
use crate::crypto::{Digest, same_bytes};
use crate::metrics::Metrics;
use crate::principal::{Identity, Principal};

/// One shared copy of every identity the cache holds.
#[derive(Default)]
struct Identities(DashMap<Arc<Identity>, ()>);

impl Identities {
    fn intern(&self, identity: Identity) -> Arc<Identity> {
        if let Some(e) = self.0.get(&identity) {
            return Arc::clone(e.key());
        }
        Arc::clone(self.0.entry(Arc::new(identity)).or_insert(()).key())
    }

    /// Drops identities no cached token uses any more.
    fn forget_unused(&self) {
        self.0.retain(|k, _| Arc::strong_count(k) > 1);
    }
}

/// The cache key: the first 128 bits of the token's SHA-256. Finding a string whose digest
/// shares them with a live token is a 2^128 second-preimage search, so nothing is lost, and
/// each entry is 16 bytes smaller.
fn key(digest: &Digest) -> u128 {
    let mut half = [0u8; 16];
    half.copy_from_slice(&digest.0[..16]);
    u128::from_le_bytes(half)
}

/// Looks tokens up, cache first.
#[derive(Clone)]
pub struct TokenCache {
    cache: Cache<u128, Principal>,
    /// Invalidations so far, counted before and after each: a store read that began before
    /// one is not cached, and a connection's [`LastToken`] made before one is not used.
    invalidations: Arc<AtomicU64>,
    /// Whether connections may remember their last token: not under a TTL backstop.
    remembers: bool,
    identities: Arc<Identities>,
    store: SharedStore,
    clock: SharedClock,
    metrics: Metrics,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl TokenCache {
    /// A cache of at most `config.max_entries` tokens; `config.ttl`, when given, bounds how long an entry is
    /// trusted without asking the store again.
    pub fn new(
        store: SharedStore,
        clock: SharedClock,
        metrics: Metrics,
        config: &CacheConfig,
    ) -> Self {
        // LRU rather than moka's default TinyLFU: a token in use is a token used recently,
        // and LRU keeps no frequency sketch (8 MB at a million entries).
        let mut builder = Cache::builder()
            .max_capacity(config.max_entries)
            .eviction_policy(moka::policy::EvictionPolicy::lru());
        if let Some(ttl) = config.ttl {
            builder = builder.time_to_live(ttl);
        }
        TokenCache {
            cache: builder.build(),
            invalidations: Arc::new(AtomicU64::new(0)),
            remembers: config.ttl.is_none(),
            identities: Arc::new(Identities::default()),
            store,
            clock,
            metrics,
        }
    }

    /// The principal of a valid (known, unrevoked, unexpired) access token, or `None`.
    pub async fn principal(&self, digest: Digest) -> Result<Option<Principal>, StoreError> {
        let now = self.clock.now();
        let key = key(&digest);
        if let Some(known) = self.cached(key, now) {
            return Ok(known);
        }
        self.metrics.cache_misses.inc();
        // Boxed: a miss is rare, and inline its future would enlarge every request's.
        Box::pin(self.load(key, digest, now)).await
    }

    /// What the cache holds for `key` at `now`: `Some(None)` for a token that has expired
    /// (dropped from the cache here), `None` when only the store can tell.
    fn cached(&self, key: u128, now: i64) -> Option<Option<Principal>> {
        let principal = self.cache.get(&key)?;
        self.metrics.cache_hits.inc();
        if principal.expires_at <= now {
            self.invalidate_key(key);
            return Some(None);
        }
        Some(Some(principal))
    }

    /// The principal of `token` as [`TokenCache::principal`] gives it, for a request on the
    /// client connection that remembers `last`, as far as it is known without the store: the
    /// connection's last answer when it is for the same token and still good, else the
    /// cache's, which the connection then remembers; else the [`Miss`] that
    /// [`TokenCache::principal_missed`] finishes with the store. The request path decides
    /// most requests with it at once, without waiting.
    pub fn principal_cached(
        &self,
        token: &str,
        last: &LastToken,
    ) -> Result<Option<Principal>, Miss> {
        let now = self.clock.now();
        // Read before the lookup: an invalidation that the lookup may have missed moves the
        // count past it, so what is remembered below is not used after that invalidation.
        let epoch = self
            .remembers
            .then(|| self.invalidations.load(Ordering::SeqCst));
        if let Some(epoch) = epoch
            && let Some(principal) = last.recall(token, epoch, now)
        {
            self.metrics.cache_hits.inc();
            return Ok(Some(principal));
        }
        let digest = Digest::of(token);
        let key = key(&digest);
        match self.cached(key, now) {
            Some(known) => {
                if let (Some(epoch), Some(p)) = (epoch, &known) {
                    last.remember(token, p, epoch);
                }
                Ok(known)
            }
            None => Err(Miss {
                key,
                digest,
                now,
                epoch,
            }),
        }
    }

    /// The end of a lookup that [`TokenCache::principal_cached`] missed: the store's answer,
    /// cached and remembered by the connection as there.
    pub async fn principal_missed(
        &self,
        miss: Miss,
        token: &str,
        last: &LastToken,
    ) -> Result<Option<Principal>, StoreError> {
        self.metrics.cache_misses.inc();
        // Boxed: a miss is rare, and inline its future would enlarge every request's.
        let principal = Box::pin(self.load(miss.key, miss.digest, miss.now)).await?;
        if let (Some(epoch), Some(p)) = (miss.epoch, &principal) {
            last.remember(token, p, epoch);
        }
        Ok(principal)
    }

    /// Reads a token from the store and caches it if valid, unless an invalidation ran
    /// meanwhile.
    async fn load(
        &self,
        key: u128,
        digest: Digest,
        now: i64,
    ) -> Result<Option<Principal>, StoreError> {
        let epoch = self.invalidations.load(Ordering::SeqCst);
        let Some(record) = self.store.access_token(digest).await? else {
            return Ok(None);
        };
        if !record.is_live(now) {
            return Ok(None);
        }
        let meta = record.meta;
        let principal = Principal::shared(
            self.identities.intern(Identity::new(
                meta.client_id.into(),
                meta.username.map(Into::into),
                meta.scopes,
            )),
            meta.expires_at,
        );
        self.insert_unless_invalidated(key, principal.clone(), epoch);
        Ok(Some(principal))
    }

    /// Caches `principal`, read from the store when the invalidation count was `epoch`; if an
    /// invalidation has run since, the entry is dropped again (the read may predate a
    /// revocation whose invalidation found nothing to remove). Dropping it counts as an
    /// invalidation, for a connection that found the entry in the moment it was cached.
    fn insert_unless_invalidated(&self, key: u128, principal: Principal, epoch: u64) {
        self.cache.insert(key, principal);
        if self.invalidations.load(Ordering::SeqCst) != epoch {
            self.cache.invalidate(&key);
            self.invalidations.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Drops a token from this cache, so that its next use asks the store. Called after the
    /// store has recorded the change: the count goes up first, then the entry goes, so that
    /// a store read racing it either sees the change or sees the count move (and does not
    /// cache what it read); then the count goes up again, so that a connection that found
    /// the entry before it went, whenever it read the count, does not remember the answer.
    pub fn invalidate(&self, digest: &Digest) {
        self.invalidate_key(key(digest));
    }

    fn invalidate_key(&self, key: u128) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate(&key);
        self.invalidations.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops every token, so that each next use asks the store: for a replica that can no
    /// longer learn of revocations, which must not trust what it cached before.
    pub fn invalidate_all(&self) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
        self.invalidations.fetch_add(1, Ordering::SeqCst);
    }

    /// Removes expired entries and the names only they used; the sweeper calls it.
    pub fn purge_expired(&self) {
        let now = self.clock.now();
        let expired: Vec<u128> = self
            .cache
            .iter()
            .filter(|(_, p)| p.expires_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.invalidate_key(k);
        }
        self.cache.run_pending_tasks();
        self.identities.forget_unused();
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs the cache's pending housekeeping now (entry counts and evictions are otherwise
    /// settled lazily); for measurements.
    pub fn settle(&self) {
        self.cache.run_pending_tasks();
    }
}

/// A token lookup that neither the connection's last token nor the cache could answer: what
/// [`TokenCache::principal_missed`] needs to ask the store.
pub struct Miss {
    key: u128,
    digest: Digest,
    now: i64,
    /// The invalidation count read before the lookup, when the connection may remember the
    /// answer.
    epoch: Option<u64>,
}

/// What one client connection remembers of the last token it presented: the token, the
/// principal the cache gave for it and the invalidation count read before that lookup. A
/// connection's requests come one after another (HTTP/1.1) or share one remembered token
/// (HTTP/2 streams): a request that finds it in use by another does without it.
#[derive(Default)]
pub struct LastToken(Mutex<Option<Remembered>>);

struct Remembered {
    token: String,
    principal: Principal,
    epoch: u64,
}

impl LastToken {
    /// The remembered principal, if `token` is the remembered one, no invalidation has run
    /// since (`epoch` is the count now) and it has not expired at `now`.
    fn recall(&self, token: &str, epoch: u64, now: i64) -> Option<Principal> {
        let last = self.0.try_lock().ok()?;
        let r = last.as_ref()?;
        let same = same_bytes(r.token.as_bytes(), token.as_bytes());
        (same && r.epoch == epoch && r.principal.expires_at > now).then(|| r.principal.clone())
    }

    /// Remembers `principal` as the answer for `token`, looked up when the count was `epoch`.
    /// The token's buffer is reused: a connection's tokens are all of a length.
    fn remember(&self, token: &str, principal: &Principal, epoch: u64) {
        let Ok(mut last) = self.0.try_lock() else {
            return;
        };
        match &mut *last {
            Some(r) => {
                r.token.clear();
                r.token.push_str(token);
                r.principal = principal.clone();
                r.epoch = epoch;
            }
            None => {
                *last = Some(Remembered {
                    token: token.to_owned(),
                    principal: principal.clone(),
                    epoch,
                })
            }
        }
    }
}

impl std::fmt::Debug for LastToken {
    /// Says whether a token is remembered, never which.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let remembered = self.0.try_lock().map(|l| l.is_some()).unwrap_or(true);
        f.debug_struct("LastToken")
            .field("remembered", &remembered)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::scope::ScopeSet;
    use crate::store::sqlite::SqliteStore;
    use std::time::Duration;

    fn cache() -> (TokenCache, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
        let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
        let clock = Arc::new(ManualClock::new(1_000));
        let config = CacheConfig {
            max_entries: 100,
            ttl: None,
            revocation_poll: Duration::from_secs(1),
        };
        (TokenCache::new(store, clock, metrics, &config), dir)
    }

    fn principal() -> Principal {
        Principal::new(Identity::new("c".into(), None, ScopeSet::default()), 2_000)
    }

    /// A store read that an invalidation overtook (a revocation between the read and the
    /// insert) is not cached; one that nothing overtook is.
    #[test]
    fn a_read_overtaken_by_an_invalidation_is_not_cached() {
        let (cache, _dir) = cache();
        let (a, b) = (1u128, 2u128);

        let epoch = cache.invalidations.load(Ordering::SeqCst);
        cache.insert_unless_invalidated(a, principal(), epoch);
        assert!(cache.cache.get(&a).is_some(), "nothing overtook the read");

        let epoch = cache.invalidations.load(Ordering::SeqCst);
        // The revocation's invalidation runs while the read is in flight: nothing to remove.
        cache.invalidate_key(b);
        cache.insert_unless_invalidated(b, principal(), epoch);
        assert!(cache.cache.get(&b).is_none(), "the stale read was dropped");
    }

    const TOKEN: &str = "pcat_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

    /// What a connection remembers answers only the same token, at the same invalidation
    /// count, before its expiry.
    #[test]
    fn a_remembered_token_answers_only_itself_while_good() {
        let p = principal(); // expires at 2_000
        let other = "pcat_0123456789abcdefghijklmnopqrstuvwxyzABCDEFH";
        let cases: [(&str, u64, i64, bool); 7] = [
            (TOKEN, 7, 1_999, true),
            (other, 7, 1_999, false),
            (
                "pcat_0123456789abcdefghijklmnopqrstuvwxyzABCDEF",
                7,
                1_999,
                false,
            ),
            (&TOKEN[..5], 7, 1_999, false),
            (TOKEN, 8, 1_999, false),
            (TOKEN, 9, 1_999, false),
            (TOKEN, 7, 2_000, false),
        ];
        let last = LastToken::default();
        assert!(
            last.recall(TOKEN, 7, 1_000).is_none(),
            "nothing remembered yet"
        );
        last.remember(TOKEN, &p, 7);
        for (token, epoch, now, expected) in cases {
            let recalled = last.recall(token, epoch, now);
            assert_eq!(recalled.is_some(), expected, "{token} at {epoch}, {now}");
            if let Some(r) = recalled {
                assert_eq!(r, p);
            }
        }
        // A later answer replaces the earlier one.
        last.remember(other, &p, 9);
        assert!(last.recall(TOKEN, 9, 1_000).is_none());
        assert!(last.recall(other, 9, 1_000).is_some());
        assert_eq!(format!("{last:?}"), "LastToken { remembered: true }");
    }

    /// A whole lookup, as the request path makes it: at once, else with the store.
    async fn principal_of(cache: &TokenCache, token: &str, last: &LastToken) -> Option<Principal> {
        match cache.principal_cached(token, last) {
            Ok(known) => known,
            Err(miss) => cache.principal_missed(miss, token, last).await.unwrap(),
        }
    }

    /// The connection's answer is used without the shared cache, and no longer once any
    /// invalidation has run; under a TTL backstop nothing is remembered.
    #[tokio::test]
    async fn an_invalidation_anywhere_ends_what_connections_remember() {
        let (shared, _dir) = cache();
        let last = LastToken::default();
        let k = key(&Digest::of(TOKEN));
        shared.cache.insert(k, principal());
        assert!(principal_of(&shared, TOKEN, &last).await.is_some());
        // Gone from the shared cache (and never in the store) without an invalidation: the
        // connection's answer still stands, so it was not asked for.
        shared.cache.invalidate(&k);
        assert!(principal_of(&shared, TOKEN, &last).await.is_some());
        // Another token's invalidation ends it: the cache, then the (empty) store, is asked.
        shared.invalidate(&Digest::of("pcat_another"));
        assert!(principal_of(&shared, TOKEN, &last).await.is_none());

        let (mut ttl, _dir) = cache();
        ttl.remembers = false;
        let last = LastToken::default();
        ttl.cache.insert(k, principal());
        assert!(principal_of(&ttl, TOKEN, &last).await.is_some());
        ttl.cache.invalidate(&k);
        assert!(principal_of(&ttl, TOKEN, &last).await.is_none());
    }

    /// A lookup is answered at once from the connection's last token or the cache, and is a
    /// miss for the store to finish otherwise: never answered from what an invalidation has
    /// ended, nor from what the connection may not remember (under a TTL backstop).
    #[tokio::test]
    async fn a_lookup_answers_at_once_only_from_the_connection_or_the_cache() {
        // The answer at once, if there is one.
        let at_once =
            |cache: &TokenCache, last: &LastToken| cache.principal_cached(TOKEN, last).ok();
        let (shared, _dir) = cache();
        let last = LastToken::default();
        let k = key(&Digest::of(TOKEN));
        let miss = shared.principal_cached(TOKEN, &last);
        assert!(miss.is_err(), "neither holds it");
        let missed = shared.principal_missed(miss.err().unwrap(), TOKEN, &last);
        assert!(missed.await.unwrap().is_none(), "nor does the store");
        shared.cache.insert(k, principal());
        assert_eq!(at_once(&shared, &last), Some(Some(principal())));
        // Remembered by the connection: answered with the cache's entry gone.
        shared.cache.invalidate(&k);
        assert_eq!(at_once(&shared, &last), Some(Some(principal())));
        // An invalidation ends that.
        shared.invalidate(&Digest::of("pcat_another"));
        assert_eq!(at_once(&shared, &last), None);
        // An expired entry is an answer (no principal), and leaves the cache.
        let mut expired = principal();
        expired.expires_at = 1_000; // the clock's now
        shared.cache.insert(k, expired);
        assert_eq!(at_once(&shared, &last), Some(None));
        assert!(shared.cache.get(&k).is_none());

        let (mut ttl, _dir) = cache();
        ttl.remembers = false;
        let last = LastToken::default();
        ttl.cache.insert(k, principal());
        assert_eq!(at_once(&ttl, &last), Some(Some(principal())));
        ttl.cache.invalidate(&k);
        assert_eq!(at_once(&ttl, &last), None, "nothing remembered");
    }

    /// Each invalidation moves the count on both sides of removing the entry, so a lookup
    /// that found the entry before it went does not stay remembered, however the lookup's
    /// reading of the count fell around the invalidation's first step.
    #[test]
    fn an_invalidation_moves_the_count_after_the_entry_is_gone() {
        let (cache, _dir) = cache();
        let count = || cache.invalidations.load(Ordering::SeqCst);
        let before = count();
        cache.invalidate_key(1);
        assert_eq!(count(), before + 2);
        cache.invalidate_all();
        assert_eq!(count(), before + 4);
        // A store read overtaken by an invalidation drops its entry, and counts that too.
        cache.insert_unless_invalidated(2, principal(), before);
        assert!(cache.cache.get(&2).is_none());
        assert_eq!(count(), before + 5);
    }
}
