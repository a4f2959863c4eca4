//! The per-request pipeline of the proxy listener: the request's life in one place.
//!
//! Every request's head is checked (`request::validate`) and its target resolved once
//! (`routes::resolve`); `/o/` endpoints and the RFC 8414 metadata go to the authorization
//! server; every other request runs the phases named after its life: **route** (request target
//! -> canonical path -> route table) -> **authorize** (bearer token -> cache -> scopes) ->
//! **upstream_request** (URI, headers and a bounded body for the upstream) -> **send** ->
//! **upstream_response** -> **log**. `log` always runs, so every decision is counted once,
//! with the reason its outcome gives. The phases that need no waiting run at the call, before
//! the request's future is first polled ([`Gateway::handle`] says why): most requests have
//! their upstream request built there.

use std::sync::Arc;

use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::config::IdentityHeaders;
use crate::guard::{self, AuthError};
use crate::http::{Body, ErrorSource, GatewayError};
use crate::listener::ConnInfo;
use crate::metrics::{HotMetrics, Metrics, Reason};
use crate::oauth::{AuthServer, Endpoint, Origin};
use crate::principal::Principal;
use crate::proxy::{
    Affinity, Forwarded, GatewayFields, Prepared, UpstreamBody, Upstreams, forwarded_for,
    strip_hop_by_hop, strip_request_headers, vary_on_authorization,
};
use crate::request_id::{self, X_REQUEST_ID};
use crate::routes::{CanonicalPath, Resolved, Route, RouteAuth, RouteTable, resolve};
use crate::store::cache::{LastToken, Miss, TokenCache};
use crate::web::{Page, Pages};

mod body;
mod build;
mod within;

use self::body::{Streamed, read_form, streamed_body};
pub(crate) use self::build::Parts;
use self::within::within;

/// Everything the pipeline needs, shared by all connections.
pub struct Gateway {
    pub routes: RouteTable,
    pub upstreams: Upstreams,
    pub cache: TokenCache,
    pub auth_server: AuthServer,
    /// The person-facing pages under `/o/` (sign-in, consent, applications).
    pub pages: Pages,
    pub identity_headers: IdentityHeaders,
    pub metrics: Metrics,
    pub realm: String,
    /// Time from a request's head to its response head.
    pub request_timeout: std::time::Duration,
    pub hot_metrics: HotMetrics,
}

/// What the gateway keeps per client connection.
pub struct Session {
    pub conn: ConnInfo,
    /// `X-Forwarded-For` for every request on the connection.
    forwarded_for: HeaderValue,
    /// The connection's own upstream connections (HTTP/1.1 requests only).
    affinity: Affinity,
    /// The last bearer token the connection presented, with the cache's answer.
    last_token: LastToken,
}

impl Session {
    pub fn new(conn: ConnInfo) -> Session {
        Session {
            forwarded_for: forwarded_for(conn.peer.ip()),
            conn,
            affinity: Affinity::default(),
            last_token: LastToken::default(),
        }
    }
}

/// State carried between the phases of one request.
struct RequestContext {
    started: Instant,
    /// The matched route's id and index.
    route: Option<(Arc<str>, usize)>,
    /// Why the request was allowed, once it was.
    allowed: Option<Reason>,
    upstream: Option<Arc<str>>,
    principal: Option<Principal>,
    /// The canonical path, once known, else empty (logged without the query, which may hold
    /// anything). Once the upstream request is built, only what the log needs
    /// ([`RequestContext::detach_path`]).
    path: CanonicalPath,
    /// `X-Request-Id`: the client's well-formed one, or generated.
    request_id: HeaderValue,
}

/// How far a request got at the call ([`Gateway::start`]).
enum Start {
    /// A path of the gateway's own, in canonical form (the request boxed: it is 264 bytes,
    /// and this is moved with every proxied request's).
    Own(String, Box<Request<Incoming>>),
    /// The upstream request, built: the exchange is all that is left.
    Ready(Outbound),
    /// A routed request that must wait before its upstream request can be built (boxed: it
    /// is rare, and the future keeps the largest of these until its first poll).
    Waits(Box<Waiting>),
    /// Refused, or failed, before anything went upstream.
    Failed(GatewayError),
}

