//! The per-request pipeline of the proxy listener: the request's life in one place.
//!
//! Every request's head is checked (`request::validate`) and its target resolved once
//! (`routes::resolve`); `/o/` endpoints and the RFC 8414 metadata go to the authorization
//! server; every other request runs the phases named after its life: **route** (request target
//! -> canonical path -> route table) -> **authorize** (bearer token -> cache -> scopes) ->
//! **upstream_request** (URI, headers and a bounded body for the upstream) -> **send** ->
//! **upstream_response** -> **log**. `log` always runs, so every decision is counted once,
//! with the reason its outcome gives.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body as _, Incoming};
use tokio::time::Instant;

use crate::clock::SharedClock;
use crate::config::{Config, IdentityHeaders};
use crate::crypto::PasswordHasher;
use crate::guard::{self, AuthError};
use crate::http::{Body, ErrorSource, GatewayError, is_form_urlencoded};
use crate::listener::ConnInfo;
use crate::metrics::{HotMetrics, Metrics, Reason};
use crate::oauth::throttle::Throttle;
use crate::oauth::{AuthServer, Endpoint, Origin};
use crate::principal::Principal;
use crate::proxy::{
    Affinity, Forwarded, GatewayFields, UpstreamBody, Upstreams, forwarded_for, strip_hop_by_hop,
    strip_request_headers, vary_on_authorization,
};
use crate::request_id::{self, X_REQUEST_ID};
use crate::routes::{CanonicalPath, Resolved, Route, RouteAuth, RouteTable, resolve};
use crate::store::SharedStore;
use crate::store::cache::{LastToken, TokenCache};
use crate::web::{Page, Pages};

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
    /// anything).
    path: CanonicalPath,
    /// `X-Request-Id`: the client's well-formed one, or generated.
    request_id: HeaderValue,
}

