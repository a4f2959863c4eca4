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
//! Memory: the identity behind a token (client id, username, scopes) is interned, the key is
//! half the digest and a principal is 16 bytes, so a million cached tokens of a few thousand
//! users cost little more than the cache's own bookkeeping per entry.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use moka::future::Cache;

use super::{SharedStore, StoreError};
use crate::clock::SharedClock;
use crate::crypto::Digest;
use crate::metrics::Metrics;
use crate::proxy::IdentityValues;

/// The identity behind a token: shared (interned) by every cached token of the same client,
/// user and scopes.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub client_id: Box<str>,
    /// `None` for client_credentials tokens.
    pub username: Option<Box<str>>,
    pub scopes: Box<[Box<str>]>,
    /// The same as identity-header values, made once here instead of on every request.
    pub header_values: IdentityValues,
}

impl Identity {
    pub fn new(
        client_id: Box<str>,
        username: Option<Box<str>>,
        scopes: Box<[Box<str>]>,
    ) -> Identity {
        let header_values = IdentityValues::new(username.as_deref(), &client_id, &scopes);
        Identity {
            client_id,
            username,
            scopes,
            header_values,
        }
    }
}

/// Who a valid access token speaks for, and until when. 16 bytes: cheap to cache and clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    identity: Arc<Identity>,
    /// Unix seconds.
    pub expires_at: i64,
}

impl Principal {
    pub fn new(identity: Identity, expires_at: i64) -> Principal {
        Principal {
            identity: Arc::new(identity),
            expires_at,
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.identity.scopes.iter().any(|s| **s == *scope)
    }
}

impl std::ops::Deref for Principal {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        &self.identity
    }
}

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
    cache: Cache<u128, Principal>,
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
            identities: Arc::new(Identities::default()),
            store,
            clock,
            metrics,
        }
    }

    /// The principal of a valid (known, unrevoked, unexpired) access token, or `None`.
    pub async fn principal(&self, digest: Digest) -> Result<Option<Principal>, StoreError> {
        let now = self.clock.now();
        let store = &self.store;
        let identities = &self.identities;
        let entry = self
            .cache
            .entry(key(&digest))
            .or_try_insert_with(async move {
                let record = store.access_token(digest).await?.ok_or(Miss::Absent)?;
                if !record.is_active(now) {
                    return Err(Miss::Absent);
                }
                let identity = Identity::new(
                    record.client_id.into(),
                    record.username.map(Into::into),
                    record.scopes.into_iter().map(Into::into).collect(),
                );
                Ok(Principal {
                    identity: identities.intern(identity),
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
                    self.cache.invalidate(&key(&digest)).await;
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
        self.cache.invalidate(&key(digest)).await;
    }

    /// Removes expired entries and the names only they used; the sweeper calls it.
    pub async fn purge_expired(&self) {
        let now = self.clock.now();
        let expired: Vec<u128> = self
            .cache
            .iter()
            .filter(|(_, p)| p.expires_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &expired {
            self.cache.invalidate(k).await;
        }
        self.cache.run_pending_tasks().await;
        self.identities.forget_unused();
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
