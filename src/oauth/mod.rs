//! The authorization server: `POST /o/token/` (RFC 6749) with the `password`,
//! `client_credentials` and `refresh_token` grants, as django-oauth-toolkit serves them.

pub mod error;
pub mod form;
pub mod scope;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use crate::clock::SharedClock;
use crate::config::OAuthConfig;
use crate::crypto::{
    ACCESS_TOKEN_PREFIX, Digest, PasswordHasher, REFRESH_TOKEN_PREFIX, generate_secret,
};
use crate::http::{Body, GatewayError, no_store_json};
use crate::metrics::{Metrics, TokenIssuedLabels};
use crate::store::cache::TokenCache;
use crate::store::{
    AccessTokenRecord, ClientRecord, GrantType, RefreshExchange, RefreshTokenRecord, SharedStore,
};
use error::{OAuthError, OAuthErrorCode};
use form::{Form, parse_basic};

/// Paths served by the token endpoint (DOT's `/o/token/`, with or without the slash).
pub fn is_token_path(path: &str) -> bool {
    path == "/o/token/" || path == "/o/token"
}

/// State shared by every token request.
#[derive(Clone)]
pub struct TokenEndpoint {
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

/// Tokens minted for one grant, before they are stored.
struct Minted {
    access: String,
    refresh: Option<String>,
    access_record: AccessTokenRecord,
    refresh_record: Option<RefreshTokenRecord>,
}

impl TokenEndpoint {
    pub fn new(
        store: SharedStore,
        cache: TokenCache,
        hasher: PasswordHasher,
        clock: SharedClock,
        metrics: Metrics,
        oauth: Arc<OAuthConfig>,
        max_body_bytes: usize,
    ) -> Self {
        TokenEndpoint {
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

    /// Serves one token request; every failure is already an RFC 6749 §5.2 response.
    pub async fn handle(&self, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
        let mut grant_label = "other";
        let result = self.issue(req, &mut grant_label).await;
        let outcome = match &result {
            Ok(_) => "issued",
            Err(GatewayError::OAuth(e)) => e.code.as_str(),
            Err(GatewayError::BodyTooLarge) => "invalid_request",
            Err(GatewayError::MethodNotAllowed { .. }) => "invalid_request",
            Err(_) => "server_error",
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
        req: Request<Incoming>,
        grant_label: &mut &'static str,
    ) -> Result<Response<Body>, GatewayError> {
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
        let form = Form::parse(&body)?;

        let grant = form.get("grant_type");
        if let Some(g) = grant.and_then(|g| g.parse::<GrantType>().ok()) {
            *grant_label = g.as_str();
        }
        let client = self.authenticate_client(&parts.headers, &form).await?;
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
        let minted = match grant {
            GrantType::Password => self.password_grant(&client, &form).await?,
            GrantType::ClientCredentials => self.client_credentials_grant(&client, &form).await?,
            GrantType::RefreshToken => self.refresh_grant(&client, &form).await?,
        };
        tracing::info!(
            client_id = %client.client_id,
            grant_type = grant.as_str(),
            user = minted.access_record.username.as_deref().unwrap_or(""),
            scope = %minted.access_record.scopes.join(" "),
            "token issued"
        );
        let mut body = json!({
            "access_token": minted.access,
            "token_type": "Bearer",
            "expires_in": self.oauth.access_token_expire_seconds,
            "scope": minted.access_record.scopes.join(" "),
        });
        if let Some(refresh) = minted.refresh {
            body["refresh_token"] = json!(refresh);
        }
        Ok(no_store_json(StatusCode::OK, &body))
    }

    /// RFC 6749 §2.3.1: HTTP Basic, or `client_id` + `client_secret` in the body; not both.
    async fn authenticate_client(
        &self,
        headers: &HeaderMap,
        form: &Form,
    ) -> Result<ClientRecord, OAuthError> {
        let basic = headers.get(AUTHORIZATION);
        let (client_id, secret, used_basic) = match basic {
            Some(value) => {
                let (id, secret) = parse_basic(value.as_bytes()).map_err(|mut e| {
                    e.code = OAuthErrorCode::InvalidClient;
                    e.basic_challenge = true;
                    e
                })?;
                if form.get("client_secret").is_some()
                    || form.get("client_id").is_some_and(|b| b != id)
                {
                    return Err(OAuthError::invalid_request(
                        "use one client authentication method: HTTP Basic or the request body",
                    ));
                }
                (id, secret, true)
            }
            None => match (form.get("client_id"), form.get("client_secret")) {
                (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned(), false),
                _ => {
                    return Err(OAuthError::new(
                        OAuthErrorCode::InvalidClient,
                        "client authentication is required",
                    ));
                }
            },
        };
        let client = self.store.client(&client_id).await.map_err(|e| {
            tracing::error!(error = %e, "client lookup failed");
            OAuthError::new(
                OAuthErrorCode::InvalidClient,
                "client authentication failed",
            )
        })?;
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
                basic_challenge: used_basic,
            }),
        }
    }

