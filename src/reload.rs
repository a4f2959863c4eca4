//! Config reload without a dropped request: on SIGHUP, and when the config file's contents
//! change (checked every second), the file is read and validated whole. If it is valid, a
//! new request path (routes, upstreams, scopes, identity headers, request limits, rate
//! limits: `gateway::Parts::gateway`) replaces the running one in one atomic swap; a request
//! already in flight finishes on the one it started with. If it is not, the running config
//! stays and every problem is logged with its file and line. Settings that the running
//! process cannot change (listeners, workers, TLS files, the store, the cache, connection
//! limits) are reported as needing a restart, and keep their running values.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tokio::time::MissedTickBehavior;

use crate::config::{Config, StoreConfig};
use crate::gateway::{Gateway, Parts};
use crate::metrics::OutcomeLabels;
use crate::shutdown::{Hangups, stopped};

/// How often the config file is checked for a change.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

pub struct Reloader {
    /// The config the request path was last built from.
    current: Config,
    /// The file's contents when last read, so that only a change reloads.
    text: Option<Vec<u8>>,
    parts: Parts,
    gateway: Arc<ArcSwap<Gateway>>,
}

/// What one reload did, as `portcullis_config_reloads_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The new request path serves from now on.
    Applied,
    /// The file has problems (each logged); the running config stays.
    Invalid,
    /// The file is valid but its request path could not be built (an unreadable CA file of an
    /// upstream, say); the running config stays.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Invalid => "invalid",
            Outcome::Failed => "failed",
        }
    }
}

impl Reloader {
    pub(crate) fn new(current: Config, parts: Parts, gateway: Arc<ArcSwap<Gateway>>) -> Reloader {
        let text = std::fs::read(&current.source).ok();
        Reloader {
            current,
            text,
            parts,
            gateway,
        }
    }

    /// Whether the file's contents differ from those last read.
    fn changed(&mut self) -> bool {
        let now = std::fs::read(&self.current.source).ok();
        if now.is_some() && now != self.text {
            self.text = now;
            return true;
        }
        false
    }

    /// Reads, validates and (if valid) applies the config file.
    pub fn reload(&mut self) -> Outcome {
        let started = std::time::Instant::now();
        let file = self.current.source.clone();
        let outcome = match Config::load(&file) {
            Err(e) => {
                for p in &e.problems {
                    tracing::error!(
                        file = %e.file,
                        line = p.line,
                        column = p.column,
                        problem = %p.message,
                        "config reload refused; the running config stays"
                    );
                }
                Outcome::Invalid
            }
            Ok(mut new) => {
                for setting in restart_only(&self.current, &new) {
                    tracing::warn!(
                        setting,
                        file = %file.display(),
                        "changed in the config file, but takes effect only after a restart; the running value stays"
                    );
                }
                keep_restart_only(&self.current, &mut new);
                let old = self.gateway.load();
                let throttle = old
                    .auth_server
                    .throttle
                    .reconfigured(&new.oauth.rate_limits);
                match self.parts.gateway(&new, throttle, Some(&old)) {
                    Ok(gateway) => {
                        self.gateway.store(Arc::new(gateway));
                        tracing::info!(
                            file = %file.display(),
                            routes = new.routes.len(),
                            upstreams = new.upstreams.len(),
                            took_us = started.elapsed().as_micros() as u64,
                            "config reloaded"
                        );
                        self.current = new;
                        Outcome::Applied
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), file = %file.display(), "config reload failed; the running config stays");
                        Outcome::Failed
                    }
                }
            }
        };
        self.parts
            .metrics
            .config_reloads
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
        outcome
    }
}

