//! Authorization codes (RFC 6749 §4.1, RFC 7636): issued to a signed-in user's consent at
//! `/o/authorize/`, exchanged once at `/o/token/` by the client they were issued to, with the
//! same redirect URI and the PKCE verifier of their challenge. Stored only as digests; a
//! second exchange revokes every token issued from the code (RFC 6749 §4.1.2).

use super::error::OAuthError;
use super::form::Form;
use super::token::{Issued, Mint};
use super::{AuthServer, pkce};
use crate::crypto::{Digest, generate_secret};
use crate::http::GatewayError;
use crate::scope::ScopeSet;
use crate::store::{ClientRecord, CodeRecord, CodeRedemption, GrantType};

/// The prefix of authorization codes, so that secret scanners can recognise them.
pub const CODE_PREFIX: &str = "pcac_";

/// What a consent grants: the code's bindings.
pub struct Approval<'a> {
    pub client: &'a ClientRecord,
    pub username: &'a str,
    pub redirect_uri: &'a str,
    pub scopes: ScopeSet,
    /// The S256 challenge of the authorization request.
    pub code_challenge: String,
}

const INVALID_CODE: &str = "the authorization code is invalid, expired or used";

impl AuthServer {
    /// Issues a code for an approval; only its digest is stored.
    pub async fn issue_code(&self, approval: Approval<'_>) -> Result<String, GatewayError> {
        let code = generate_secret(CODE_PREFIX);
        let now = self.clock.now();
        self.store
            .insert_code(CodeRecord {
                digest: Digest::of(&code),
                client_id: approval.client.client_id.clone(),
                username: approval.username.to_owned(),
                redirect_uri: approval.redirect_uri.to_owned(),
                scopes: approval.scopes,
                code_challenge: approval.code_challenge,
                issued_at: now,
                expires_at: now + self.oauth.authorization_code_expire_seconds,
                used_at: None,
            })
            .await?;
        Ok(code)
    }

    /// `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.5).
    pub(super) async fn code_grant(
        &self,
        client: &ClientRecord,
        form: &Form,
    ) -> Result<Issued, GatewayError> {
        let code = form.require("code", "code is required")?;
        let redirect_uri = form.require("redirect_uri", "redirect_uri is required")?;
        let verifier = form.require("code_verifier", "code_verifier is required (PKCE)")?;
        let digest = Digest::of(code);
        let invalid = || GatewayError::from(OAuthError::invalid_grant(INVALID_CODE));
        let record = self.store.code(digest).await?.ok_or_else(invalid)?;
        // Bound to the client, the redirect URI and the challenge: anything else is a code
        // someone else obtained.
        if record.client_id != client.client_id || record.redirect_uri != redirect_uri {
            return Err(invalid());
        }
        if !pkce::verify(verifier, &record.code_challenge).unwrap_or(false) {
            return Err(invalid());
        }
        let with_refresh = client.grants.contains(&GrantType::RefreshToken);
        let minted = self.mint(Mint {
            client,
            username: Some(record.username.clone()),
            refresh_scopes: with_refresh.then(|| record.scopes.clone()),
            scopes: record.scopes,
            parent: None,
            // The code is the family: its replay revokes everything issued from it.
            family: Some(digest),
            values: None,
        });
        let now = self.clock.now();
        match self
            .store
            .redeem_code(
                digest,
                now,
                minted.access_record.clone(),
                minted.refresh_record.clone(),
            )
            .await?
        {
            CodeRedemption::Redeemed => Ok(self.issued(minted)),
            CodeRedemption::Replayed(revoked) => {
                for d in &revoked.access {
                    self.cache.invalidate(d);
                }
                self.metrics
                    .count_revoked("code_reuse", revoked.access.len(), revoked.refresh);
                tracing::warn!(
                    client_id = %client.client_id,
                    access_revoked = revoked.access.len(),
                    refresh_revoked = revoked.refresh,
                    "authorization code used twice: the tokens issued from it were revoked"
                );
                Err(invalid())
            }
            CodeRedemption::Stale => Err(invalid()),
        }
    }
}
