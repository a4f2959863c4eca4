//! Prometheus metric families, registered on a registry the application owns (no globals).
//! Every label value comes from the config or from a fixed set, never from a request.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::routes::{RouteAuth, RouteTable};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthDecisionLabels {
    /// Route id from the config, or `none` when no route matched.
    pub route: Arc<str>,
    /// `allow` or `deny` ([`Reason::decision`]).
    pub decision: &'static str,
    /// [`Reason::as_str`].
    pub reason: &'static str,
}

/// Why a proxied request was allowed or denied. Set once from the request's outcome, it is
/// both labels of `portcullis_auth_decisions_total`: the decision follows from the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A valid token with the route's scopes.
    Token,
    /// A public (`auth: none`) route.
    Public,
    NoRoute,
    BadPath,
    /// A missing, repeated or invalid `Host`, or two `Content-Type` fields.
    BadRequest,
    MissingToken,
    InvalidToken,
    InsufficientScope,
    /// A token in the query string or a form body (RFC 6750 §2.1 only).
    CredentialInRequest,
    /// The store could not answer the token lookup.
    StoreError,
    /// Refused before authorization finished for another cause (the request timed out, its
    /// body could not be read).
    Incomplete,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Token => "token",
            Reason::Public => "public",
            Reason::NoRoute => "no_route",
            Reason::BadPath => "bad_path",
            Reason::BadRequest => "bad_request",
            Reason::MissingToken => "missing_token",
            Reason::InvalidToken => "invalid_token",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::CredentialInRequest => "credential_in_request",
            Reason::StoreError => "store_error",
            Reason::Incomplete => "incomplete",
        }
    }

    pub fn decision(self) -> &'static str {
        match self {
            Reason::Token | Reason::Public => "allow",
            _ => "deny",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenIssuedLabels {
    /// `password`, `client_credentials`, `refresh_token`, or `other` for anything else.
    pub grant_type: &'static str,
    /// `issued`, or the RFC 6749 §5.2 error code returned.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: Arc<str>,
    /// `2xx` … `5xx`, or `error` (unreachable) / `timeout`.
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevokedLabels {
    /// `access` or `refresh`.
    pub kind: &'static str,
    /// `endpoint` (RFC 7009), `rotation`, `reuse` (a family revoked after refresh-token reuse)
    /// or `admin` (the CLI).
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThrottledLabels {
    /// `client`, `user` or `address`.
    pub key: &'static str,
    /// `rate` (per-minute limit) or `backoff` (after failed attempts).
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `access` or `refresh`.
    pub kind: &'static str,
}

/// All metric families of one gateway instance.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub auth_decisions: Family<AuthDecisionLabels, Counter>,
    pub tokens_issued: Family<TokenIssuedLabels, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_entries: Gauge,
    /// 1 while the store takes writes, as of the last `/readyz` probe.
    pub ready: Gauge,
    pub upstream_duration: Family<UpstreamLabels, Histogram>,
    pub revocation_requests: Family<OutcomeLabels, Counter>,
    pub tokens_revoked: Family<RevokedLabels, Counter>,
    pub introspections: Family<OutcomeLabels, Counter>,
    pub refresh_reuse_detected: Counter,
    pub tokens_swept: Family<KindLabels, Counter>,
    pub live_tokens: Family<KindLabels, Gauge>,
    pub token_throttled: Family<ThrottledLabels, Counter>,
    pub certificate_reloads: Family<OutcomeLabels, Counter>,
    pub config_reloads: Family<OutcomeLabels, Counter>,
    pub authorizations: Family<OutcomeLabels, Counter>,
    pub sign_ins: Family<OutcomeLabels, Counter>,
    pub revocation_propagation: Histogram,
    pub revocation_feed: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            auth_decisions: Family::default(),
            tokens_issued: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_entries: Gauge::default(),
            ready: Gauge::default(),
            upstream_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            revocation_requests: Family::default(),
            tokens_revoked: Family::default(),
            introspections: Family::default(),
            refresh_reuse_detected: Counter::default(),
            tokens_swept: Family::default(),
            live_tokens: Family::default(),
            token_throttled: Family::default(),
            certificate_reloads: Family::default(),
            config_reloads: Family::default(),
            authorizations: Family::default(),
            sign_ins: Family::default(),
            revocation_propagation: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            revocation_feed: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("portcullis");
        r.register(
            "auth_decisions",
            "Authorization decisions on proxied requests, by route, decision and reason",
            m.auth_decisions.clone(),
        );
        r.register(
            "token_issued",
            "Token endpoint requests, by grant type and outcome",
            m.tokens_issued.clone(),
        );
        r.register(
            "token_cache_hits",
            "Bearer token lookups answered by the cache",
            m.cache_hits.clone(),
        );
        r.register(
            "token_cache_misses",
            "Bearer token lookups that went to the store",
            m.cache_misses.clone(),
        );
        r.register(
            "token_cache_entries",
            "Tokens in the cache after the last sweep",
            m.cache_entries.clone(),
        );
        r.register(
            "upstream_request_duration_seconds",
            "Time from sending a request upstream until its response headers arrived",
            m.upstream_duration.clone(),
        );
        r.register(
            "revocation_requests",
            "Revocation endpoint requests, by outcome (revoked, unknown_token, invalid_client, invalid_request)",
            m.revocation_requests.clone(),
        );
        r.register(
            "tokens_revoked",
            "Tokens revoked, by kind and cause",
            m.tokens_revoked.clone(),
        );
        r.register(
            "introspections",
            "Introspection requests, by outcome (active, inactive, invalid_client, invalid_request)",
            m.introspections.clone(),
        );
        r.register(
            "refresh_reuse_detected",
            "Rotated refresh tokens presented after the grace period (their families were revoked)",
            m.refresh_reuse_detected.clone(),
        );
        r.register(
            "tokens_swept",
            "Expired or revoked tokens deleted by the sweeper",
            m.tokens_swept.clone(),
        );
        r.register(
            "store_live_tokens",
            "Unrevoked, unexpired tokens in the store at the last sweep",
            m.live_tokens.clone(),
        );
        r.register(
            "authorizations",
            "Authorization endpoint outcomes (approved, denied, refused, or the error sent back to the client)",
            m.authorizations.clone(),
        );
        r.register(
            "sign_ins",
            "Sign-ins at /o/login/, by outcome (signed_in, failed, throttled)",
            m.sign_ins.clone(),
        );
        r.register(
            "revocation_propagation_seconds",
            "PostgreSQL replicas: time from a revocation's notification by the revoking replica to its invalidation in this one's cache",
            m.revocation_propagation.clone(),
        );
        r.register(
            "revocation_feed",
            "PostgreSQL replicas: the revocation feed's connection, by outcome (connected, lost, failed)",
            m.revocation_feed.clone(),
        );
        r.register(
            "ready",
            "1 when the last /readyz probe found the store taking writes (1 from start, once the store opened), 0 when it did not",
            m.ready.clone(),
        );
        r.register(
            "config_reloads",
            "Config reloads (SIGHUP or a change of the file), by outcome (applied, invalid, failed)",
            m.config_reloads.clone(),
        );
        r.register(
            "tls_certificate_reloads",
            "Listener certificate reloads after a change on disk or SIGHUP, by outcome (loaded, failed)",
            m.certificate_reloads.clone(),
        );
        r.register(
            "token_throttled",
            "Token, revocation and introspection requests refused with 429, by key and cause",
            m.token_throttled.clone(),
        );
        m
    }

    /// Counts tokens revoked for `cause`.
    pub fn count_revoked(&self, cause: &'static str, access: usize, refresh: usize) {
        for (kind, n) in [("access", access), ("refresh", refresh)] {
            if n > 0 {
                self.tokens_revoked
                    .get_or_create(&RevokedLabels { kind, cause })
                    .inc_by(n as u64);
            }
        }
    }

    pub fn status_class(status: u16) -> &'static str {
        match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        }
    }
}

