//! The request path built from a config: at start, and again on every reload, when the
//! generation in service lends the upstreams that did not change, with their connections.

use std::sync::Arc;

use super::Gateway;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::crypto::PasswordHasher;
use crate::metrics::{HotMetrics, Metrics};
use crate::oauth::AuthServer;
use crate::oauth::throttle::Throttle;
use crate::proxy::Upstreams;
use crate::store::SharedStore;
use crate::store::cache::TokenCache;
use crate::web::Pages;

/// What every generation of the request path shares, built once at start: a reload changes
/// none of it.
pub(crate) struct Parts {
    pub(crate) store: SharedStore,
    pub(crate) cache: TokenCache,
    pub(crate) hasher: PasswordHasher,
    pub(crate) clock: SharedClock,
    pub(crate) metrics: Metrics,
    /// The proxy listener's address (the default issuer names it).
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) tls_listener: bool,
}

impl Parts {
    /// The request path for `config`: routes, upstreams, identity headers, limits, the
    /// authorization server with its scopes and rate limits (on `throttle`), and the pages.
    /// Built at start and again on every reload, when `previous` (the request path in
    /// service) lends the upstreams that did not change, with their connections.
    pub(crate) fn gateway(
        &self,
        config: &Config,
        throttle: Arc<Throttle>,
        previous: Option<&Gateway>,
    ) -> anyhow::Result<Gateway> {
        let mut oauth = config.oauth.clone();
        let scheme = if self.tls_listener { "https" } else { "http" };
        let addr = self.addr;
        oauth
            .issuer
            .get_or_insert_with(|| format!("{scheme}://{addr}"));
        let require_tls = !self.tls_listener && !addr.ip().is_loopback() && !oauth.allow_plain_http;
        if require_tls {
            tracing::warn!(
                %addr,
                "plain HTTP on a non-loopback address: the /o/ endpoints refuse requests here; \
                 configure `tls` (or set `oauth.allow_plain_http` behind a TLS-terminating proxy)"
            );
        }
        let auth_server = AuthServer::new(
            Arc::clone(&self.store),
            self.cache.clone(),
            self.hasher.clone(),
            Arc::clone(&self.clock),
            self.metrics.clone(),
            Arc::new(oauth),
            &config.limits,
        )
        .with_throttle(throttle)
        .requiring_tls(require_tls);
        let upstreams = match previous {
            Some(p) => p.upstreams.reconfigured(config.upstreams.values())?,
            None => Upstreams::new(config.upstreams.values())?,
        };
        let hot_metrics = HotMetrics::new(
            &self.metrics,
            &config.routes,
            upstreams.iter().map(|u| (u.id(), &u.name)),
        );
        Ok(Gateway {
            routes: config.routes.clone(),
            upstreams,
            cache: self.cache.clone(),
            pages: Pages::new(auth_server.clone()),
            auth_server,
            identity_headers: config.identity_headers.clone(),
            metrics: self.metrics.clone(),
            realm: config.oauth.realm.clone(),
            request_timeout: config.limits.request_timeout,
            hot_metrics,
        })
    }
}
