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
//! of memory per entry. A decision (allow/deny) is never cached: scopes are checked against the
//! route on every request.
//!
//! Memory: the identity behind a token (client id, username, scopes) is interned, the key is
//! half the digest and a principal is 16 bytes, so a million cached tokens of a few thousand
//! users cost little more than the cache's own bookkeeping per entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use moka::sync::Cache;

use super::{SharedStore, StoreError};
use crate::clock::SharedClock;
use crate::config::CacheConfig;
use crate::crypto::Digest;
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
    /// Invalidations so far. A store read that began before one is not cached.
    invalidations: Arc<AtomicU64>,
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
        if let Some(principal) = self.cache.get(&key) {
            self.metrics.cache_hits.inc();
            if principal.expires_at <= now {
                self.invalidate_key(key);
                return Ok(None);
            }
            return Ok(Some(principal));
        }
        self.metrics.cache_misses.inc();
        // Boxed: a miss is rare, and inline its future would enlarge every request's.
        Box::pin(self.load(key, digest, now)).await
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
    /// revocation whose invalidation found nothing to remove).
    fn insert_unless_invalidated(&self, key: u128, principal: Principal, epoch: u64) {
        self.cache.insert(key, principal);
        if self.invalidations.load(Ordering::SeqCst) != epoch {
            self.cache.invalidate(&key);
        }
    }

    /// Drops a token from this cache, so that its next use asks the store. Called after the
    /// store has recorded the change: the count goes up first, then the entry goes, so that
    /// a store read racing it either sees the change or sees the count move (and does not
    /// cache what it read).
    pub fn invalidate(&self, digest: &Digest) {
        self.invalidate_key(key(digest));
    }

    fn invalidate_key(&self, key: u128) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate(&key);
    }

    /// Drops every token, so that each next use asks the store: for a replica that can no
    /// longer learn of revocations, which must not trust what it cached before.
    pub fn invalidate_all(&self) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
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
}
