//! Wiring: a validated [`Config`] becomes a store, a cache, metrics, routes and listeners.
//! [`start`] binds the listeners and returns a [`Running`] gateway that tests and the binary
//! stop the same way: signal, then drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::clock::SharedClock;
use crate::config::{Config, StoreConfig};
use crate::crypto::PasswordHasher;
use crate::gateway::Gateway;
use crate::lifecycle;
use crate::listener::{ConnectionLimits, serve};
use crate::metrics::Metrics;
use crate::oauth::AuthServer;
use crate::proxy::Upstreams;
use crate::store::cache::TokenCache;
use crate::store::sqlite::SqliteStore;
use crate::store::{SharedStore, StoreError};

/// Opens the configured store (creating an SQLite file on first use).
pub async fn open_store(config: &Config) -> Result<SharedStore, StoreError> {
    match &config.store {
        StoreConfig::Sqlite { path } => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path)).await??;
            Ok(Arc::new(store))
        }
    }
}

/// A started gateway.
pub struct Running {
    /// Where the proxy and `/o/` endpoints listen (the real port when the config said 0).
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub store: SharedStore,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Signals shutdown and waits until every connection has drained.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds the configured listeners and serves until [`Running::shutdown`].
pub async fn start(
    config: Config,
    store: SharedStore,
    clock: SharedClock,
) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (`listen` in {})",
            config.listen,
            config.source.display()
        )
    })?;
    let addr = listener.local_addr()?;
    let mut oauth = config.oauth.clone();
    oauth.issuer.get_or_insert_with(|| format!("http://{addr}"));
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let cache = TokenCache::new(
        Arc::clone(&store),
        Arc::clone(&clock),
        metrics.clone(),
        config.cache.max_entries,
        config.cache.ttl,
    );
    let hasher = tokio::task::spawn_blocking({
        let n = config.oauth.password_hash_concurrency;
        move || PasswordHasher::new(n)
    })
    .await??;
    let auth_server = AuthServer::new(
        Arc::clone(&store),
        cache.clone(),
        hasher,
        Arc::clone(&clock),
        metrics.clone(),
        Arc::new(oauth),
        config.limits.token_request_max_bytes,
    );
    let gateway = Arc::new(Gateway {
        routes: config.routes.clone(),
        upstreams: Upstreams::new(config.upstreams.values()),
        cache: cache.clone(),
        auth_server,
        identity_headers: config.identity_headers.clone(),
        metrics: metrics.clone(),
        realm: config.oauth.realm.clone(),
    });

    let limits = ConnectionLimits {
        max_connections: config.limits.max_connections,
        header_read_timeout: config.limits.header_read_timeout,
        drain_grace: Duration::from_secs(30),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let admin_addr = match config.admin_listen {
        Some(admin_listen) => {
            let admin_listener = TcpListener::bind(admin_listen).await.with_context(|| {
                format!(
                    "cannot listen on {admin_listen} (`admin_listen` in {})",
                    config.source.display()
                )
            })?;
            let admin_addr = admin_listener.local_addr()?;
            let admin = Arc::new(Admin {
                registry,
                store: Arc::clone(&store),
            });
            let admin_limits = ConnectionLimits {
                max_connections: 64,
                ..limits.clone()
            };
            tasks.push(tokio::spawn(serve(
                admin_listener,
                admin_limits,
                shutdown_rx.clone(),
                move |req, _| Arc::clone(&admin).handle(req),
            )));
            Some(admin_addr)
        }
        None => None,
    };

    tasks.push(tokio::spawn(lifecycle::sweep_periodically(
        Arc::clone(&store),
        metrics,
        Arc::clone(&clock),
        config.cleanup.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(lifecycle::follow_revocations(
        Arc::clone(&store),
        cache,
        config.cache.revocation_poll,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(serve(
        listener,
        limits,
        shutdown_rx,
        move |req, peer| Arc::clone(&gateway).handle(req, peer),
    )));
    tracing::info!(%addr, admin = ?admin_addr, routes = config.routes.len(), "portcullis listening");
    Ok(Running {
        addr,
        admin_addr,
        store,
        shutdown,
        tasks,
    })
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining connections");
}