/// A request for an upstream, ready to send.
struct Outbound {
    /// The upstream's place in [`Gateway::upstreams`].
    upstream: usize,
    request: Prepared,
}

/// A routed request that waits before its upstream request can be built.
struct Waiting {
    parts: http::request::Parts,
    /// The route's [`Route::index`].
    route: usize,
    /// The request's validated `Host` (or `:authority`).
    authority: Option<HeaderValue>,
    waits_for: WaitsFor,
}

/// What a [`Waiting`] request waits for, with its body.
enum WaitsFor {
    /// The store's answer on a token the cache does not hold; the body is looked at once that
    /// answer has allowed the request.
    Store(Miss, Incoming),
    /// Its form body, read whole (at most this many bytes), for a token in it.
    Form(Incoming, usize),
}

impl RequestContext {
    /// Keeps of a canonical path that is the request's own target only what the log needs,
    /// in a string of its own (nothing when the access log is off). The target is a slice of
    /// the buffer hyper reads the connection into: kept to the end, it would make hyper take
    /// a new buffer at its next read ([`Gateway::handle`]).
    fn detach_path(&mut self) {
        if let CanonicalPath::Target(target) = &self.path {
            let logged = if tracing::enabled!(target: "portcullis::access", tracing::Level::INFO) {
                target.path().to_owned()
            } else {
                String::new()
            };
            self.path = CanonicalPath::Rewritten(logged);
        }
    }
}