impl Gateway {
    /// One request's life, from its head to its response.
    // A function returning an `async move` block, not an `async fn`: an `async fn`'s future
    // keeps each argument twice across an await, as the argument and as the local it is
    // moved into (rust-lang/rust#62958), and hyper moves this future twice per request
    // (benches/README.md, "The request's future").
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice"
    )]
    pub fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        session: Arc<Session>,
    ) -> impl Future<Output = Response<Body>> {
        async move {
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
            // route: the head is checked and the target resolved once, for every endpoint, so
            // that the /o/ namespace is recognised on the same canonical path routing uses.
            let resolved = crate::request::validate(req.version(), req.uri(), req.headers())
                .map_err(GatewayError::from)
                .and_then(|authority| {
                    let own =
                        |p: &str| Endpoint::for_path(p).is_some() || Page::for_path(p).is_some();
                    let target =
                        resolve(&self.routes, req.method(), req.version(), req.uri(), own)?;
                    Ok((authority, target))
                });
            let result = match resolved {
                Ok((_, Resolved::Own(path))) => {
                    let mut resp = self.serve_own(&path, req, &session).await;
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
                Ok((authority, Resolved::Route(route, canonical))) => {
                    ctx.path = canonical;
                    ctx.route = Some((Arc::clone(&route.id), route.index));
                    let deadline = ctx.started + self.request_timeout;
                    self.proxy(req, route, authority, &session, &mut ctx, deadline)
                        .await
                }
                Err(e) => Err(e),
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

    /// The phases after **route** for a request to `route`. `authority` is the request's
    /// validated `Host` (or `:authority`).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice"
    )]
    fn proxy<'a>(
        &'a self,
        req: Request<Incoming>,
        route: &'a Route,
        authority: Option<HeaderValue>,
        session: &'a Session,
        ctx: &'a mut RequestContext,
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = Result<Response<Body>, GatewayError>> + 'a {
        async move {
            // `deadline` (the request timeout) bounds every phase that may wait. Each is
            // polled before its timer is armed, so a phase that does not wait (a cache hit)
            // costs no timer, a streamed body is not waited for here, and the upstream phase
            // arms one timer for whichever of the request and response timeouts comes first.
            // authorize
            if guard::credential_in_query(req.uri().query()) {
                return Err(GatewayError::CredentialInRequest);
            }
            within(deadline, self.authorize(route, &req, session, ctx)).await??;

            // upstream_request
            let upstream = self.upstreams.get(route.upstream_index).ok_or_else(|| {
                GatewayError::Internal(format!("upstream {} missing", route.upstream))
            })?;
            ctx.upstream = Some(Arc::clone(&upstream.name));
            // The canonical path was moved into the context (for the log) and is read from
            // there.
            let path = upstream.path_for(&ctx.path, req.uri())?;
            let affinity = session.affinity.for_version(req.version());
            // In a block: what builds the upstream request is gone before the exchange
            // waits, so the future does not keep it (the request's parts, borrowed here,
            // would otherwise stay in it to the end).
            let (sent, exchange) = {
                let forwarded = Forwarded {
                    peer: &session.forwarded_for,
                    proto: Forwarded::proto(session.conn.tls),
                    host: authority,
                };
                let (mut parts, body) = req.into_parts();
                // The body is cut off (413) once it grows past its limit. A form body is read
                // first (boxed: its future is large, and inline every request's future would
                // be as large and be copied as often). A request that hyper's framing says
                // has no body (most: GET, HEAD, a `Content-Length: 0`) has no length to check
                // and no form to read, and its empty body is boxed without an allocation
                // (it has no size): two header lookups and an allocation fewer.
                let body = if body.is_end_stream() {
                    Empty::new().map_err(|never| match never {}).boxed_unsync()
                } else {
                    let limit = body_limit(&parts.headers, route.max_body_bytes)?;
                    if is_form_urlencoded(&parts.headers) {
                        within(deadline, Box::pin(read_form(body, limit))).await??
                    } else {
                        Limited::new(body, limit).boxed_unsync()
                    }
                };
                strip_request_headers(&mut parts.headers, &self.identity_headers);
                let fields = GatewayFields {
                    identity_headers: &self.identity_headers,
                    forwarded: &forwarded,
                    identity: ctx.principal.as_ref().map(|p| &p.header_values),
                    request_id: &ctx.request_id,
                };
                // send
                let req = Request::from_parts(parts, body);
                let sent = Instant::now();
                (
                    sent,
                    upstream.send(req, path, &fields, affinity, sent, deadline),
                )
            };
            let result = exchange.await;
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

    async fn authorize(
        &self,
        route: &Route,
        req: &Request<Incoming>,
        session: &Session,
        ctx: &mut RequestContext,
    ) -> Result<(), GatewayError> {
        let required = match &route.auth {
            RouteAuth::Public => {
                ctx.allowed = Some(Reason::Public);
                return Ok(());
            }
            RouteAuth::Bearer { scopes } => scopes,
        };
        let token =
            guard::bearer_token(req.headers(), self.auth_server.oauth.accept_imported_tokens)?;
        let principal = self
            .cache
            .principal_of(token, &session.last_token)
            .await?
            .ok_or(AuthError::InvalidToken("unknown, revoked or expired"))?;
        guard::check_scopes(&principal, required)?;
        ctx.allowed = Some(Reason::Token);
        ctx.principal = Some(principal);
        Ok(())
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

pin_project_lite::pin_project! {
    /// `phase`, or a request timeout once `deadline` passes. The timer is made only if the
    /// phase has to wait: most finish at their first poll (a cache hit), and a
    /// `tokio::time::Timeout` makes its timer (the runtime's handle looked up and cloned) for
    /// every request, and is moved with the request's future. A future of its own rather
    /// than an `async fn`, which would hold `phase` twice (rust-lang/rust#62958).
    struct Within<F> {
        #[pin]
        phase: F,
        deadline: Instant,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

fn within<F: Future>(deadline: Instant, phase: F) -> Within<F> {
    Within {
        phase,
        deadline,
        timer: None,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.phase.poll(cx) {
            return Poll::Ready(Ok(done));
        }
        let deadline = *this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer
            .as_mut()
            .poll(cx)
            .map(|()| Err(GatewayError::RequestTimeout))
    }
}

/// The most bytes the request body for the upstream may have: `max`, refused at once (413)
/// when the declared length is larger.
fn body_limit(headers: &http::HeaderMap, max: u64) -> Result<usize, GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(GatewayError::BodyTooLarge);
    }
    Ok(usize::try_from(max).unwrap_or(usize::MAX))
}

/// A form body for the upstream, read whole (at most `limit` bytes, else 413) so that an
/// `access_token` parameter in it (RFC 6750 §2.2) can be refused.
async fn read_form(body: Incoming, limit: usize) -> Result<UpstreamBody, GatewayError> {
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(GatewayError::BodyTooLarge);
        }
        Err(_) => return Err(GatewayError::BodyUnreadable),
    };
    if guard::credential_in_form(&bytes) {
        return Err(GatewayError::CredentialInRequest);
    }
    Ok(Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync())
}
