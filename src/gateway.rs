//! The per-request pipeline of the proxy listener.
//!
//! `/o/` endpoints and the RFC 8414 metadata go to the authorization server; every other request
//! runs the phases named after its life: **route** (request target -> canonical path -> route
//! table) -> **authorize** (bearer token -> cache -> scopes) -> **upstream_request** (URI,
//! headers and a bounded body for the upstream) -> **send** -> **upstream_response** ->
//! **log**. `log` always runs, so every decision is counted once.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::config::IdentityHeaders;
use crate::crypto::Digest;
use crate::guard::{self, AuthError};
use crate::http::{Body, ErrorSource, GatewayError, is_form_urlencoded};
use crate::listener::ConnInfo;
use crate::metrics::{AuthDecisionLabels, Metrics, UpstreamLabels};
use crate::oauth::{AuthServer, Endpoint, Origin};
use crate::principal::Principal;
use crate::proxy::{
    Affinity, Forwarded, UpstreamBody, Upstreams, forwarded_for, rewrite_request_headers,
    strip_hop_by_hop, vary_on_authorization,
};
use crate::routes::{
    self, PathError, PathOptions, Route, RouteAuth, RouteTable, canonicalize, canonicalize_with,
};
use crate::store::cache::TokenCache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

/// Everything the pipeline needs, shared by all connections.
pub struct Gateway {
    pub routes: RouteTable,
    pub upstreams: Upstreams,
    pub cache: TokenCache,
    pub auth_server: AuthServer,
    pub identity_headers: IdentityHeaders,
    pub metrics: Metrics,
    pub realm: String,
    /// Time from a request's head to its response head.
    pub request_timeout: std::time::Duration,
    pub hot_metrics: HotMetrics,
}

/// Metric handles of the common outcomes, looked up once: a family lookup hashes its labels
/// under a lock on every call.
pub struct HotMetrics {
    /// By route index: the route's allow decision (`public` or `token`).
    allowed: Vec<Counter>,
    /// By upstream id: the duration of exchanges answered with a 2xx.
    upstream_2xx: Vec<Histogram>,
}

impl HotMetrics {
    pub fn new(metrics: &Metrics, routes: &RouteTable, upstreams: &Upstreams) -> HotMetrics {
        let allowed = routes
            .iter()
            .map(|r| {
                let reason = match r.auth {
                    RouteAuth::Public => "public",
                    RouteAuth::Bearer { .. } => "token",
                };
                metrics
                    .auth_decisions
                    .get_or_create(&AuthDecisionLabels {
                        route: Arc::clone(&r.id),
                        decision: "allow",
                        reason,
                    })
                    .clone()
            })
            .collect();
        let mut upstream_2xx: Vec<(usize, Histogram)> = upstreams
            .iter()
            .map(|u| {
                let h = metrics
                    .upstream_duration
                    .get_or_create(&UpstreamLabels {
                        upstream: Arc::clone(&u.name),
                        status_class: "2xx",
                    })
                    .clone();
                (u.id(), h)
            })
            .collect();
        upstream_2xx.sort_by_key(|(id, _)| *id);
        HotMetrics {
            allowed,
            upstream_2xx: upstream_2xx.into_iter().map(|(_, h)| h).collect(),
        }
    }
}

/// What the gateway keeps per client connection.
pub struct Session {
    pub conn: ConnInfo,
    /// `X-Forwarded-For` for every request on the connection.
    forwarded_for: HeaderValue,
    /// The connection's own upstream connections (HTTP/1.1 requests only).
    affinity: Affinity,
}

impl Session {
    pub fn new(conn: ConnInfo) -> Session {
        Session {
            forwarded_for: forwarded_for(conn.peer.ip()),
            conn,
            affinity: Affinity::default(),
        }
    }
}

/// State carried between the phases of one request.
struct RequestContext {
    started: Instant,
    route: Option<Arc<str>>,
    /// `Route::index` of `route`.
    route_index: Option<usize>,
    decision: &'static str,
    reason: &'static str,
    upstream: Option<Arc<str>>,
    principal: Option<Principal>,
    /// The canonical path, once known (logged without the query, which may hold anything).
    path: Option<String>,
}

const NO_ROUTE: &str = "none";