impl Gateway {
    /// One request's life, from its head to its response.
    ///
    /// What needs no waiting is done at the call, before the future is first polled: the head
    /// checked, the target routed, the token decided from the cache and the upstream request
    /// encoded. hyper reads from the client connection once more (to see it close) before it
    /// first polls the future; if the request still holds slices of the buffer it reads into,
    /// that read takes a new buffer (8 KiB, and a shared header for it): two allocations per
    /// request that most requests do without this way (benches/README.md). What waits (a token
    /// the cache lacks, a form body, the gateway's own endpoints) is done in the future.
    // A function returning an `async move` block, not an `async fn`, which would do nothing
    // until polled (and keep each argument twice across an await, as the argument and as the
    // local it is moved into, rust-lang/rust#62958; hyper moves this future twice per request:
    // benches/README.md, "The request's future").
    pub fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        session: Arc<Session>,
    ) -> impl Future<Output = Response<Body>> {
        let mut ctx = RequestContext {
            started: Instant::now(),
            route: None,
            allowed: None,
            upstream: None,
            principal: None,
            path: CanonicalPath::Rewritten(String::new()),
            request_id: request_id::of(req.headers()),
        };
        let method = req.method().clone();
        let start = self.start(req, &session, &mut ctx);
        async move {
            let result = match start {
                Start::Own(path, req) => {
                    let mut resp = self.serve_own(&path, *req, &session).await;
                    resp.headers_mut()
                        .insert(&X_REQUEST_ID, ctx.request_id.clone());
                    tracing::info!(
                        target: "portcullis::access",
                        method = %method,
                        path,
                        endpoint = "/o/",
                        status = resp.status().as_u16(),
                        duration_us = ctx.started.elapsed().as_micros() as u64,
                        request_id = ctx.request_id.to_str().unwrap_or_default(),
                        "request"
                    );
                    return resp;
                }
                Start::Ready(outbound) => self.exchange(outbound, &session, &mut ctx).await,
                // Boxed: waiting is rare, and inline its future would enlarge every request's.
                Start::Waits(waiting) => {
                    Box::pin(self.after_waiting(*waiting, &session, &mut ctx)).await
                }
                Start::Failed(e) => Err(e),
            };
            let reason = match &result {
                Ok(_) => ctx.allowed,
                Err(e) => denial(e).or(ctx.allowed),
            }
            .unwrap_or(Reason::Incomplete);
            let mut resp = match result {
                Ok(resp) => resp,
                Err(e) => {
                    match e.source() {
                        ErrorSource::Client => {}
                        ErrorSource::Upstream => {
                            tracing::warn!(
                                error = %e,
                                upstream = ctx.upstream.as_deref(),
                                "upstream failure"
                            )
                        }
                        ErrorSource::Internal => tracing::error!(error = %e, "request failed"),
                    }
                    e.into_response(&self.realm)
                }
            };
            resp.headers_mut()
                .insert(&X_REQUEST_ID, ctx.request_id.clone());
            self.log(&ctx, reason, &method, &resp);
            resp
        }
    }

    /// The phases that need no waiting: **route**, **authorize** from the cache, and
    /// **upstream_request** for a body that is not read first.
    fn start(&self, req: Request<Incoming>, session: &Session, ctx: &mut RequestContext) -> Start {
        // route: the head is checked and the target resolved once, for every endpoint, so
        // that the /o/ namespace is recognised on the same canonical path routing uses.
        let resolved = crate::request::validate(req.version(), req.uri(), req.headers())
            .map_err(GatewayError::from)
            .and_then(|authority| {
                let own = |p: &str| Endpoint::for_path(p).is_some() || Page::for_path(p).is_some();
                let target = resolve(&self.routes, req.method(), req.version(), req.uri(), own)?;
                Ok((authority, target))
            });
        let (authority, route) = match resolved {
            Ok((_, Resolved::Own(path))) => return Start::Own(path, Box::new(req)),
            Ok((authority, Resolved::Route(route, canonical))) => {
                ctx.path = canonical;
                ctx.route = Some((Arc::clone(&route.id), route.index));
                (authority, route)
            }
            Err(e) => return Start::Failed(e),
        };
        // authorize
        if guard::credential_in_query(req.uri().query()) {
            return Start::Failed(GatewayError::CredentialInRequest);
        }
        let miss = match self.authorize_cached(route, req.headers(), session, ctx) {
            Ok(miss) => miss,
            Err(e) => return Start::Failed(e),
        };
        // upstream_request
        let (parts, body) = req.into_parts();
        let waits_for = match miss {
            Some(miss) => WaitsFor::Store(miss, body),
            None => match streamed_body(&parts.headers, body, route.max_body_bytes) {
                Ok(Streamed::Body(body)) => {
                    return match self.upstream_request(parts, body, route, authority, session, ctx)
                    {
                        Ok(outbound) => Start::Ready(outbound),
                        Err(e) => Start::Failed(e),
                    };
                }
                Ok(Streamed::Form(form, limit)) => WaitsFor::Form(form, limit),
                Err(e) => return Start::Failed(e),
            },
        };
        Start::Waits(Box::new(Waiting {
            parts,
            route: route.index,
            authority,
            waits_for,
        }))
    }

    /// The rest of **authorize** and **upstream_request** for a request that waits (for the
    /// store's answer on its token, or for its form body), then the exchange.
    async fn after_waiting(
        &self,
        waiting: Waiting,
        session: &Session,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, GatewayError> {
        let Waiting {
            parts,
            route,
            authority,
            waits_for,
        } = waiting;
        let route = self
            .routes
            .get(route)
            .ok_or_else(|| GatewayError::Internal(format!("route {route} missing")))?;
        let deadline = ctx.started + self.request_timeout;
        let streamed = match waits_for {
            WaitsFor::Store(miss, body) => {
                let imported = self.auth_server.oauth.accept_imported_tokens;
                let token = guard::bearer_token(&parts.headers, imported)?;
                let lookup = self
                    .cache
                    .principal_missed(miss, token, &session.last_token);
                let principal = within(deadline, lookup).await??;
                admit(principal, &route.auth, ctx)?;
                streamed_body(&parts.headers, body, route.max_body_bytes)?
            }
            WaitsFor::Form(form, limit) => Streamed::Form(form, limit),
        };
        let body = match streamed {
            Streamed::Body(body) => body,
            Streamed::Form(form, limit) => within(deadline, read_form(form, limit)).await??,
        };
        let outbound = self.upstream_request(parts, body, route, authority, session, ctx)?;
        self.exchange(outbound, session, ctx).await
    }

    /// A path of the gateway's own: an authorization-server endpoint or a page, bounded by
    /// the request timeout like every proxied request.
    async fn serve_own(
        &self,
        path: &str,
        req: Request<Incoming>,
        session: &Session,
    ) -> Response<Body> {
        let origin = Origin {
            address: session.conn.peer.ip(),
            tls: session.conn.tls,
        };
        // Boxed: these futures are large and rare; inline, every proxied request's future
        // would be as large and be copied as often.
        let served = if let Some(endpoint) = Endpoint::for_path(path) {
            let served = Box::pin(self.auth_server.handle(endpoint, req, origin));
            tokio::time::timeout(self.request_timeout, served)
                .await
                .map(|r| r.unwrap_or_else(|e| e.into_response(&self.realm)))
        } else if let Some(page) = Page::for_path(path) {
            let served = Box::pin(self.pages.handle(page, req, origin));
            tokio::time::timeout(self.request_timeout, served).await
        } else {
            return GatewayError::RouteNotFound.into_response(&self.realm);
        };
        served.unwrap_or_else(|_| GatewayError::RequestTimeout.into_response(&self.realm))
    }

    /// **authorize** as far as the cache goes: `Ok(None)` once the request is allowed,
    /// `Ok(Some(miss))` when only the store can tell, else the denial.
    fn authorize_cached(
        &self,
        route: &Route,
        headers: &http::HeaderMap,
        session: &Session,
        ctx: &mut RequestContext,
    ) -> Result<Option<Miss>, GatewayError> {
        if let RouteAuth::Public = route.auth {
            ctx.allowed = Some(Reason::Public);
            return Ok(None);
        }
        let token = guard::bearer_token(headers, self.auth_server.oauth.accept_imported_tokens)?;
        match self.cache.principal_cached(token, &session.last_token) {
            Ok(principal) => admit(principal, &route.auth, ctx).map(|()| None),
            Err(miss) => Ok(Some(miss)),
        }
    }

    /// **upstream_request**: the request for `route`'s upstream, from the client's head (its
    /// spoofable fields stripped, the gateway's added) and `body`, encoded. `authority` is the
    /// request's validated `Host` (or `:authority`).
    fn upstream_request(
        &self,
        mut parts: http::request::Parts,
        body: UpstreamBody,
        route: &Route,
        authority: Option<HeaderValue>,
        session: &Session,
        ctx: &mut RequestContext,
    ) -> Result<Outbound, GatewayError> {
        let upstream = self.upstreams.get(route.upstream_index).ok_or_else(|| {
            GatewayError::Internal(format!("upstream {} missing", route.upstream))
        })?;
        ctx.upstream = Some(Arc::clone(&upstream.name));
        // The canonical path was moved into the context (for the log) and is read from there.
        let path = upstream.path_for(&ctx.path, &parts.uri)?;
        ctx.detach_path();
        let lean = session.affinity.for_version(parts.version).is_some();
        strip_request_headers(&mut parts.headers, &self.identity_headers);
        let forwarded = Forwarded {
            peer: &session.forwarded_for,
            proto: Forwarded::proto(session.conn.tls),
            host: authority,
        };
        let fields = GatewayFields {
            identity_headers: &self.identity_headers,
            forwarded: &forwarded,
            identity: ctx.principal.as_ref().map(|p| &p.header_values),
            request_id: &ctx.request_id,
        };
        let request = upstream.prepare(Request::from_parts(parts, body), path, &fields, lean)?;
        Ok(Outbound {
            upstream: route.upstream_index,
            request,
        })
    }

    /// **send** and **upstream_response**: the exchange, timed for the metrics, and the
    /// response's hop-by-hop fields gone.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice"
    )]
    fn exchange<'a>(
        &'a self,
        outbound: Outbound,
        session: &'a Session,
        ctx: &'a mut RequestContext,
    ) -> impl Future<Output = Result<Response<Body>, GatewayError>> + 'a {
        async move {
            // `deadline` (the request timeout) bounds the exchange too: one timer for
            // whichever of the request and response timeouts comes first.
            let deadline = ctx.started + self.request_timeout;
            let upstream = self.upstreams.get(outbound.upstream).ok_or_else(|| {
                GatewayError::Internal(format!("upstream {} missing", outbound.upstream))
            })?;
            let sent = Instant::now();
            let result = upstream
                .send(outbound.request, &session.affinity, sent, deadline)
                .await;
            let status_class = match &result {
                Ok(resp) => Metrics::status_class(resp.status().as_u16()),
                Err(GatewayError::UpstreamTimeout | GatewayError::RequestTimeout) => "timeout",
                Err(GatewayError::BodyTooLarge) => "request_too_large",
                Err(_) => "error",
            };
            self.metrics.observe_upstream(
                &self.hot_metrics,
                upstream.id(),
                &upstream.name,
                status_class,
                sent.elapsed().as_secs_f64(),
            );

            // upstream_response
            let mut resp = result?;
            // Hop-by-hop headers go, and with `Transfer-Encoding` a stale `Content-Length`
            // beside it (RFC 9112 §6.3): the body is re-framed for the client.
            strip_hop_by_hop(resp.headers_mut());
            if ctx.principal.is_some() {
                vary_on_authorization(resp.headers_mut());
            }
            Ok(resp)
        }
    }

    fn log(
        &self,
        ctx: &RequestContext,
        reason: Reason,
        method: &http::Method,
        resp: &Response<Body>,
    ) {
        self.metrics.count_decision(
            &self.hot_metrics,
            ctx.route.as_ref().map(|(id, index)| (id, *index)),
            reason,
        );
        let p = ctx.principal.as_ref();
        tracing::info!(
            target: "portcullis::access",
            method = %method,
            path = ctx.path.as_str(),
            route = ctx.route.as_ref().map_or("none", |(id, _)| &**id),
            status = resp.status().as_u16(),
            decision = reason.decision(),
            reason = reason.as_str(),
            upstream = ctx.upstream.as_deref(),
            client_id = p.map(|p| &*p.client_id),
            user = p.and_then(|p| p.username.as_deref()),
            duration_us = ctx.started.elapsed().as_micros() as u64,
            request_id = ctx.request_id.to_str().unwrap_or_default(),
            "request"
        );
    }
}

