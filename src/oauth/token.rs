//! `POST /o/token/` (RFC 6749): the `password`, `client_credentials` and `refresh_token`
//! grants, refresh-token rotation with a grace period, and reuse detection.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::client_auth::Public;
use super::error::{OAuthError, OAuthErrorCode};
use super::form::Form;
use super::{AuthServer, FormRequest, Origin, outcome_of, scope};
use crate::crypto::{
    ACCESS_TOKEN_PREFIX, Digest, REFRESH_TOKEN_PREFIX, derive_rotated, generate_secret, random_salt,
};
use crate::http::{Body, GatewayError, no_store_json};
use crate::metrics::TokenIssuedLabels;
use crate::scope::ScopeSet;
use crate::store::{
    AccessTokenRecord, ClientRecord, GrantType, RefreshExchange, RefreshTokenRecord, TokenMeta,
};

/// Tokens of one successful grant, with what the response reports.
pub(super) struct Issued {
    access: String,
    refresh: Option<String>,
    scopes: ScopeSet,
    username: Option<String>,
    expires_in: i64,
}

/// What a new grant's tokens are made of.
pub(super) struct Mint<'a> {
    pub client: &'a ClientRecord,
    pub username: Option<String>,
    pub scopes: ScopeSet,
    /// Scopes of a new refresh token; `None`: no refresh token.
    pub refresh_scopes: Option<ScopeSet>,
    /// An existing refresh token the access token hangs off (refresh without rotation).
    pub parent: Option<Digest>,
    /// The family to join; `None` starts a new one.
    pub family: Option<Digest>,
    /// Token values decided in advance (rotation derives them); `None`: fresh random values.
    pub values: Option<(String, String)>,
}

/// Records of a minted pair, and the values the client gets.
pub(super) struct Minted {
    pub access: String,
    pub refresh: Option<String>,
    pub access_record: AccessTokenRecord,
    pub refresh_record: Option<RefreshTokenRecord>,
}

const INVALID_REFRESH: &str = "the refresh token is invalid, expired or revoked";

impl AuthServer {
    pub(super) async fn token(
        &self,
        req: Request<Incoming>,
        origin: Origin,
    ) -> Result<Response<Body>, GatewayError> {
        let mut grant_label = "other";
        let result = self
            .with_form(req, origin, async |request| {
                self.issue(request, &mut grant_label).await
            })
            .await;
        let outcome = match &result {
            Ok(_) => "issued",
            Err(e) => outcome_of(e),
        };
        self.metrics
            .tokens_issued
            .get_or_create(&TokenIssuedLabels {
                grant_type: grant_label,
                outcome,
            })
            .inc();
        result
    }