    async fn password_grant(
        &self,
        client: &ClientRecord,
        form: &Form,
    ) -> Result<Minted, GatewayError> {
        let username = form.require("username", "username is required")?;
        let password = form.require("password", "password is required")?;
        let scopes = scope::for_new_grant(
            form.get("scope"),
            &self.oauth.scopes,
            &client.scopes,
            &self.oauth.default_scopes,
        )?;
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
        let issue_refresh = client.grants.contains(&GrantType::RefreshToken);
        let minted = self.mint(
            client,
            Some(user.username),
            scopes.clone(),
            issue_refresh.then_some(scopes),
            None,
        );
        self.store
            .insert_tokens(minted.access_record.clone(), minted.refresh_record.clone())
            .await?;
        Ok(minted)
    }

    /// RFC 6749 §4.4: no resource owner and no refresh token.
    async fn client_credentials_grant(
        &self,
        client: &ClientRecord,
        form: &Form,
    ) -> Result<Minted, GatewayError> {
        let scopes = scope::for_new_grant(
            form.get("scope"),
            &self.oauth.scopes,
            &client.scopes,
            &self.oauth.default_scopes,
        )?;
        let minted = self.mint(client, None, scopes, None, None);
        self.store
            .insert_tokens(minted.access_record.clone(), None)
            .await?;
        Ok(minted)
    }

    /// RFC 6749 §6, with rotation when `rotate_refresh_token` is set.
    async fn refresh_grant(
        &self,
        client: &ClientRecord,
        form: &Form,
    ) -> Result<Minted, GatewayError> {
        let presented = form.require("refresh_token", "refresh_token is required")?;
        let now = self.clock.now();
        let old = Digest::of(presented);
        let record = self
            .store
            .refresh_token(old)
            .await?
            .filter(|r| r.client_id == client.client_id && r.is_usable(now))
            .ok_or(OAuthError::invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ))?;
        let scopes = scope::for_refresh(form.get("scope"), &record.scopes)?;
        let rotate = self.oauth.rotate_refresh_token;
        let minted = if rotate {
            // The new refresh token keeps the scope of the one it replaces, not the narrowed one.
            self.mint(
                client,
                record.username.clone(),
                scopes,
                Some(record.scopes.clone()),
                None,
            )
        } else {
            self.mint(client, record.username.clone(), scopes, None, Some(old))
        };
        match self
            .store
            .exchange_refresh_token(
                old,
                now,
                rotate,
                minted.access_record.clone(),
                minted.refresh_record.clone(),
            )
            .await?
        {
            RefreshExchange::Stale => Err(OAuthError::invalid_grant(
                "the refresh token is invalid, expired or revoked",
            )
            .into()),
            RefreshExchange::Exchanged { revoked_access } => {
                for d in &revoked_access {
                    self.cache.invalidate(d).await;
                }
                Ok(minted)
            }
        }
    }

    /// New token values and their records. `refresh_scopes` asks for a new refresh token;
    /// `parent` links the access token to an existing refresh token instead.
    fn mint(
        &self,
        client: &ClientRecord,
        username: Option<String>,
        scopes: Vec<String>,
        refresh_scopes: Option<Vec<String>>,
        parent: Option<Digest>,
    ) -> Minted {
        let now = self.clock.now();
        let access = generate_secret(ACCESS_TOKEN_PREFIX);
        let (refresh, refresh_record) = match refresh_scopes {
            Some(refresh_scopes) => {
                let value = generate_secret(REFRESH_TOKEN_PREFIX);
                let record = RefreshTokenRecord {
                    digest: Digest::of(&value),
                    client_id: client.client_id.clone(),
                    username: username.clone(),
                    scopes: refresh_scopes,
                    issued_at: now,
                    expires_at: now + self.oauth.refresh_token_expire_seconds,
                    revoked_at: None,
                };
                (Some(value), Some(record))
            }
            None => (None, None),
        };
        let access_record = AccessTokenRecord {
            digest: Digest::of(&access),
            client_id: client.client_id.clone(),
            username,
            scopes,
            issued_at: now,
            expires_at: now + self.oauth.access_token_expire_seconds,
            refresh: refresh_record.as_ref().map(|r| r.digest).or(parent),
            revoked_at: None,
        };
        Minted {
            access,
            refresh,
            access_record,
            refresh_record,
        }
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
