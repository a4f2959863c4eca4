//! Resident memory per cached token at one million live tokens.
//!
//! Fills an SQLite store with 1,000,000 access tokens (10,000 users, 100 clients), reads each
//! once from the store (so that the store's own buffers are at their working size), then looks
//! every one up through the token cache, and reports the growth of the process's resident set
//! over that last step divided by the number of cached tokens. `cargo bench --bench cache_memory [-- COUNT]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::clock::{Clock, SystemClock};
use portcullis::config::CacheConfig;
use portcullis::crypto::Digest;
use portcullis::metrics::Metrics;
use portcullis::scope::ScopeSet;
use portcullis::store::cache::TokenCache;
use portcullis::store::sqlite::SqliteStore;
use portcullis::store::{
    AccessTokenRecord, ClientRecord, GrantType, SharedStore, TokenMeta, UserRecord,
};
use tokio::task::JoinSet;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; an optional number overrides the token count, and
    // `ttl=SECONDS` measures with a cache time-to-live.
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let ttl: Option<Duration> = std::env::args()
        .find_map(|a| a.strip_prefix("ttl=").and_then(|t| t.parse().ok()))
        .map(Duration::from_secs);
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("mem.db")).unwrap());
    let now = SystemClock.now();
    for c in 0..100 {
        store
            .add_client(ClientRecord {
                client_id: format!("client-{c:027}"),
                name: format!("client {c}"),
                secret_digest: Some(Digest::of("x")),
                grants: vec![GrantType::Password],
                scopes: ScopeSet::parse("read write").unwrap(),
                created_at: now,
                redirect_uris: Vec::new(),
                skip_consent: false,
                owner: None,
                imported_secret: None,
            })
            .await
            .unwrap();
    }
    for u in 0..10_000 {
        store
            .add_user(UserRecord {
                username: format!("user{u:05}@example.com"),
                password_hash: "$argon2id$unused".into(),
                created_at: now,
                is_admin: false,
            })
            .await
            .unwrap();
    }
    let digests: Vec<Digest> = (0..count)
        .map(|i| Digest::of(&format!("pcat_token-{i}")))
        .collect();
    let started = Instant::now();
    let mut pending = JoinSet::new();
    for (i, d) in digests.iter().enumerate() {
        let (store, digest) = (Arc::clone(&store), *d);
        pending.spawn(async move {
            store
                .insert_tokens(
                    AccessTokenRecord {
                        meta: TokenMeta {
                            digest,
                            client_id: format!("client-{:027}", i % 100),
                            username: Some(format!("user{:05}@example.com", i % 10_000)),
                            scopes: ScopeSet::parse(if i % 2 == 0 { "read" } else { "read write" })
                                .unwrap(),
                            issued_at: now,
                            expires_at: now + 3600,
                            revoked_at: None,
                        },
                        refresh: None,
                        family: digest,
                    },
                    None,
                )
                .await
                .unwrap()
        });
        if pending.len() >= 2048 {
            pending.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = pending.join_next().await {
        r.unwrap();
    }
    eprintln!("stored {count} tokens in {:.1?}", started.elapsed());

    // Every token read once from the store, past the cache, in the same way the cache will
    // read them: the store's page caches and the blocking threads reach their working size
    // now, so that the growth measured below is the token cache's alone.
    let mut warm = JoinSet::new();
    for chunk in digests.chunks(count.div_ceil(64)) {
        let (store, chunk) = (Arc::clone(&store), chunk.to_vec());
        warm.spawn(async move {
            for d in chunk {
                assert!(store.access_token(d).await.unwrap().is_some());
            }
        });
    }
    while let Some(r) = warm.join_next().await {
        r.unwrap();
    }

    let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
    let config = CacheConfig {
        max_entries: count as u64,
        ttl,
        revocation_poll: std::time::Duration::from_secs(1),
    };
    let cache = TokenCache::new(store, Arc::new(SystemClock), metrics, &config);
    let before = resident_bytes();
    let started = Instant::now();
    let mut lookups = JoinSet::new();
    for chunk in digests.chunks(count.div_ceil(64)) {
        let (cache, chunk) = (cache.clone(), chunk.to_vec());
        lookups.spawn(async move {
            for d in chunk {
                assert!(cache.principal(d).await.unwrap().is_some());
            }
        });
    }
    while let Some(r) = lookups.join_next().await {
        r.unwrap();
    }
    cache.settle();
    let after = resident_bytes();
    let cached = cache.entry_count();
    eprintln!("cached {cached} tokens in {:.1?}", started.elapsed());
    println!(
        "ttl {ttl:?}: resident memory: {:.1} MiB before, {:.1} MiB after; {cached} cached tokens; {:.0} bytes per cached token",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 / cached.max(1) as f64
    );
}

/// The binary's allocator, so that the figure is the binary's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
