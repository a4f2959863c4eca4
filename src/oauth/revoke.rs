//! `POST /o/revoke_token/` (RFC 7009).
//!
//! Behaviour where the RFC leaves a choice: `token_type_hint` only orders the lookups (both
//! kinds are always searched); revoking a refresh token revokes the access tokens issued from
//! it, revoking an access token leaves its refresh token alone (as django-oauth-toolkit); an
//! unknown, already revoked, or another client's token answers 200 and changes nothing, so
//! the endpoint cannot be used to learn whether a token exists.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::client_auth::Public;
use super::{AuthServer, FormRequest, Origin};
use crate::crypto::Digest;
use crate::http::{Body, GatewayError, no_store_json};

impl AuthServer {
    pub(super) async fn revoke(
        &self,
        req: Request<Incoming>,
        origin: Origin,
    ) -> Result<Response<Body>, GatewayError> {
        let outcome = |revoked: &bool| if *revoked { "revoked" } else { "unknown_token" };
        self.with_form_counted(
            req,
            origin,
            &self.metrics.revocation_requests,
            outcome,
            async |r| self.revoke_inner(r).await,
        )
        .await
        .map(|_| no_store_json(StatusCode::OK, &serde_json::json!({})))
    }

    /// True when something was revoked.
    async fn revoke_inner(&self, request: &FormRequest) -> Result<bool, GatewayError> {
        let form = &request.form;
        let client = self
            .authenticate_client(request, Public::Identified)
            .await?;
        let token = form.require("token", "token is required")?;
        let refresh_first = form.get("token_type_hint") == Some("refresh_token");
        let now = self.clock.now();
        let revoked = self
            .store
            .revoke_token(Digest::of(token), &client.client_id, now, refresh_first)
            .await?;
        for d in &revoked.access {
            self.cache.invalidate(d);
        }
        self.metrics
            .count_revoked("endpoint", revoked.access.len(), revoked.refresh);
        let any = !revoked.access.is_empty() || revoked.refresh > 0;
        tracing::info!(
            client_id = %client.client_id,
            access_revoked = revoked.access.len(),
            refresh_revoked = revoked.refresh,
            "revocation request"
        );
        Ok(any)
    }
}
