//! The authorization server under `/o/`, as django-oauth-toolkit serves it: the token endpoint
//! (RFC 6749), revocation (RFC 7009), introspection (RFC 7662), and the RFC 8414 metadata.

mod client_auth;
pub mod code;
mod discovery;
pub mod error;
pub mod form;
mod introspect;
pub mod pkce;
pub mod redirect;
mod revoke;
pub mod scope;
pub mod throttle;
mod token;

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::clock::SharedClock;
use crate::config::{Limits, OAuthConfig};
use crate::crypto::{Digest, PasswordHasher, generate_secret};
use crate::http::{Body, GatewayError};
use crate::metrics::{Metrics, OutcomeLabels, ThrottledLabels};
use crate::store::cache::TokenCache;
use crate::store::{SharedStore, UserRecord};
use error::{OAuthError, OAuthErrorCode};
use form::{Form, parse_basic};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use throttle::{Key, Throttle, Throttled};

pub const AUTHORIZE_PATH: &str = "/o/authorize/";
pub const TOKEN_PATH: &str = "/o/token/";
pub const REVOKE_PATH: &str = "/o/revoke_token/";
pub const INTROSPECT_PATH: &str = "/o/introspect/";
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// The scope that lets a bearer token (or a client registered with it) introspect any token.
pub const INTROSPECTION_SCOPE: &str = "introspection";

/// The endpoints, each served with or without its trailing slash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    Revoke,
    Introspect,
    Metadata,
}

impl Endpoint {
    /// Which endpoint serves `path`, if any.
    pub fn for_path(path: &str) -> Option<Endpoint> {
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        match trimmed {
            "/o/token" => Some(Endpoint::Token),
            "/o/revoke_token" => Some(Endpoint::Revoke),
            "/o/introspect" => Some(Endpoint::Introspect),
            METADATA_PATH => Some(Endpoint::Metadata),
            _ => None,
        }
    }
}

/// State shared by every authorization-server request.
#[derive(Clone)]
pub struct AuthServer {
    pub store: SharedStore,
    pub cache: TokenCache,
    pub hasher: PasswordHasher,
    pub clock: SharedClock,
    pub metrics: Metrics,
    pub oauth: Arc<OAuthConfig>,
    pub max_body_bytes: usize,
    /// How long a form body may take to arrive.
    pub body_read_timeout: std::time::Duration,
    /// Refuse the POST endpoints over plain HTTP (a non-loopback listener without TLS, unless
    /// `oauth.allow_plain_http`).
    pub require_tls: bool,
    pub throttle: Arc<Throttle>,
    /// Compared against when the client id is unknown, so that an unknown client and a wrong
    /// secret take the same path.
    dummy_secret: Digest,
}

/// Where a request came from, as the endpoints need it: the address the limits key on, and
/// whether it crossed the network encrypted.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub address: std::net::IpAddr,
    /// The request arrived over TLS.
    pub tls: bool,
}

/// A parsed POST to one of the endpoints, with the rate-limit keys it was charged to.
pub(crate) struct FormRequest {
    pub parts: Parts,
    pub form: Form,
    /// The `Authorization` header read as HTTP Basic client credentials, parsed once: the
    /// rate limits key on the client id it claims, client authentication checks it.
    basic: Option<Result<(String, String), OAuthError>>,
    /// The identities the request claims (client id, username), for limits and back-off.
    keys: Vec<Key>,
    /// Where the request came from.
    address: std::net::IpAddr,
}

impl AuthServer {
    pub fn new(
        store: SharedStore,
        cache: TokenCache,
        hasher: PasswordHasher,
        clock: SharedClock,
        metrics: Metrics,
        oauth: Arc<OAuthConfig>,
        limits: &Limits,
    ) -> Self {
        AuthServer {
            store,
            cache,
            hasher,
            clock,
            metrics,
            throttle: Arc::new(Throttle::new(oauth.rate_limits.clone())),
            oauth,
            max_body_bytes: limits.token_request_max_bytes,
            // A form body is small: it gets the time a request head gets.
            body_read_timeout: limits.connection.header_read_timeout,
            require_tls: false,
            dummy_secret: Digest::of(&generate_secret("")),
        }
    }