/// The settings of `new` that differ from `old` and that a running gateway cannot change.
pub fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let store_differs = match (&old.store, &new.store) {
        // The URL is not in the Debug output (it may hold a password).
        (StoreConfig::Postgres(a), StoreConfig::Postgres(b)) => a.url != b.url || differs(a, b),
        (a, b) => differs(a, b),
    };
    let checks: [(&'static str, bool); 10] = [
        ("listen", old.listen != new.listen),
        ("admin_listen", old.admin_listen != new.admin_listen),
        ("workers", old.workers != new.workers),
        ("tls", differs(&old.tls, &new.tls)),
        ("admin_tls", differs(&old.admin_tls, &new.admin_tls)),
        ("store", store_differs),
        ("cache", differs(&old.cache, &new.cache)),
        ("cleanup", differs(&old.cleanup, &new.cleanup)),
        (
            "limits.connection",
            differs(&old.limits.connection, &new.limits.connection),
        ),
        (
            "oauth.password_hash_concurrency",
            old.oauth.password_hash_concurrency != new.oauth.password_hash_concurrency,
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

/// `new` with the running values of what only a restart changes, so that the config kept as
/// current says what is really in force.
fn keep_restart_only(old: &Config, new: &mut Config) {
    new.listen = old.listen;
    new.admin_listen = old.admin_listen;
    new.workers = old.workers;
    new.tls = old.tls.clone();
    new.admin_tls = old.admin_tls.clone();
    new.store = old.store.clone();
    new.cache = old.cache.clone();
    new.cleanup = old.cleanup.clone();
    new.limits.connection = old.limits.connection.clone();
    new.oauth.password_hash_concurrency = old.oauth.password_hash_concurrency;
}

/// Reloads on SIGHUP, on `now` (what tests use instead of a signal) and when the file changes,
/// until shutdown.
pub async fn follow(
    mut reloader: Reloader,
    #[cfg_attr(not(unix), allow(unused_mut))] mut hangups: Hangups,
    now: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let sighup = hangups.recv();
        #[cfg(not(unix))]
        let sighup = std::future::pending::<Option<()>>();
        let asked = tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = sighup => true,
            _ = now.notified() => true,
            _ = tick.tick() => false,
        };
        // Read the file even when asked, so that the watch does not reload it once more.
        let changed = reloader.changed();
        if asked || changed {
            // Reading and validating a small file: short enough for this task's thread.
            reloader.reload();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = "
listen: 127.0.0.1:8080
admin_listen: 127.0.0.1:9090
store:
  sqlite: data/portcullis.db
oauth:
  scopes: { read: Read scope, write: Write scope }
upstreams:
  legacy: { url: http://127.0.0.1:9000 }
routes:
  - { path: /api, scopes: [read], upstream: legacy }
";

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("test.yaml"), Path::new("/etc/portcullis")).unwrap()
    }

    #[test]
    fn what_needs_a_restart() {
        let base = parse(BASE);
        let with = |from: &str, to: &str| {
            assert!(BASE.contains(from), "{from}");
            parse(&BASE.replace(from, to))
        };
        let cases: Vec<(&str, Config, Vec<&str>)> = vec![
            ("nothing", parse(BASE), vec![]),
            (
                "a route rescoped",
                with("scopes: [read]", "scopes: [write]"),
                vec![],
            ),
            (
                "an upstream moved",
                with("http://127.0.0.1:9000", "http://127.0.0.1:9001"),
                vec![],
            ),
            (
                "rate limits",
                with(
                    "  scopes: { read",
                    "  rate_limits: { per_client_per_minute: 5 }\n  scopes: { read",
                ),
                vec![],
            ),
            (
                "the listener",
                with("127.0.0.1:8080", "127.0.0.1:8081"),
                vec!["listen"],
            ),
            (
                "the store and the admin listener",
                with(
                    "admin_listen: 127.0.0.1:9090\nstore:\n  sqlite: data/portcullis.db",
                    "admin_listen: 127.0.0.1:9091\nstore:\n  sqlite: data/other.db",
                ),
                vec!["admin_listen", "store"],
            ),
            (
                "the cache",
                with("routes:", "cache: { ttl_seconds: 5 }\nroutes:"),
                vec!["cache"],
            ),
            (
                "connection limits",
                with("routes:", "limits: { max_connections: 10 }\nroutes:"),
                vec!["limits.connection"],
            ),
        ];
        for (name, new, want) in cases {
            assert_eq!(restart_only(&base, &new), want, "{name}");
        }
        // A database URL that changes only in its password is still a change of store.
        let pg = |url: &str| {
            parse(&BASE.replace("sqlite: data/portcullis.db", &format!("postgres: {url}")))
        };
        assert_eq!(
            restart_only(&pg("postgres://gw:a@db/p"), &pg("postgres://gw:b@db/p")),
            vec!["store"]
        );
    }
}
