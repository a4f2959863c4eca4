//! Client authentication (RFC 6749 §2.3.1), shared by the token, revocation and
//! introspection endpoints: HTTP Basic or `client_id` + `client_secret` in the body, not both.
//! A public client (RFC 6749 §2.1) has no secret and identifies itself with `client_id` alone,
//! where the endpoint allows it.

use super::error::{Challenge, OAuthError, OAuthErrorCode};
use super::{AuthServer, FormRequest};
use crate::crypto::Digest;
use crate::http::GatewayError;
use crate::store::ClientRecord;

/// Whether an endpoint accepts a public client's `client_id` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Public {
    /// The token and revocation endpoints (RFC 6749 §3.2.1, RFC 7009 §2.1).
    Identified,
    /// Introspection: only authenticated callers.
    Refused,
}

impl AuthServer {
    /// The client the request authenticates (or, for a public client where `public` allows
    /// it, identifies itself) as. A store that cannot answer is the store's failure (503),
    /// never the client's: it must not count toward the client's back-off.
    pub(super) async fn authenticate_client(
        &self,
        request: &FormRequest,
        public: Public,
    ) -> Result<ClientRecord, GatewayError> {
        let form = &request.form;
        let (client_id, secret, used_basic) = match &request.basic {
            Some(parsed) => {
                let (id, secret) = parsed.clone().map_err(|mut e| {
                    e.code = OAuthErrorCode::InvalidClient;
                    e.challenge = Some(Challenge::Basic);
                    e
                })?;
                if form.get("client_secret").is_some()
                    || form.get("client_id").is_some_and(|b| b != id)
                {
                    return Err(OAuthError::invalid_request(
                        "use one client authentication method: HTTP Basic or the request body",
                    )
                    .into());
                }
                (id, Some(secret), true)
            }
            None => match form.get("client_id") {
                Some(id) => (
                    id.to_owned(),
                    form.get("client_secret").map(str::to_owned),
                    false,
                ),
                None => {
                    return Err(OAuthError::new(
                        OAuthErrorCode::InvalidClient,
                        "client authentication is required",
                    )
                    .into());
                }
            },
        };
        let client = self.store.client(&client_id).await?;
        if let (Some(c), Some(s)) = (&client, &secret)
            && let Some(hash) = &c.imported_secret
        {
            return self.imported_secret(c.clone(), s, hash, used_basic).await;
        }
        // Always one comparison, against a dummy digest when there is nothing real to compare
        // with: an unknown client, a wrong secret and a missing one take the same path.
        let presented = Digest::of(secret.as_deref().unwrap_or_default());
        let expected = client
            .as_ref()
            .and_then(|c| c.secret_digest.as_ref())
            .unwrap_or(&self.dummy_secret);
        let matches = presented.ct_eq(expected);
        let accepted = match &client {
            Some(c) if c.is_public() => secret.is_none() && public == Public::Identified,
            Some(_) => secret.is_some() && matches,
            None => false,
        };
        match client {
            Some(c) if accepted => Ok(c),
            _ => Err(OAuthError {
                code: OAuthErrorCode::InvalidClient,
                description: "client authentication failed",
                challenge: used_basic.then_some(Challenge::Basic),
            }
            .into()),
        }
    }

    /// A client imported from django-oauth-toolkit whose secret is still a Django hash: it is
    /// verified on the password-hashing threads (it is slow by design), and on success
    /// replaced by the native digest, so that every later request is a digest comparison.
    async fn imported_secret(
        &self,
        client: ClientRecord,
        secret: &str,
        hash: &str,
        used_basic: bool,
    ) -> Result<ClientRecord, GatewayError> {
        let ok = self
            .hasher
            .verify(secret.to_owned(), Some(hash.to_owned()))
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        if !ok {
            return Err(OAuthError {
                code: OAuthErrorCode::InvalidClient,
                description: "client authentication failed",
                challenge: used_basic.then_some(Challenge::Basic),
            }
            .into());
        }
        let digest = Digest::of(secret);
        match self
            .store
            .set_client_secret(&client.client_id, digest)
            .await
        {
            Ok(_) => tracing::info!(
                client_id = %client.client_id,
                from = crate::crypto::django::algorithm(hash),
                "imported client secret replaced by its digest"
            ),
            Err(e) => {
                tracing::warn!(client_id = %client.client_id, error = %e, "replacing an imported client secret failed; it stays in its Django format")
            }
        }
        Ok(ClientRecord {
            secret_digest: Some(digest),
            imported_secret: None,
            ..client
        })
    }
}