/// The reason a failure denies a request for, when it is a denial: the request's target, its
/// head, its credentials or their lookup. Failures after authorization (upstream errors,
/// timeouts, a body over its limit) deny nothing: the decision stays the one made.
fn denial(e: &GatewayError) -> Option<Reason> {
    Some(match e {
        GatewayError::BadPath(_) => Reason::BadPath,
        GatewayError::BadRequest(_) => Reason::BadRequest,
        GatewayError::RouteNotFound => Reason::NoRoute,
        GatewayError::CredentialInRequest => Reason::CredentialInRequest,
        GatewayError::Auth(AuthError::MissingToken) => Reason::MissingToken,
        GatewayError::Auth(AuthError::InvalidToken(_)) => Reason::InvalidToken,
        GatewayError::Auth(AuthError::InsufficientScope { .. }) => Reason::InsufficientScope,
        GatewayError::Store(_) => Reason::StoreError,
        _ => return None,
    })
}

/// A principal the cache or the store gave for the request's token, checked against the
/// route's scopes: the request is allowed, or refused (`None`: unknown, revoked or expired).
fn admit(
    principal: Option<Principal>,
    auth: &RouteAuth,
    ctx: &mut RequestContext,
) -> Result<(), GatewayError> {
    let principal = principal.ok_or(AuthError::InvalidToken("unknown, revoked or expired"))?;
    if let RouteAuth::Bearer { scopes } = auth {
        guard::check_scopes(&principal, scopes)?;
    }
    ctx.allowed = Some(Reason::Token);
    ctx.principal = Some(principal);
    Ok(())
}
