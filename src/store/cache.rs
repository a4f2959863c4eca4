//! The token cache: token digest -> [`Principal`], read through to the [`Store`].
//!
//! Concurrent misses for one token coalesce into one store read. Only valid tokens are cached,
//! and a cached token is never used past its expiry: every hit is checked against the clock
//! (and an expired entry dropped), and the sweeper purges expired entries periodically.
//! Revocations reach the cache directly (same process) or through the store's revocation log
//! (other processes). An optional `cache.ttl_seconds` adds a time-to-live backstop, at the cost
//! of memory per entry. A decision (allow/deny) is never cached: scopes are checked against the
//! route on every request.
//!
//! Memory: the names in a principal (client id, username, scope set) are interned, so a million
//! cached tokens of a few thousand users cost the entry and one small struct each.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use moka::future::Cache;

use super::{SharedStore, StoreError};
use crate::clock::SharedClock;
use crate::crypto::Digest;
use crate::metrics::Metrics;

/// Who a valid access token speaks for. Cheap to clone: the names are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub client_id: Arc<str>,
    /// `None` for client_credentials tokens.
    pub username: Option<Arc<str>>,
    pub scopes: Arc<[Box<str>]>,
    /// Unix seconds.
    pub expires_at: i64,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| **s == *scope)
    }
}

/// One shared copy of every client id, username and scope set the cache holds.
#[derive(Default)]
struct Names {
    strings: DashMap<Arc<str>, ()>,
    scope_sets: DashMap<Arc<[Box<str>]>, ()>,
}

impl Names {
    fn name(&self, s: String) -> Arc<str> {
        if let Some(e) = self.strings.get(s.as_str()) {
            return Arc::clone(e.key());
        }
        let shared: Arc<str> = s.into();
        Arc::clone(self.strings.entry(shared).or_insert(()).key())
    }

    fn scopes(&self, scopes: Vec<String>) -> Arc<[Box<str>]> {
        let boxed: Vec<Box<str>> = scopes.into_iter().map(Into::into).collect();
        if let Some(e) = self.scope_sets.get(boxed.as_slice()) {
            return Arc::clone(e.key());
        }
        let shared: Arc<[Box<str>]> = boxed.into();
        Arc::clone(self.scope_sets.entry(shared).or_insert(()).key())
    }

    /// Drops names no cached principal uses any more.
    fn forget_unused(&self) {
        self.strings.retain(|k, _| Arc::strong_count(k) > 1);
        self.scope_sets.retain(|k, _| Arc::strong_count(k) > 1);
    }
}

#[derive(Debug, thiserror::Error)]
enum Miss {
    #[error("no such valid token")]
    Absent,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Looks tokens up, cache first.
#[derive(Clone)]
pub struct TokenCache {
    cache: Cache<Digest, Principal>,
    names: Arc<Names>,
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
    /// A cache of at most `max_entries` tokens; `ttl`, when given, bounds how long an entry is
    /// trusted without asking the store again.
    pub fn new(
        store: SharedStore,
        clock: SharedClock,
        metrics: Metrics,
        max_entries: u64,
        ttl: Option<Duration>,
    ) -> Self {
        let mut builder = Cache::builder().max_capacity(max_entries);
        if let Some(ttl) = ttl {
            builder = builder.time_to_live(ttl);
        }
        TokenCache {
            cache: builder.build(),
            names: Arc::new(Names::default()),
            store,
            clock,
            metrics,
        }
    }

    /// The principal of a valid (known, unrevoked, unexpired) access token, or `None`.
    pub async fn principal(&self, digest: Digest) -> Result<Option<Principal>, StoreError> {
        let now = self.clock.now();
        let store = &self.store;
        let names = &self.names;
        let entry = self
            .cache
            .entry(digest)
            .or_try_insert_with(async move {
                let record = store.access_token(digest).await?.ok_or(Miss::Absent)?;
                if !record.is_active(now) {
                    return Err(Miss::Absent);
                }
                Ok(Principal {
                    client_id: names.name(record.client_id),
                    username: record.username.map(|u| names.name(u)),
                    scopes: names.scopes(record.scopes),
                    expires_at: record.expires_at,
                })
            })
            .await;
        match entry {
            Ok(entry) => {
                if entry.is_fresh() {
                    self.metrics.cache_misses.inc();
                } else {
                    self.metrics.cache_hits.inc();
                }
                let principal = entry.into_value();
                if principal.expires_at <= now {
                    self.cache.invalidate(&digest).await;
                    return Ok(None);
                }
                Ok(Some(principal))
            }
            Err(e) => {
                self.metrics.cache_misses.inc();
                match &*e {
                    Miss::Absent => Ok(None),
                    Miss::Store(e) => Err(StoreError::Unavailable(e.to_string())),
                }
            }
        }
    }

    /// Drops a token from this cache, so that its next use asks the store.
    pub async fn invalidate(&self, digest: &Digest) {
        self.cache.invalidate(digest).await;
    }

    /// Removes expired entries and the names only they used; the sweeper calls it.
    pub async fn purge_expired(&self) {
        let now = self.clock.now();
        let expired: Vec<Digest> = self
            .cache
            .iter()
            .filter(|(_, p)| p.expires_at <= now)
            .map(|(d, _)| *d)
            .collect();
        for d in &expired {
            self.cache.invalidate(d).await;
        }
        self.cache.run_pending_tasks().await;
        self.names.forget_unused();
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs the cache's pending housekeeping now (entry counts and evictions are otherwise
    /// settled lazily); for measurements.
    pub async fn settle(&self) {
        self.cache.run_pending_tasks().await;
    }
}