    async fn issue(
        &self,
        request: &FormRequest,
        grant_label: &mut &'static str,
    ) -> Result<Response<Body>, GatewayError> {
        let form = &request.form;
        let grant = form.get("grant_type");
        if let Some(g) = grant.and_then(|g| g.parse::<GrantType>().ok()) {
            *grant_label = g.as_str();
        }
        let client = self
            .authenticate_client(request, Public::Identified)
            .await?;
        let grant = grant.ok_or(OAuthError::invalid_request("grant_type is required"))?;
        let grant: GrantType = grant.parse().map_err(|_| {
            OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                "this grant type is not supported",
            )
        })?;
        if !client.grants.contains(&grant) {
            return Err(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "this client is not registered for this grant type",
            )
            .into());
        }
        let issued = match grant {
            GrantType::AuthorizationCode => self.code_grant(&client, form).await?,
            GrantType::Password => self.password_grant(&client, form).await?,
            GrantType::ClientCredentials => self.client_credentials_grant(&client, form).await?,
            GrantType::RefreshToken => self.refresh_grant(&client, form).await?,
        };
        tracing::info!(
            client_id = %client.client_id,
            grant_type = grant.as_str(),
            user = issued.username.as_deref().unwrap_or(""),
            scope = %issued.scopes,
            "token issued"
        );
        let mut body = json!({
            "access_token": issued.access,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scopes.to_string(),
        });
        if let Some(refresh) = issued.refresh {
            body["refresh_token"] = json!(refresh);
        }
        Ok(no_store_json(StatusCode::OK, &body))
    }

    async fn password_grant(
        &self,
        client: &ClientRecord,
        form: &Form,
    ) -> Result<Issued, GatewayError> {
        let username = form.require("username", "username is required")?;
        let password = form.require("password", "password is required")?;
        let scopes = self.new_grant_scopes(client, form)?;
        let user = self.store.user(username).await?;
        let ok = self
            .hasher
            .verify(
                password.to_owned(),
                user.as_ref().map(|u| u.password_hash.clone()),
            )
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let Some(user) = user.filter(|_| ok) else {
            tracing::info!(client_id = %client.client_id, "password grant refused: invalid credentials");
            return Err(OAuthError::invalid_grant("invalid credentials given").into());
        };
        self.upgrade_password(&user, password).await;
        let with_refresh = client.grants.contains(&GrantType::RefreshToken);
        let minted = self.mint(Mint {
            client,
            username: Some(user.username),
            refresh_scopes: with_refresh.then(|| scopes.clone()),
            scopes,
            parent: None,
            family: None,
            values: None,
        });
        self.store
            .insert_tokens(minted.access_record.clone(), minted.refresh_record.clone())
            .await?;
        Ok(self.issued(minted))
    }

    /// RFC 6749 §4.4: no resource owner and no refresh token.
    async fn client_credentials_grant(
        &self,
        client: &ClientRecord,
        form: &Form,
    ) -> Result<Issued, GatewayError> {
        let scopes = self.new_grant_scopes(client, form)?;
        let minted = self.mint(Mint {
            client,
            username: None,
            scopes,
            refresh_scopes: None,
            parent: None,
            family: None,
            values: None,
        });
        self.store
            .insert_tokens(minted.access_record.clone(), None)
            .await?;
        Ok(self.issued(minted))
    }

    /// RFC 6749 §6. With rotation, the exchange is one transaction; a retry of the same
    /// refresh within the grace period gets the same new pair; a rotated token presented after
    /// it revokes the whole family (reuse detection, RFC 9700 §4.14.2).
    async fn refresh_grant(
        &self,
        client: &ClientRecord,
        form: &Form,
    ) -> Result<Issued, GatewayError> {
        let presented = form.require("refresh_token", "refresh_token is required")?;
        let now = self.clock.now();
        let old = Digest::of(presented);
        let record = self
            .store
            .refresh_token(old)
            .await?
            .filter(|r| r.client_id == client.client_id && r.expires_at > now)
            .ok_or(OAuthError::invalid_grant(INVALID_REFRESH))?;
        if record.revoked_at.is_some() {
            return self.refresh_again(presented, &record, now).await;
        }
        let scopes = scope::for_refresh(form.get("scope"), &record.scopes)?;
        let rotate = self.oauth.rotate_refresh_token;
        let salt = rotate.then(random_salt);
        let minted = self.mint(Mint {
            client,
            username: record.username.clone(),
            scopes,
            // A rotated refresh token keeps the scope of the one it replaces.
            refresh_scopes: rotate.then(|| record.scopes.clone()),
            parent: (!rotate).then_some(old),
            family: Some(record.family),
            values: salt.map(|salt| derive_rotated(presented, &salt)),
        });
        match self
            .store
            .exchange_refresh_token(
                old,
                now,
                salt,
                minted.access_record.clone(),
                minted.refresh_record.clone(),
            )
            .await?
        {
            RefreshExchange::Exchanged { revoked_access } => {
                self.metrics
                    .count_revoked("rotation", revoked_access.len(), usize::from(rotate));
                for d in &revoked_access {
                    self.cache.invalidate(d);
                }
                Ok(self.issued(minted))
            }
            // Another request rotated it first: answer as a retry would be answered.
            RefreshExchange::Stale => {
                let record = self
                    .store
                    .refresh_token(old)
                    .await?
                    .ok_or(OAuthError::invalid_grant(INVALID_REFRESH))?;
                self.refresh_again(presented, &record, now).await
            }
        }
    }

    /// A refresh token that is no longer usable was presented: replay within the grace
    /// period, detect reuse after it, refuse otherwise.
    async fn refresh_again(
        &self,
        presented: &str,
        record: &RefreshTokenRecord,
        now: i64,
    ) -> Result<Issued, GatewayError> {
        let (Some(rotated_at), Some(salt)) = (record.rotated_at, record.rotation_salt) else {
            // Revoked by the revocation endpoint or an administrator, not by rotation.
            return Err(OAuthError::invalid_grant(INVALID_REFRESH).into());
        };
        if now - rotated_at < self.oauth.refresh_token_grace_period_seconds {
            let (access, refresh) = derive_rotated(presented, &salt);
            let access_record = self.store.access_token(Digest::of(&access)).await?;
            let refresh_record = self.store.refresh_token(Digest::of(&refresh)).await?;
            if let (Some(a), Some(r)) = (access_record, refresh_record)
                && a.is_live(now)
                && r.is_live(now)
            {
                return Ok(Issued {
                    access,
                    refresh: Some(refresh),
                    expires_in: a.expires_at - now,
                    scopes: a.meta.scopes,
                    username: a.meta.username,
                });
            }
            return Err(OAuthError::invalid_grant(INVALID_REFRESH).into());
        }
        if self.oauth.refresh_token_reuse_protection {
            let revoked = self.store.revoke_family(record.family, now).await?;
            self.metrics.refresh_reuse_detected.inc();
            self.metrics
                .count_revoked("reuse", revoked.access.len(), revoked.refresh);
            for d in &revoked.access {
                self.cache.invalidate(d);
            }
            tracing::warn!(
                client_id = %record.client_id,
                user = record.username.as_deref().unwrap_or(""),
                access_revoked = revoked.access.len(),
                refresh_revoked = revoked.refresh,
                "rotated refresh token reused after the grace period: token family revoked"
            );
        }
        Err(OAuthError::invalid_grant(INVALID_REFRESH).into())
    }

    fn new_grant_scopes(&self, client: &ClientRecord, form: &Form) -> Result<ScopeSet, OAuthError> {
        scope::for_new_grant(
            form.get("scope"),
            &self.oauth.scopes,
            &client.scopes,
            &self.oauth.default_scopes,
        )
    }

    pub(super) fn issued(&self, minted: Minted) -> Issued {
        Issued {
            access: minted.access,
            refresh: minted.refresh,
            expires_in: self.oauth.access_token_expire_seconds,
            scopes: minted.access_record.meta.scopes,
            username: minted.access_record.meta.username,
        }
    }

    pub(super) fn mint(&self, m: Mint<'_>) -> Minted {
        let now = self.clock.now();
        let (access, refresh_value) = match m.values {
            Some((a, r)) => (a, Some(r)),
            None => (generate_secret(ACCESS_TOKEN_PREFIX), None),
        };
        let access_digest = Digest::of(&access);
        let (refresh, refresh_record) = match m.refresh_scopes {
            Some(refresh_scopes) => {
                let value = refresh_value.unwrap_or_else(|| generate_secret(REFRESH_TOKEN_PREFIX));
                let digest = Digest::of(&value);
                let record = RefreshTokenRecord {
                    meta: TokenMeta {
                        digest,
                        client_id: m.client.client_id.clone(),
                        username: m.username.clone(),
                        scopes: refresh_scopes,
                        issued_at: now,
                        expires_at: now + self.oauth.refresh_token_expire_seconds,
                        revoked_at: None,
                    },
                    family: m.family.unwrap_or(digest),
                    rotated_at: None,
                    rotation_salt: None,
                };
                (Some(value), Some(record))
            }
            None => (None, None),
        };
        let family = m
            .family
            .or(refresh_record.as_ref().map(|r| r.family))
            .unwrap_or(access_digest);
        let access_record = AccessTokenRecord {
            meta: TokenMeta {
                digest: access_digest,
                client_id: m.client.client_id.clone(),
                username: m.username,
                scopes: m.scopes,
                issued_at: now,
                expires_at: now + self.oauth.access_token_expire_seconds,
                revoked_at: None,
            },
            refresh: refresh_record.as_ref().map(|r| r.digest).or(m.parent),
            family,
        };
        Minted {
            access,
            refresh,
            access_record,
            refresh_record,
        }
    }
}