    /// After a successful sign-in or password grant: a password still held in an imported
    /// Django format is replaced by its argon2id hash, so the slow legacy hash is verified
    /// once. A failure here is logged, never the user's: they are signed in either way.
    pub async fn upgrade_password(&self, user: &UserRecord, password: &str) {
        if !crate::crypto::django::is_supported(&user.password_hash) {
            return;
        }
        let upgraded = match self.hasher.hash(password.to_owned()).await {
            Ok(hash) => self
                .store
                .set_password(&user.username, hash)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match upgraded {
            Ok(()) => {
                tracing::info!(user = %user.username, from = crate::crypto::django::algorithm(&user.password_hash), "imported password rehashed to argon2id")
            }
            Err(e) => {
                tracing::warn!(user = %user.username, error = %e, "rehashing an imported password failed; it stays in its Django format")
            }
        }
    }

    /// Uses `throttle` (one that a reload carried over) instead of a fresh one.
    pub fn with_throttle(mut self, throttle: Arc<Throttle>) -> Self {
        self.throttle = throttle;
        self
    }

    /// Refuses the POST endpoints' requests that did not arrive over TLS (a non-loopback
    /// listener without TLS, unless `oauth.allow_plain_http`).
    pub fn requiring_tls(mut self, require: bool) -> Self {
        self.require_tls = require;
        self
    }

    /// Serves one request to `endpoint`; every failure is already its RFC-shaped response.
    pub async fn handle(
        &self,
        endpoint: Endpoint,
        req: Request<Incoming>,
        origin: Origin,
    ) -> Result<Response<Body>, GatewayError> {
        match endpoint {
            Endpoint::Token => self.token(req, origin).await,
            Endpoint::Revoke => self.revoke(req, origin).await,
            Endpoint::Introspect => self.introspect(req, origin).await,
            Endpoint::Metadata => self.metadata(req),
        }
    }

    /// The common prologue of the POST endpoints: the checks that cost nothing first (TLS,
    /// method, content type, the source address's rate limit), then the body (bounded in
    /// size and in time), then the form and the limits of the identities it claims.
    async fn read_form(
        &self,
        req: Request<Incoming>,
        origin: Origin,
    ) -> Result<FormRequest, GatewayError> {
        if self.require_tls && !origin.tls {
            return Err(OAuthError::invalid_request(
                "this endpoint requires TLS: credentials must not cross the network in clear",
            )
            .into());
        }
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed { allow: "POST" });
        }
        let (parts, body) = req.into_parts();
        let is_form = crate::http::is_form_urlencoded(&parts.headers);
        if !is_form {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            )
            .into());
        }
        let address = origin.address;
        self.throttle
            .check_address(address)
            .map_err(|held| self.throttled(held, address))?;
        // A stalled body holds its connection only this long.
        let body = tokio::time::timeout(
            self.body_read_timeout,
            read_limited(body, self.max_body_bytes),
        )
        .await
        .map_err(|_| GatewayError::RequestTimeout)??;
        let form = Form::parse(&body)?;
        let mut keys = Vec::with_capacity(2);
        let basic = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| parse_basic(v.as_bytes()));
        let claimed_client = match &basic {
            Some(parsed) => parsed.as_ref().ok().map(|(id, _)| id.clone()),
            None => form.get("client_id").map(str::to_owned),
        };
        if let Some(id) = claimed_client {
            keys.push(Key::Client(id.into()));
        }
        if form.get("grant_type") == Some("password")
            && let Some(user) = form.get("username")
        {
            keys.push(Key::User(user.into()));
        }
        self.throttle
            .check(&keys, address)
            .map_err(|held| self.throttled(held, address))?;
        Ok(FormRequest {
            parts,
            form,
            basic,
            keys,
            address,
        })
    }

    /// Counts and logs a throttled request; its 429.
    pub(crate) fn throttled(&self, held: Throttled, address: std::net::IpAddr) -> GatewayError {
        self.metrics
            .token_throttled
            .get_or_create(&ThrottledLabels {
                key: held.kind,
                cause: held.cause,
            })
            .inc();
        tracing::info!(key = held.kind, cause = held.cause, peer = %address, "token endpoint request throttled");
        GatewayError::TooManyRequests {
            retry_after_seconds: held.retry_after.as_secs_f64().ceil() as u64,
        }
    }

    /// Reads the form (with its limits), runs `inner` on it and feeds the outcome back to the
    /// back-off: the shape of every POST endpoint.
    async fn with_form<T>(
        &self,
        req: Request<Incoming>,
        origin: Origin,
        inner: impl AsyncFnOnce(&FormRequest) -> Result<T, GatewayError>,
    ) -> Result<T, GatewayError> {
        let request = self.read_form(req, origin).await?;
        let result = inner(&request).await;
        self.settle(&request, &result);
        result
    }

    /// [`AuthServer::with_form`], then the outcome counted in `family`: named by `outcome`
    /// for an answer, by the error for a failure.
    async fn with_form_counted<T>(
        &self,
        req: Request<Incoming>,
        origin: Origin,
        family: &Family<OutcomeLabels, Counter>,
        outcome: impl Fn(&T) -> &'static str,
        inner: impl AsyncFnOnce(&FormRequest) -> Result<T, GatewayError>,
    ) -> Result<T, GatewayError> {
        let result = self.with_form(req, origin, inner).await;
        let outcome = match &result {
            Ok(answer) => outcome(answer),
            Err(e) => outcome_of(e),
        };
        family.get_or_create(&OutcomeLabels { outcome }).inc();
        result
    }

    /// Feeds an outcome back to the back-off: a failed client authentication counts against
    /// the client id, a wrong password against the username (so one user's typos never lock
    /// out the application), each from the request's source address (see [`throttle`]).
    /// Source addresses themselves are rate-limited only: a back-off on them would let one
    /// attacker lock out everyone behind the same NAT or proxy. Success clears them.
    fn settle<T>(&self, request: &FormRequest, result: &Result<T, GatewayError>) {
        let failed_kind = match result {
            Ok(_) => {
                self.throttle.succeeded(&request.keys, request.address);
                return;
            }
            Err(GatewayError::OAuth(e)) if e.code == OAuthErrorCode::InvalidClient => "client",
            Err(GatewayError::OAuth(e)) if e.code == OAuthErrorCode::InvalidGrant => "user",
            Err(_) => return,
        };
        let keys: Vec<Key> = request
            .keys
            .iter()
            .filter(|k| k.kind() == failed_kind)
            .cloned()
            .collect();
        self.throttle.failed(&keys, request.address);
    }
}

