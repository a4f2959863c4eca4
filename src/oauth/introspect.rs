//! `POST /o/introspect/` (RFC 7662), for upstream services that want a token's claims.
//!
//! Callers authenticate with client credentials or with a bearer token holding the
//! `introspection` scope (as django-oauth-toolkit). A bearer caller, or a client registered
//! with the `introspection` scope, may introspect any token; any other client only the tokens
//! issued to itself. Everything a caller may not see answers `{"active": false}`.

use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::client_auth::Public;
use super::error::{Challenge, OAuthError, OAuthErrorCode};
use super::{AuthServer, FormRequest, INTROSPECTION_SCOPE, Origin};
use crate::crypto::Digest;
use crate::guard;
use crate::http::{Body, GatewayError, no_store_json};

/// Who is asking.
enum Caller {
    /// May introspect any token.
    Privileged,
    /// May introspect tokens issued to this client only.
    Client(String),
}

impl AuthServer {
    pub(super) async fn introspect(
        &self,
        req: Request<Incoming>,
        origin: Origin,
    ) -> Result<Response<Body>, GatewayError> {
        let outcome = |claims: &serde_json::Value| {
            if claims["active"] == json!(true) {
                "active"
            } else {
                "inactive"
            }
        };
        self.with_form_counted(
            req,
            origin,
            &self.metrics.introspections,
            outcome,
            async |r| self.introspect_inner(r).await,
        )
        .await
        .map(|claims| no_store_json(StatusCode::OK, &claims))
    }

    async fn introspect_inner(
        &self,
        request: &FormRequest,
    ) -> Result<serde_json::Value, GatewayError> {
        let form = &request.form;
        let caller = self.introspection_caller(request).await?;
        let token = form.require("token", "token is required")?;
        let digest = Digest::of(token);
        let now = self.clock.now();
        let refresh_first = form.get("token_type_hint") == Some("refresh_token");

        let access = async {
            Ok::<_, GatewayError>(
                self.store
                    .access_token(digest)
                    .await?
                    .map(|a| (a.meta, "Bearer")),
            )
        };
        let refresh = async {
            Ok::<_, GatewayError>(
                self.store
                    .refresh_token(digest)
                    .await?
                    .map(|r| (r.meta, "refresh_token")),
            )
        };
        let found = if refresh_first {
            match refresh.await? {
                Some(f) => Some(f),
                None => access.await?,
            }
        } else {
            match access.await? {
                Some(f) => Some(f),
                None => refresh.await?,
            }
        };
        let Some((token, token_type)) = found else {
            return Ok(json!({"active": false}));
        };
        let visible = match &caller {
            Caller::Privileged => true,
            Caller::Client(id) => *id == token.client_id,
        };
        if !token.is_live(now) || !visible {
            return Ok(json!({"active": false}));
        }
        let mut claims = json!({
            "active": true,
            "scope": token.scopes.to_string(),
            "client_id": token.client_id,
            "token_type": token_type,
            "exp": token.expires_at,
            "iat": token.issued_at,
        });
        if let Some(u) = token.username {
            claims["username"] = json!(u);
        }
        Ok(claims)
    }

    async fn introspection_caller(&self, request: &FormRequest) -> Result<Caller, GatewayError> {
        let headers = &request.parts.headers;
        let is_bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(' ').next())
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer"));
        if !is_bearer {
            let client = self.authenticate_client(request, Public::Refused).await?;
            return Ok(if client.scopes.iter().any(|s| s == INTROSPECTION_SCOPE) {
                Caller::Privileged
            } else {
                Caller::Client(client.client_id)
            });
        }
        let refused = OAuthError {
            code: OAuthErrorCode::InvalidClient,
            description: "the bearer token is invalid or lacks the introspection scope",
            challenge: Some(Challenge::Bearer),
        };
        let token = guard::bearer_token(headers, self.oauth.accept_imported_tokens)
            .map_err(|_| refused.clone())?;
        let principal = self
            .cache
            .principal(Digest::of(token))
            .await?
            .ok_or(refused.clone())?;
        if !principal.has_scope(INTROSPECTION_SCOPE) {
            return Err(refused.into());
        }
        Ok(Caller::Privileged)
    }
}
