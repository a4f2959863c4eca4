//! Background upkeep of the token store: the sweeper of expired and revoked tokens
//! (django-oauth-toolkit's `cleartokens`, in bounded batches) and the follower of the
//! revocation log that drops tokens revoked by other processes from this gateway's cache.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::clock::SharedClock;
use crate::config::CleanupConfig;
use crate::listener::stopped;
use crate::metrics::{KindLabels, Metrics};
use crate::store::cache::TokenCache;
use crate::store::{SharedStore, StoreError, Swept};

/// Deletes expired and revoked tokens batch by batch until none are left. Each batch is one
/// short transaction, so token validation (reads) and issuance never wait long behind it.
pub async fn sweep_all(
    store: &SharedStore,
    now: i64,
    batch: usize,
    metrics: Option<&Metrics>,
) -> Result<Swept, StoreError> {
    let mut total = Swept::default();
    loop {
        let swept = store.sweep(now, batch).await?;
        total.access += swept.access;
        total.refresh += swept.refresh;
        if let Some(m) = metrics {
            for (kind, n) in [("access", swept.access), ("refresh", swept.refresh)] {
                m.tokens_swept
                    .get_or_create(&KindLabels { kind })
                    .inc_by(n as u64);
            }
        }
        if swept.access < batch && swept.refresh < batch {
            return Ok(total);
        }
        // Let other work in before the next batch.
        tokio::task::yield_now().await;
    }
}

/// Sweeps every `cleanup.interval` (first shortly after start) and refreshes the live-token
/// gauges, until shutdown.
pub async fn sweep_periodically(
    store: SharedStore,
    metrics: Metrics,
    clock: SharedClock,
    cleanup: CleanupConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        cleanup.interval,
    );
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        let now = clock.now();
        match sweep_all(&store, now, cleanup.batch_size, Some(&metrics)).await {
            Ok(s) if s.access + s.refresh > 0 => {
                tracing::info!(
                    access = s.access,
                    refresh = s.refresh,
                    "swept expired and revoked tokens"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "token sweep failed"),
        }
        match store.live_tokens(now).await {
            Ok(live) => {
                metrics
                    .live_tokens
                    .get_or_create(&KindLabels { kind: "access" })
                    .set(live.access as i64);
                metrics
                    .live_tokens
                    .get_or_create(&KindLabels { kind: "refresh" })
                    .set(live.refresh as i64);
            }
            Err(e) => tracing::warn!(error = %e, "counting live tokens failed"),
        }
    }
}

/// Reads the revocation log every `interval` and drops the revoked tokens from `cache`, so a
/// token revoked by another process (the CLI, another replica) stops working here within
/// about one interval.
pub async fn follow_revocations(
    store: SharedStore,
    cache: TokenCache,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = 0;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        match store.revocations_since(last).await {
            Ok((newest, digests)) => {
                for d in &digests {
                    cache.invalidate(d).await;
                }
                last = newest;
            }
            Err(e) => tracing::warn!(error = %e, "reading the revocation log failed"),
        }
    }
}
