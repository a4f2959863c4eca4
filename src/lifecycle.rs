//! Background upkeep of the token store: the sweeper of expired and revoked tokens
//! (django-oauth-toolkit's `cleartokens`, in bounded batches) and the follower of the
//! revocation log that drops tokens revoked by other processes from this gateway's cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tokio::time::MissedTickBehavior;

use crate::clock::SharedClock;
use crate::config::{CleanupConfig, PostgresConfig};
use crate::gateway::Gateway;
use crate::metrics::{KindLabels, Metrics, OutcomeLabels};
use crate::shutdown::{Hangups, stopped};
use crate::store::cache::TokenCache;
use crate::store::postgres::notify::Listener;
use crate::store::{SharedStore, StoreError, Swept};
use crate::tls::ReloadingCert;

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

/// Sweeps every `cleanup.interval` (first shortly after start), purges expired entries from
/// the token cache, and refreshes the live-token gauges, until shutdown.
pub async fn sweep_periodically(
    store: SharedStore,
    cache: TokenCache,
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
        cache.purge_expired();
        metrics
            .cache_entries
            .set(i64::try_from(cache.entry_count()).unwrap_or(i64::MAX));
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
///
/// With a revocation feed (PostgreSQL replicas; `feed` says whether it is listening), a
/// replica that has neither its feed nor a successful log read for two intervals (at least
/// one second) empties its cache: what it cached may have been revoked meanwhile, so every
/// token is checked against the store again (503 while the store is unreachable) until the
/// log is read again.
pub async fn follow_revocations(
    store: SharedStore,
    cache: TokenCache,
    interval: Duration,
    replay: Arc<Notify>,
    feed: Option<Arc<AtomicBool>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = 0;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let trust_for = (interval * 2).max(Duration::from_secs(1));
    let mut synced = tokio::time::Instant::now();
    let mut emptied = false;
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
            // A revocation feed (re)connected: what it missed is in the log, read it now.
            _ = replay.notified() => {}
        }
        // A read that hangs counts as failed once the cache can no longer be trusted.
        match tokio::time::timeout(trust_for, store.revocations_since(last)).await {
            Ok(Ok((newest, digests))) => {
                for d in &digests {
                    cache.invalidate(d);
                }
                last = newest;
                synced = tokio::time::Instant::now();
                if emptied {
                    tracing::info!("the revocation log is read again; caching tokens again");
                    emptied = false;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "reading the revocation log failed"),
            Err(_) => tracing::warn!("reading the revocation log timed out"),
        }
        let Some(feed) = &feed else { continue };
        if feed.load(Ordering::SeqCst) {
            synced = synced.max(tokio::time::Instant::now() - interval);
        } else if synced.elapsed() > trust_for {
            // Emptied on every round until a read succeeds: entries cached meanwhile came from
            // store reads that may predate a revocation this replica has not heard of.
            cache.invalidate_all();
            if !emptied {
                tracing::warn!(
                    "no revocation feed and no revocation log for {:?}: the token cache is emptied \
                     until the log is read again",
                    trust_for
                );
                emptied = true;
            }
        }
    }
}

/// PostgreSQL replicas: listens for the revocations other replicas notify and drops those
/// tokens from this gateway's cache as they arrive. After every (re)connection the log
/// follower replays the log at once, so that nothing notified while the feed was down is
/// missed; reconnects back off from 100 ms to 5 s.
pub async fn listen_for_revocations(
    config: PostgresConfig,
    cache: TokenCache,
    metrics: Metrics,
    replay: Arc<Notify>,
    listening: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let feed = |outcome| {
        metrics
            .revocation_feed
            .get_or_create(&OutcomeLabels { outcome })
            .inc()
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            _ = stopped(&mut shutdown) => return,
            c = Listener::connect(&config) => c,
        };
        match connected {
            Ok(mut listener) => {
                feed("connected");
                listening.store(true, Ordering::SeqCst);
                backoff = Duration::from_millis(100);
                replay.notify_one();
                loop {
                    let notice = tokio::select! {
                        _ = stopped(&mut shutdown) => return,
                        n = listener.next() => n,
                    };
                    let Some(notice) = notice else { break };
                    for d in &notice.digests {
                        cache.invalidate(d);
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
                    let micros = now.saturating_sub(notice.sent_at_micros).max(0);
                    metrics
                        .revocation_propagation
                        .observe(micros as f64 / 1_000_000.0);
                }
                listening.store(false, Ordering::SeqCst);
                feed("lost");
                tracing::warn!("the revocation feed's connection was lost; reconnecting");
            }
            Err(e) => {
                feed("failed");
                tracing::warn!(error = %e, "cannot listen for revocations; retrying");
            }
        }
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Forgets rate-limit and back-off keys that have gone quiet, every minute, so that the
/// tables stay bounded however many distinct clients, users and addresses are seen.
pub async fn forget_idle_throttle_keys(
    gateway: Arc<ArcSwap<Gateway>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            // The throttle in service now (a reload may have replaced its limits).
            _ = tick.tick() => gateway.load().auth_server.throttle.forget_idle(),
        }
    }
}

/// Reloads listener certificates when their files change (checked every `interval`) and on
/// SIGHUP. A bad new certificate keeps the old one in service.
pub async fn reload_certificates(
    certs: Vec<(Arc<ReloadingCert>, Duration)>,
    metrics: Metrics,
    mut hangup: Hangups,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = certs
        .iter()
        .map(|(_, d)| *d)
        .min()
        .unwrap_or(Duration::from_secs(60));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let sighup = hangup.recv();
        #[cfg(not(unix))]
        let sighup = std::future::pending::<Option<()>>();
        let force = tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tick.tick() => false,
            _ = sighup => true,
        };
        for (cert, _) in &certs {
            let outcome = match cert.reload(force) {
                Ok(true) => {
                    tracing::info!("TLS certificate reloaded");
                    "loaded"
                }
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate reload failed; the previous certificate stays in service");
                    "failed"
                }
            };
            metrics
                .certificate_reloads
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        }
    }
}
