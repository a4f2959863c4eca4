//! Wiring: a validated [`Config`] becomes a store, a cache, metrics, routes and listeners.
//! [`start`] binds the listeners and returns a [`Running`] gateway that tests and the binary
//! stop the same way: signal, then drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::clock::SharedClock;
use crate::config::{Config, StoreConfig, TlsConfig};
use crate::crypto::PasswordHasher;
use crate::gateway::{Parts, Session};
use crate::lifecycle;
use crate::listener::{ConnectionLimits, Workers, serve, serve_on_workers};
use crate::metrics::Metrics;
use crate::oauth::throttle::Throttle;
use crate::reload::{self, Reloader};
use crate::store::cache::TokenCache;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{SharedStore, StoreError};
use crate::tls::{self, ReloadingCert};

/// Opens the configured store, creating an SQLite file on first use (the gateway, the demo,
/// `portcullis migrate`).
pub async fn open_store(config: &Config) -> Result<SharedStore, StoreError> {
    open_store_with(config, true).await
}

/// Opens the configured store, which must exist (management commands: a mistyped path or a
/// deleted file must not silently become a new, empty database).
pub async fn open_existing_store(config: &Config) -> Result<SharedStore, StoreError> {
    open_store_with(config, false).await
}

async fn open_store_with(config: &Config, create: bool) -> Result<SharedStore, StoreError> {
    match &config.store {
        StoreConfig::Sqlite { path, busy_timeout } => {
            let path = path.clone();
            let options = SqliteOptions {
                create,
                busy_timeout: *busy_timeout,
            };
            let store = tokio::task::spawn_blocking(move || SqliteStore::open_with(&path, options))
                .await
                .map_err(|e| StoreError::Backend(Box::new(e)))??;
            Ok(Arc::new(store))
        }
        // A PostgreSQL database is the operator's to create; `create` only concerns files.
        StoreConfig::Postgres(options) => {
            let options = options.clone();
            let store = tokio::task::spawn_blocking(move || PostgresStore::open(&options))
                .await
                .map_err(|e| StoreError::Backend(Box::new(e)))??;
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
    /// Asks for a config reload, as SIGHUP does (tests: a signal would reach every gateway
    /// in the process).
    reload_now: Arc<tokio::sync::Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Reloads the config file now, as SIGHUP does.
    pub fn reload(&self) {
        self.reload_now.notify_one();
    }

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
    let source = config.source.display().to_string();
    // One socket per worker, each accepting on its worker's own event loop.
    let listeners = crate::listener::bind_shared(config.listen, config.workers)
        .with_context(|| format!("cannot listen on {} (`listen` in {source})", config.listen))?;
    let addr = listeners[0].local_addr()?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let cache = TokenCache::new(
        Arc::clone(&store),
        Arc::clone(&clock),
        metrics.clone(),
        &config.cache,
    );
    let hasher = tokio::task::spawn_blocking({
        let n = config.oauth.password_hash_concurrency;
        move || PasswordHasher::new(n)
    })
    .await??;
    let parts = Parts {
        store: Arc::clone(&store),
        cache: cache.clone(),
        hasher,
        clock: Arc::clone(&clock),
        metrics: metrics.clone(),
        addr,
        tls_listener: config.tls.is_some(),
    };
    let throttle = Arc::new(Throttle::new(config.oauth.rate_limits.clone()));
    let gateway = Arc::new(ArcSwap::from_pointee(
        parts.gateway(&config, throttle, None)?,
    ));
    let limits = config.limits.connection.clone();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut certs = Vec::new();
    let tls = match &config.tls {
        Some(t) => Some(acceptor(t, &mut certs)?),
        None => None,
    };

    let admin_addr = match config.admin_listen {
        Some(admin_listen) => {
            let admin_listener = TcpListener::bind(admin_listen).await.with_context(|| {
                format!("cannot listen on {admin_listen} (`admin_listen` in {source})")
            })?;
            let admin_addr = admin_listener.local_addr()?;
            let admin_tls = match &config.admin_tls {
                Some(t) => Some(acceptor(t, &mut certs)?),
                None => None,
            };
            // The store opened: ready until a probe finds otherwise.
            metrics.ready.set(1);
            let admin = Arc::new(Admin {
                registry,
                store: Arc::clone(&store),
                ready: metrics.ready.clone(),
            });
            tasks.push(tokio::spawn(serve(
                admin_listener,
                admin_tls,
                ConnectionLimits::internal(64),
                shutdown_rx.clone(),
                move |_| {
                    let admin = Arc::clone(&admin);
                    move |req| Arc::clone(&admin).handle(req)
                },
            )));
            Some(admin_addr)
        }
        None => None,
    };

    tasks.push(tokio::spawn(lifecycle::sweep_periodically(
        Arc::clone(&store),
        cache.clone(),
        metrics.clone(),
        Arc::clone(&clock),
        config.cleanup.clone(),
        shutdown_rx.clone(),
    )));
    let replay = Arc::new(tokio::sync::Notify::new());
    let feed = match &config.store {
        StoreConfig::Postgres(pg) => {
            let listening = Arc::new(std::sync::atomic::AtomicBool::new(false));
            tasks.push(tokio::spawn(lifecycle::listen_for_revocations(
                pg.clone(),
                cache.clone(),
                metrics.clone(),
                Arc::clone(&replay),
                Arc::clone(&listening),
                shutdown_rx.clone(),
            )));
            Some(listening)
        }
        StoreConfig::Sqlite { .. } => None,
    };
    tasks.push(tokio::spawn(lifecycle::follow_revocations(
        Arc::clone(&store),
        cache,
        config.cache.revocation_poll,
        replay,
        feed,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(lifecycle::forget_idle_throttle_keys(
        Arc::clone(&gateway),
        shutdown_rx.clone(),
    )));
    if !certs.is_empty() {
        // Registered here, before `start` returns, so that a SIGHUP sent from then on reloads
        // the certificates (instead of reaching a process with no handler yet).
        let hangup = crate::shutdown::hangups()?;
        tasks.push(tokio::spawn(lifecycle::reload_certificates(
            certs,
            metrics.clone(),
            hangup,
            shutdown_rx.clone(),
        )));
    }
    // The config reloads on SIGHUP (registered now, like the certificates' handler: with none,
    // a SIGHUP would end the process) and when its file changes.
    let reload_now = Arc::new(tokio::sync::Notify::new());
    tasks.push(tokio::spawn(reload::follow(
        Reloader::new(config.clone(), parts, Arc::clone(&gateway)),
        crate::shutdown::hangups()?,
        Arc::clone(&reload_now),
        shutdown_rx.clone(),
    )));
    let workers = Arc::new(
        Workers::start(config.workers, "portcullis-worker")
            .context("cannot start the proxy worker threads")?,
    );
    tasks.push(tokio::spawn(async move {
        serve_on_workers(listeners, tls, limits, shutdown_rx, &workers, move |conn| {
            let gateway = Arc::clone(&gateway);
            let session = Arc::new(Session::new(conn));
            // The request path as configured when the request arrives; a reload meanwhile
            // changes what later requests get, never this one.
            move |req| gateway.load_full().handle(req, Arc::clone(&session))
        })
        .await;
        workers.stop().await;
    }));
    tracing::info!(%addr, admin = ?admin_addr, tls = config.tls.is_some(), workers = config.workers, routes = config.routes.len(), "portcullis listening");
    Ok(Running {
        addr,
        admin_addr,
        store,
        shutdown,
        reload_now,
        tasks,
    })
}

/// A TLS acceptor for a listener; its certificate joins `certs`, the reloadable ones.
fn acceptor(
    config: &TlsConfig,
    certs: &mut Vec<(Arc<ReloadingCert>, Duration)>,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let cert = Arc::new(ReloadingCert::load(&config.cert, &config.key)?);
    let server = tls::server_config(Arc::clone(&cert))?;
    certs.push((cert, config.reload_interval));
    Ok(tokio_rustls::TlsAcceptor::from(server))
}
