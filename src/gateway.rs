//! The per-request pipeline of the proxy listener.
//!
//! `/o/` endpoints and the RFC 8414 metadata go to the authorization server; every other request runs the phases named after its
//! life: **route** (canonical path -> route table) -> **authorize** (bearer token -> cache ->
//! scopes) -> **upstream_request** (URI and headers for the upstream) -> **send** ->
//! **upstream_response** -> **log**. `log` always runs, so every decision is counted once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::config::IdentityHeaders;
use crate::crypto::Digest;
use crate::guard::{self, AuthError};
use crate::http::{Body, ErrorSource, GatewayError};
use crate::metrics::{AuthDecisionLabels, Metrics, UpstreamLabels};
use crate::oauth::{AuthServer, Endpoint};
use crate::proxy::{Forwarded, Identity, Upstreams, rewrite_request_headers, strip_hop_by_hop};
use crate::routes::{Route, RouteAuth, RouteTable, canonicalize};
use crate::store::cache::{Principal, TokenCache};

/// Everything the pipeline needs, shared by all connections.
pub struct Gateway {
    pub routes: RouteTable,
    pub upstreams: Upstreams,
    pub cache: TokenCache,
    pub auth_server: AuthServer,
    pub identity_headers: IdentityHeaders,
    pub metrics: Metrics,
    pub realm: String,
}

/// State carried between the phases of one request.
struct RequestContext {
    started: Instant,
    route: Option<Arc<str>>,
    decision: &'static str,
    reason: &'static str,
    upstream: Option<Arc<str>>,
    principal: Option<Arc<Principal>>,
    /// The canonical path, once known (logged without the query, which may hold anything).
    path: Option<String>,
}

const NO_ROUTE: &str = "none";

impl Gateway {
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let path = req.uri().path();
        if let Some(endpoint) = Endpoint::for_path(path) {
            return match self.auth_server.handle(endpoint, req).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(&self.realm),
            };
        }
        let mut ctx = RequestContext {
            started: Instant::now(),
            route: None,
            decision: "deny",
            reason: "no_route",
            upstream: None,
            principal: None,
            path: None,
        };
        let method = req.method().clone();
        let result = if path == "/o" || path.starts_with("/o/") {
            // The /o/ namespace belongs to the authorization server; never proxied.
            Err(GatewayError::RouteNotFound)
        } else {
            self.proxy(req, peer, &mut ctx).await
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

    async fn proxy(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, GatewayError> {
        // route
        let canonical = match canonicalize(req.uri().path()) {
            Ok(p) => p.into_owned(),
            Err(e) => {
                ctx.reason = "bad_path";
                return Err(e.into());
            }
        };
        ctx.path = Some(canonical.clone());
        let route = self
            .routes
            .find(req.method(), &canonical)
            .ok_or(GatewayError::RouteNotFound)?;
        ctx.route = Some(Arc::clone(&route.id));

        // authorize
        self.authorize(route, &req, ctx).await?;

        // upstream_request
        let upstream = self.upstreams.get(&route.upstream).ok_or_else(|| {
            GatewayError::Internal(format!("upstream {} missing", route.upstream))
        })?;
        ctx.upstream = Some(Arc::clone(&upstream.name));
        let uri = upstream.uri_for(&canonical, req.uri().query())?;
        let forwarded = Forwarded {
            peer: peer.ip(),
            proto: "http",
            host: req
                .headers()
                .get(HOST)
                .cloned()
                .or_else(|| req.uri().authority().and_then(|a| a.as_str().parse().ok())),
        };
        let principal = ctx.principal.as_deref();
        let identity = principal.map(|p| Identity {
            user: p.username.as_deref(),
            client: &p.client_id,
            scopes: &p.scopes,
        });
        rewrite_request_headers(
            req.headers_mut(),
            &self.identity_headers,
            &forwarded,
            identity,
        );
        *req.uri_mut() = uri;

        // send
        let sent = Instant::now();
        let result = upstream.send(req).await;
        let status_class = match &result {
            Ok(resp) => Metrics::status_class(resp.status().as_u16()),
            Err(GatewayError::UpstreamTimeout) => "timeout",
            Err(_) => "error",
        };
        self.metrics
            .upstream_duration
            .get_or_create(&UpstreamLabels {
                upstream: Arc::clone(&upstream.name),
                status_class,
            })
            .observe(sent.elapsed().as_secs_f64());

        // upstream_response
        let mut resp = result?;
        strip_hop_by_hop(resp.headers_mut());
        Ok(resp.map(http_body_util::Either::Right))
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
        let outcome: Result<Arc<Principal>, GatewayError> = async {
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
        self.metrics
            .auth_decisions
            .get_or_create(&AuthDecisionLabels {
                route: Arc::clone(&route),
                decision: ctx.decision,
                reason: ctx.reason,
            })
            .inc();
        let p = ctx.principal.as_deref();
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