/// Metric handles of the common outcomes, looked up once: a family lookup hashes its labels
/// under a lock on every call.
pub struct HotMetrics {
    /// By route index: the route's allow decision (`public` or `token`).
    allowed: Vec<(Reason, Counter)>,
    /// By upstream id: the duration of exchanges answered with a 2xx.
    upstream_2xx: Vec<Histogram>,
}

impl HotMetrics {
    /// Handles for every route of `routes` and every upstream of `upstreams` (id, name).
    pub fn new<'a>(
        metrics: &Metrics,
        routes: &RouteTable,
        upstreams: impl IntoIterator<Item = (usize, &'a Arc<str>)>,
    ) -> HotMetrics {
        let allowed = routes
            .iter()
            .map(|r| {
                let reason = match r.auth {
                    RouteAuth::Public => Reason::Public,
                    RouteAuth::Bearer { .. } => Reason::Token,
                };
                let counter = metrics
                    .auth_decisions
                    .get_or_create(&AuthDecisionLabels {
                        route: Arc::clone(&r.id),
                        decision: reason.decision(),
                        reason: reason.as_str(),
                    })
                    .clone();
                (reason, counter)
            })
            .collect();
        let mut upstream_2xx: Vec<(usize, Histogram)> = upstreams
            .into_iter()
            .map(|(id, name)| {
                let h = metrics
                    .upstream_duration
                    .get_or_create(&UpstreamLabels {
                        upstream: Arc::clone(name),
                        status_class: "2xx",
                    })
                    .clone();
                (id, h)
            })
            .collect();
        upstream_2xx.sort_by_key(|(id, _)| *id);
        HotMetrics {
            allowed,
            upstream_2xx: upstream_2xx.into_iter().map(|(_, h)| h).collect(),
        }
    }
}

impl Metrics {
    /// Counts one decision on `route` (its id and index, when one matched).
    pub fn count_decision(
        &self,
        hot: &HotMetrics,
        route: Option<(&Arc<str>, usize)>,
        reason: Reason,
    ) {
        if let Some((_, index)) = route
            && let Some((allowed, counter)) = hot.allowed.get(index)
            && *allowed == reason
        {
            counter.inc();
            return;
        }
        let route = route.map_or_else(|| Arc::from("none"), |(id, _)| Arc::clone(id));
        self.auth_decisions
            .get_or_create(&AuthDecisionLabels {
                route,
                decision: reason.decision(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Records how long an exchange with upstream `id` (`name`) took, by its status class.
    pub fn observe_upstream(
        &self,
        hot: &HotMetrics,
        id: usize,
        name: &Arc<str>,
        status_class: &'static str,
        seconds: f64,
    ) {
        match hot.upstream_2xx.get(id) {
            Some(h) if status_class == "2xx" => h.observe(seconds),
            _ => self
                .upstream_duration
                .get_or_create(&UpstreamLabels {
                    upstream: Arc::clone(name),
                    status_class,
                })
                .observe(seconds),
        }
    }
}

/// Renders a registry in the Prometheus/OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
