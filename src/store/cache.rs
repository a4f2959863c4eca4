//! The token cache: token digest -> [`Principal`], read through to the [`Store`].
//!
//! Entries never outlive their token (per-entry expiry at the token's `expires_at`) nor the
//! configured `cache.ttl_seconds`; concurrent misses for one token coalesce into one store
//! read. Only valid tokens are cached; a decision (allow/deny) is never cached, since scopes
//! are checked against the route on every request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::{SharedStore, StoreError};
use crate::clock::SharedClock;
use crate::crypto::Digest;
use crate::metrics::Metrics;

/// Who a valid access token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub client_id: Box<str>,
    /// `None` for client_credentials tokens.
    pub username: Option<Box<str>>,
    pub scopes: Box<[Box<str>]>,
    /// Unix seconds.
    pub expires_at: i64,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| **s == *scope)
    }
}

struct UntilTokenExpiry {
    clock: SharedClock,
    ttl: Duration,
}

impl Expiry<Digest, Arc<Principal>> for UntilTokenExpiry {
    fn expire_after_create(&self, _: &Digest, p: &Arc<Principal>, _: Instant) -> Option<Duration> {
        let left = u64::try_from(p.expires_at - self.clock.now()).unwrap_or(0);
        Some(self.ttl.min(Duration::from_secs(left)))
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
    cache: Cache<Digest, Arc<Principal>>,
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
    pub fn new(
        store: SharedStore,
        clock: SharedClock,
        metrics: Metrics,
        max_entries: u64,
        ttl: Duration,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_entries)
            .expire_after(UntilTokenExpiry {
                clock: Arc::clone(&clock),
                ttl,
            })
            .build();
        TokenCache {
            cache,
            store,
            clock,
            metrics,
        }
    }

    /// The principal of a valid (known, unrevoked, unexpired) access token, or `None`.
    pub async fn principal(&self, digest: Digest) -> Result<Option<Arc<Principal>>, StoreError> {
        let now = self.clock.now();
        let store = &self.store;
        let entry = self
            .cache
            .entry(digest)
            .or_try_insert_with(async move {
                let record = store.access_token(digest).await?.ok_or(Miss::Absent)?;
                if record.revoked_at.is_some() || record.expires_at <= now {
                    return Err(Miss::Absent);
                }
                Ok(Arc::new(Principal {
                    client_id: record.client_id.into(),
                    username: record.username.map(Into::into),
                    scopes: record.scopes.into_iter().map(Into::into).collect(),
                    expires_at: record.expires_at,
                }))
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
                match Arc::try_unwrap(e) {
                    Ok(Miss::Absent) => Ok(None),
                    Ok(Miss::Store(e)) => Err(e),
                    Err(shared) => match &*shared {
                        Miss::Absent => Ok(None),
                        Miss::Store(e) => Err(StoreError::Unavailable(e.to_string())),
                    },
                }
            }
        }
    }

    /// Drops a token from this cache, so that its next use asks the store.
    pub async fn invalidate(&self, digest: &Digest) {
        self.cache.invalidate(digest).await;
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}
