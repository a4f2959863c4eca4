//! The authorization server under `/o/`, as django-oauth-toolkit serves it: the token endpoint
//! (RFC 6749), revocation (RFC 7009), introspection (RFC 7662), and the RFC 8414 metadata.

mod client_auth;
mod discovery;
pub mod error;
pub mod form;
mod introspect;
mod revoke;
pub mod scope;
mod token;

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::clock::SharedClock;
use crate::config::OAuthConfig;
use crate::crypto::{Digest, PasswordHasher, generate_secret};
use crate::http::{Body, GatewayError};
use crate::metrics::Metrics;
use crate::store::SharedStore;
use crate::store::cache::TokenCache;
use error::OAuthError;
use form::Form;

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
    /// Compared against when the client id is unknown, so that an unknown client and a wrong
    /// secret take the same path.
    dummy_secret: Digest,
}

impl AuthServer {
    pub fn new(
        store: SharedStore,
        cache: TokenCache,
        hasher: PasswordHasher,
        clock: SharedClock,
        metrics: Metrics,
        oauth: Arc<OAuthConfig>,
        max_body_bytes: usize,
    ) -> Self {
        AuthServer {
            store,
            cache,
            hasher,
            clock,
            metrics,
            oauth,
            max_body_bytes,
            dummy_secret: Digest::of(&generate_secret("")),
        }
    }

    /// Serves one request to `endpoint`; every failure is already its RFC-shaped response.
    pub async fn handle(
        &self,
        endpoint: Endpoint,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, GatewayError> {
        match endpoint {
            Endpoint::Token => self.token(req).await,
            Endpoint::Revoke => self.revoke(req).await,
            Endpoint::Introspect => self.introspect(req).await,
            Endpoint::Metadata => self.metadata(req),
        }
    }

    /// The common prologue of the POST endpoints: method, content type, bounded body, form.
    async fn read_form(&self, req: Request<Incoming>) -> Result<(Parts, Form), GatewayError> {
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed { allow: "POST" });
        }
        let (parts, body) = req.into_parts();
        let is_form = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            )
            .into());
        }
        let body = read_limited(body, self.max_body_bytes).await?;
        Ok((parts, Form::parse(&body)?))
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
