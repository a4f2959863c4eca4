//! Client authentication (RFC 6749 §2.3.1), shared by the token, revocation and
//! introspection endpoints: HTTP Basic or `client_id` + `client_secret` in the body, not both.

use super::error::{Challenge, OAuthError, OAuthErrorCode};
use super::{AuthServer, FormRequest};
use crate::crypto::Digest;
use crate::http::GatewayError;
use crate::store::ClientRecord;

impl AuthServer {
    /// The client the request authenticates as. A store that cannot answer is the store's
    /// failure (503), never the client's: it must not count toward the client's back-off.
    pub(super) async fn authenticate_client(
        &self,
        request: &FormRequest,
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
                (id, secret, true)
            }
            None => match (form.get("client_id"), form.get("client_secret")) {
                (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned(), false),
                _ => {
                    return Err(OAuthError::new(
                        OAuthErrorCode::InvalidClient,
                        "client authentication is required",
                    )
                    .into());
                }
            },
        };
        let client = self.store.client(&client_id).await?;
        let presented = Digest::of(&secret);
        let expected = client
            .as_ref()
            .map_or(&self.dummy_secret, |c| &c.secret_digest);
        let matches = presented.ct_eq(expected);
        match client {
            Some(c) if matches => Ok(c),
            _ => Err(OAuthError {
                code: OAuthErrorCode::InvalidClient,
                description: "client authentication failed",
                challenge: used_basic.then_some(Challenge::Basic),
            }
            .into()),
        }
    }
}