/// Reads a whole request body, refusing more than `max` bytes.
pub async fn read_limited(body: Incoming, max: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::BodyTooLarge),
        Err(_) => Err(OAuthError::invalid_request("the request body could not be read").into()),
    }
}

/// The `outcome` label for a failed request.
fn outcome_of(e: &GatewayError) -> &'static str {
    match e {
        GatewayError::OAuth(e) => e.code.as_str(),
        GatewayError::BodyTooLarge | GatewayError::MethodNotAllowed { .. } => "invalid_request",
        GatewayError::TooManyRequests { .. } => "throttled",
        GatewayError::Auth(_) => "invalid_client",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_paths() {
        let cases = [
            ("/o/token/", Some(Endpoint::Token)),
            ("/o/token", Some(Endpoint::Token)),
            ("/o/revoke_token/", Some(Endpoint::Revoke)),
            ("/o/introspect", Some(Endpoint::Introspect)),
            (
                "/.well-known/oauth-authorization-server",
                Some(Endpoint::Metadata),
            ),
            ("/o/token//", None),
            ("/o/tokens/", None),
            ("/o/", None),
        ];
        for (path, want) in cases {
            assert_eq!(Endpoint::for_path(path), want, "{path}");
        }
        assert_eq!(Endpoint::for_path(TOKEN_PATH), Some(Endpoint::Token));
        assert_eq!(Endpoint::for_path(REVOKE_PATH), Some(Endpoint::Revoke));
        assert_eq!(
            Endpoint::for_path(INTROSPECT_PATH),
            Some(Endpoint::Introspect)
        );
    }
}