/// Where [`Gateway::resolve`] sends a request.
enum Target<'a> {
    OAuth(Endpoint),
    /// A route and the canonical path matched against it (and forwarded).
    Route(&'a Route, String),
}

impl Gateway {
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        session: Arc<Session>,
    ) -> Response<Body> {
        let mut ctx = RequestContext {
            started: Instant::now(),
            route: None,
            route_index: None,
            decision: "deny",
            reason: "no_route",
            upstream: None,
            principal: None,
            path: None,
        };
        let method = req.method().clone();
        // The head is checked and the target resolved once, for every endpoint: the /o/
        // namespace is recognised on the same canonical path that routing uses, so no
        // spelling of it (`//o/token/`, `/%6f/token/`, `/x/../o/token/`) can reach an upstream.
        let resolved = crate::request::validate(req.version(), req.uri(), req.headers())
            .map_err(GatewayError::from)
            .and_then(|authority| Ok((authority, self.resolve(&req)?)));
        let result = match resolved {
            Ok((_, Target::OAuth(endpoint))) => {
                // Boxed: the token endpoint's future is large and rare; inline, every proxied
                // request's future would be as large and be copied as often.
                let origin = Origin {
                    address: session.conn.peer.ip(),
                    tls: session.conn.tls,
                };
                let served = Box::pin(self.auth_server.handle(endpoint, req, origin));
                return match tokio::time::timeout(self.request_timeout, served).await {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(e)) => e.into_response(&self.realm),
                    Err(_) => GatewayError::RequestTimeout.into_response(&self.realm),
                };
            }
            Ok((authority, Target::Route(route, canonical))) => {
                ctx.path = Some(canonical);
                ctx.route = Some(Arc::clone(&route.id));
                ctx.route_index = Some(route.index);
                let deadline = tokio::time::Instant::from_std(ctx.started + self.request_timeout);
                self.proxy(req, route, authority, &session, &mut ctx, deadline)
                    .await
            }
            Err(e) => {
                ctx.reason = match e {
                    GatewayError::BadPath(_) => "bad_path",
                    GatewayError::BadRequest(_) => "bad_request",
                    _ => ctx.reason,
                };
                Err(e)
            }
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                match e.source() {
                    ErrorSource::Client => {}
                    ErrorSource::Upstream => {
                        tracing::warn!(error = %e, upstream = ctx.upstream.as_deref(), "upstream failure")
                    }
                    ErrorSource::Internal => tracing::error!(error = %e, "request failed"),
                }
                e.into_response(&self.realm)
            }
        };
        self.log(&ctx, &method, &resp);
        resp
    }

    /// The phases after **route** (done by [`Gateway::resolve`]) for a request to `route`.
    /// `authority` is the request's validated `Host` (or `:authority`).
    async fn proxy(
        &self,
        req: Request<Incoming>,
        route: &Route,
        authority: Option<HeaderValue>,
        session: &Session,
        ctx: &mut RequestContext,
        deadline: tokio::time::Instant,
    ) -> Result<Response<Body>, GatewayError> {
        // `deadline` (the request timeout) bounds every phase that may wait. Each is polled
        // before its timer is armed, so a phase that does not wait (a cache hit, a streamed
        // body) costs no timer, and the upstream phase arms one timer for whichever of the
        // request and response timeouts comes first.
        // authorize
        if query_has_access_token(req.uri().query()) {
            ctx.reason = "credential_in_request";
            return Err(GatewayError::CredentialInRequest);
        }
        within(deadline, self.authorize(route, &req, ctx)).await??;

        // upstream_request
        let upstream = self.upstreams.get(&route.upstream).ok_or_else(|| {
            GatewayError::Internal(format!("upstream {} missing", route.upstream))
        })?;
        ctx.upstream = Some(Arc::clone(&upstream.name));
        // The canonical path was moved into the context (for the log) and is read from there.
        let path = upstream.path_for(ctx.path.as_deref().unwrap_or_default(), req.uri().query())?;
        // HTTP/1 requests on one connection come one after another: they share the
        // connection's own upstream connection. HTTP/2 streams run at once: pooled.
        let affinity = (req.version() < Version::HTTP_2).then_some(&session.affinity);
        let forwarded = Forwarded {
            peer: session.forwarded_for.clone(),
            proto: if session.conn.tls { "https" } else { "http" },
            host: authority,
        };
        let (mut parts, body) = req.into_parts();
        let principal = ctx.principal.as_ref();
        let identity = principal.map(|p| &p.header_values);
        let body = within(
            deadline,
            bounded_body(&parts.headers, body, route.max_body_bytes),
        )
        .await??;
        rewrite_request_headers(
            &mut parts.headers,
            &self.identity_headers,
            &forwarded,
            identity,
        );
        let req = Request::from_parts(parts, body);

        // send
        let sent = Instant::now();
        let result = upstream.send(req, path, affinity, deadline).await;
        let status_class = match &result {
            Ok(resp) => Metrics::status_class(resp.status().as_u16()),
            Err(GatewayError::UpstreamTimeout | GatewayError::RequestTimeout) => "timeout",
            Err(GatewayError::BodyTooLarge) => "request_too_large",
            Err(_) => "error",
        };
        let elapsed = sent.elapsed().as_secs_f64();
        match self.hot_metrics.upstream_2xx.get(upstream.id()) {
            Some(h) if status_class == "2xx" => h.observe(elapsed),
            _ => self
                .metrics
                .upstream_duration
                .get_or_create(&UpstreamLabels {
                    upstream: Arc::clone(&upstream.name),
                    status_class,
                })
                .observe(elapsed),
        }

        // upstream_response
        let mut resp = result?;
        // Hop-by-hop headers go, and with `Transfer-Encoding` a stale `Content-Length` beside
        // it (RFC 9112 §6.3): the body is re-framed for the client.
        strip_hop_by_hop(resp.headers_mut());
        if ctx.principal.is_some() {
            vary_on_authorization(resp.headers_mut());
        }
        Ok(resp.map(http_body_util::Either::Right))
    }

    /// Where a request goes: an authorization-server endpoint, or a route with the canonical
    /// path that is matched and forwarded. The strict canonical form is tried first; a form
    /// only some routes accept (encoded slashes, `;`, double encoding) is accepted when the
    /// route it lands on opts in. Nothing in the `/o/` namespace is ever routed, in whatever
    /// spelling (see [`routes::is_reserved`]).
    fn resolve(&self, req: &Request<Incoming>) -> Result<Target<'_>, GatewayError> {
        // Only origin-form targets: an absolute-form (or authority-form) HTTP/1 target could
        // be read differently by the upstream. HTTP/2 always carries scheme and authority.
        if req.version() < Version::HTTP_2
            && (req.uri().scheme().is_some() || req.uri().authority().is_some())
        {
            return Err(PathError::NotOriginForm.into());
        }
        let path = req.uri().path();
        match canonicalize(path) {
            Ok(canonical) => {
                if let Some(endpoint) = Endpoint::for_path(&canonical) {
                    return Ok(Target::OAuth(endpoint));
                }
                if routes::is_reserved(&canonical) {
                    return Err(GatewayError::RouteNotFound);
                }
                let route = self
                    .routes
                    .find(req.method(), &canonical)
                    .ok_or(GatewayError::RouteNotFound)?;
                Ok(Target::Route(route, canonical.into_owned()))
            }
            Err(
                strict @ (PathError::EncodedSeparator
                | PathError::Parameter
                | PathError::DoubleEncoded),
            ) => {
                let lenient =
                    canonicalize_with(path, PathOptions::LENIENT).map_err(GatewayError::BadPath)?;
                if routes::is_reserved(&lenient) {
                    return Err(GatewayError::BadPath(strict));
                }
                let route = self
                    .routes
                    .find(req.method(), &lenient)
                    .ok_or(GatewayError::BadPath(strict))?;
                let canonical =
                    canonicalize_with(path, route.path_options).map_err(GatewayError::BadPath)?;
                Ok(Target::Route(route, canonical.into_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn authorize(
        &self,
        route: &Route,
        req: &Request<Incoming>,
        ctx: &mut RequestContext,
    ) -> Result<(), GatewayError> {
        let required = match &route.auth {
            RouteAuth::Public => {
                ctx.decision = "allow";
                ctx.reason = "public";
                return Ok(());
            }
            RouteAuth::Bearer { scopes } => scopes,
        };
        let outcome: Result<Principal, GatewayError> = async {
            let token = guard::bearer_token(req.headers())?;
            let principal = self
                .cache
                .principal(Digest::of(token))
                .await?
                .ok_or(AuthError::InvalidToken("unknown, revoked or expired"))?;
            guard::check_scopes(&principal, required)?;
            Ok(principal)
        }
        .await;
        match outcome {
            Ok(principal) => {
                ctx.decision = "allow";
                ctx.reason = "token";
                ctx.principal = Some(principal);
                Ok(())
            }
            Err(e) => {
                ctx.reason = match &e {
                    GatewayError::Auth(a) => a.reason(),
                    _ => "store_error",
                };
                Err(e)
            }
        }
    }

    fn log(&self, ctx: &RequestContext, method: &http::Method, resp: &Response<Body>) {
        let route = ctx.route.clone().unwrap_or_else(|| Arc::from(NO_ROUTE));
        let hot = ctx
            .route_index
            .filter(|_| ctx.decision == "allow")
            .and_then(|i| self.hot_metrics.allowed.get(i));
        match hot {
            Some(counter) => {
                counter.inc();
            }
            None => {
                self.metrics
                    .auth_decisions
                    .get_or_create(&AuthDecisionLabels {
                        route: Arc::clone(&route),
                        decision: ctx.decision,
                        reason: ctx.reason,
                    })
                    .inc();
            }
        }
        let p = ctx.principal.as_ref();
        tracing::info!(
            target: "portcullis::access",
            method = %method,
            path = ctx.path.as_deref().unwrap_or(""),
            route = %route,
            status = resp.status().as_u16(),
            decision = ctx.decision,
            reason = ctx.reason,
            client_id = p.map(|p| &*p.client_id),
            user = p.and_then(|p| p.username.as_deref()),
            elapsed_us = ctx.started.elapsed().as_micros() as u64,
            "request"
        );
    }
}

/// `phase`, or a request timeout once `deadline` passes.
async fn within<T>(
    deadline: tokio::time::Instant,
    phase: impl Future<Output = T>,
) -> Result<T, GatewayError> {
    tokio::time::timeout_at(deadline, phase)
        .await
        .map_err(|_| GatewayError::RequestTimeout)
}

/// True when the query string carries an `access_token` parameter (RFC 6750 §2.3), which the
/// gateway refuses rather than silently ignore or forward. Parameters are split at `&` and at
/// `;`, which some frameworks also read as a separator.
fn query_has_access_token(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        (q.contains("access_token") || q.contains('%'))
            && q.split(['&', ';']).any(|pair| {
                form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .is_some_and(|(k, _)| k == "access_token")
            })
    })
}

/// The request body for the upstream, at most `max` bytes: refused at once when the declared
/// length is larger, cut off (413) when a streamed body grows past it. A form body is read
/// first so that an `access_token` parameter in it (RFC 6750 §2.2) can be refused.
async fn bounded_body(
    headers: &http::HeaderMap,
    body: Incoming,
    max: u64,
) -> Result<UpstreamBody, GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(GatewayError::BodyTooLarge);
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    if is_form_urlencoded(headers) {
        let bytes: Bytes = match Limited::new(body, limit).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(GatewayError::BodyTooLarge);
            }
            Err(_) => return Err(GatewayError::BodyUnreadable),
        };
        if form_urlencoded::parse(&bytes).any(|(k, _)| k == "access_token") {
            return Err(GatewayError::CredentialInRequest);
        }
        return Ok(Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync());
    }
    Ok(Limited::new(body, limit).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_token_in_query() {
        let cases = [
            (None, false),
            (Some("a=1"), false),
            (Some("access_token=x"), true),
            (Some("a=1&access_token=x"), true),
            (Some("access_tokens=x"), false),
            (Some("x=access_token"), false),
            (Some("access%5Ftoken=x"), true),
            (Some("a=1;access_token=x"), true),
            (Some("a=1;access%5ftoken=x"), true),
            (Some("a=access_token;b=1"), false),
            (Some("access_token"), true),
        ];
        for (q, want) in cases {
            assert_eq!(query_has_access_token(q), want, "{q:?}");
        }
    }
}
