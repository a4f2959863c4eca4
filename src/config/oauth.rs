//! `oauth`: scopes, token lifetimes and rotation, the issuer and realm, and the `/o/` limits.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Uri;
use serde_saphyr::Spanned;

use super::defaults::*;
use super::raw::{RawOAuth, RawRateLimits};
use super::{Problem, Validator};
use crate::scope::ScopeSet;

/// Brute-force resistance of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per minute per client id (authenticated or not) from one source address.
    pub per_client_per_minute: u32,
    /// Password-grant requests per minute per username from one source address.
    pub per_user_per_minute: u32,
    /// Requests per minute per source address.
    pub per_address_per_minute: u32,
    /// Failed attempts of one client id or username from one source address before that
    /// address backs off for it.
    pub failures_before_backoff: u32,
    /// Failed attempts of one client id or username from all addresses together (within an
    /// hour) before it backs off everywhere except where it recently succeeded.
    pub identity_failures_before_backoff: u32,
    /// Back-off doubles with every further failure up to this.
    pub max_backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// Scope name -> human description, as django-oauth-toolkit's `SCOPES`.
    pub scopes: BTreeMap<String, String>,
    /// Granted when a token request names no scope (intersected with the client's scopes).
    pub default_scopes: ScopeSet,
    pub access_token_expire_seconds: i64,
    pub refresh_token_expire_seconds: i64,
    /// Issue a new refresh token on every refresh and invalidate the old one.
    pub rotate_refresh_token: bool,
    /// A rotated refresh token presented again within this many seconds gets the same new
    /// pair (a client retrying after a lost response), not an error.
    pub refresh_token_grace_period_seconds: i64,
    /// A rotated refresh token presented after the grace period revokes its whole family.
    pub refresh_token_reuse_protection: bool,
    /// How long an authorization code may be exchanged.
    pub authorization_code_expire_seconds: i64,
    /// How long a sign-in at `/o/` lasts.
    pub session_expire_seconds: i64,
    /// Ask for consent again even when the user already granted these scopes to this client
    /// (django-oauth-toolkit's `approval_prompt=force`); `false` is its `auto`.
    pub always_prompt: bool,
    /// RFC 8414 issuer identifier; endpoint URLs in the metadata are built on it. `None`:
    /// `http://` and the address the proxy listener is bound to.
    pub issuer: Option<String>,
    /// Serve the `/o/` endpoints over plain HTTP on a non-loopback listener (behind a
    /// TLS-terminating proxy). Off: they refuse such requests.
    pub allow_plain_http: bool,
    /// Look up bearer tokens of any shape (tokens imported from django-oauth-toolkit), not
    /// only Portcullis' own `pcat_…` ones, which are recognised without a store read.
    pub accept_imported_tokens: bool,
    pub rate_limits: RateLimits,
    /// The `realm` of `WWW-Authenticate: Bearer` challenges.
    pub realm: String,
    /// Password hashes verified at once, at most (each runs on a blocking thread).
    pub password_hash_concurrency: usize,
}

impl Validator {
    pub(super) fn oauth(&mut self, raw: &RawOAuth) -> OAuthConfig {
        let mut scopes = BTreeMap::new();
        for (name, description) in &raw.scopes {
            if !ScopeSet::is_valid_token(name) {
                self.at(
                    &description.referenced,
                    format!("scope name {name:?} is not a valid RFC 6749 scope token"),
                );
            }
            scopes.insert(name.clone(), description.value.clone());
        }
        if scopes.is_empty() {
            self.problems.push(Problem {
                line: 0,
                column: 0,
                message: "`oauth.scopes` must define at least one scope".into(),
            });
        }
        let mut default_scopes: Vec<&str> = Vec::new();
        for s in &raw.default_scopes {
            if !scopes.contains_key(&s.value) {
                self.at(
                    &s.referenced,
                    format!(
                        "default scope {:?} is not defined in `oauth.scopes`",
                        s.value
                    ),
                );
            } else {
                default_scopes.push(&s.value);
            }
        }
        let access = self
            .bounded(
                &raw.access_token_expire_seconds,
                MAX_TOKEN_LIFETIME_SECONDS,
                "oauth.access_token_expire_seconds",
            )
            .unwrap_or(ACCESS_TOKEN_EXPIRE_SECONDS);
        let refresh = self
            .bounded(
                &raw.refresh_token_expire_seconds,
                MAX_TOKEN_LIFETIME_SECONDS,
                "oauth.refresh_token_expire_seconds",
            )
            .unwrap_or(REFRESH_TOKEN_EXPIRE_SECONDS);
        let grace = self
            .at_most(
                &raw.refresh_token_grace_period_seconds,
                MAX_REFRESH_TOKEN_GRACE_PERIOD_SECONDS,
                "oauth.refresh_token_grace_period_seconds",
            )
            .unwrap_or(REFRESH_TOKEN_GRACE_PERIOD_SECONDS);
        let realm = match &raw.realm {
            Some(r)
                if r.value.is_empty()
                    || r.value.contains(['"', '\\'])
                    || r.value.chars().any(char::is_control) =>
            {
                self.at(&r.referenced, "`oauth.realm` must be non-empty and contain no quote, backslash or control character");
                REALM.to_owned()
            }
            Some(r) => r.value.clone(),
            None => REALM.to_owned(),
        };
        let default_concurrency = std::thread::available_parallelism().map_or(2, |n| n.get());
        let password_hash_concurrency = self
            .positive(
                &raw.password_hash_concurrency,
                "oauth.password_hash_concurrency",
            )
            .map_or(default_concurrency, |n| n as usize);
        let issuer = match &raw.issuer {
            None => None,
            Some(i) => {
                let ok = i.value.parse::<Uri>().is_ok_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https"))
                        && u.authority().is_some()
                        && u.query().is_none()
                        && !i.value.contains('#')
                });
                if !ok {
                    self.at(
                        &i.referenced,
                        "`oauth.issuer` must be an http(s) URL without query or fragment",
                    );
                }
                Some(i.value.trim_end_matches('/').to_owned())
            }
        };
        OAuthConfig {
            scopes,
            default_scopes: default_scopes.into_iter().collect(),
            // Bounded above, so the casts are exact.
            access_token_expire_seconds: access as i64,
            refresh_token_expire_seconds: refresh as i64,
            rotate_refresh_token: raw.rotate_refresh_token.unwrap_or(true),
            refresh_token_grace_period_seconds: grace as i64,
            refresh_token_reuse_protection: raw.refresh_token_reuse_protection.unwrap_or(true),
            authorization_code_expire_seconds: self
                .bounded(
                    &raw.authorization_code_expire_seconds,
                    MAX_AUTHORIZATION_CODE_EXPIRE_SECONDS,
                    "oauth.authorization_code_expire_seconds",
                )
                .unwrap_or(AUTHORIZATION_CODE_EXPIRE_SECONDS)
                as i64,
            session_expire_seconds: self
                .bounded(
                    &raw.session_expire_seconds,
                    MAX_TOKEN_LIFETIME_SECONDS,
                    "oauth.session_expire_seconds",
                )
                .unwrap_or(SESSION_EXPIRE_SECONDS) as i64,
            always_prompt: match &raw.approval_prompt {
                None => false,
                Some(p) if p.value == "auto" => false,
                Some(p) if p.value == "force" => true,
                Some(p) => {
                    self.at(
                        &p.referenced,
                        format!(
                            "`oauth.approval_prompt` must be `auto` or `force`, got {:?}",
                            p.value
                        ),
                    );
                    false
                }
            },
            allow_plain_http: raw.allow_plain_http.unwrap_or(false),
            accept_imported_tokens: raw.accept_imported_tokens.unwrap_or(false),
            rate_limits: self.rate_limits(raw.rate_limits.as_ref()),
            issuer,
            realm,
            password_hash_concurrency,
        }
    }

    fn rate_limits(&mut self, raw: Option<&RawRateLimits>) -> RateLimits {
        let mut get = |field: Option<&Option<Spanned<u64>>>, name: &str, default: u64| -> u64 {
            field
                .and_then(|f| self.bounded(f, MAX_RATE_LIMIT, &format!("oauth.rate_limits.{name}")))
                .unwrap_or(default)
        };
        // Bounded by MAX_RATE_LIMIT (u32::MAX), so the casts are exact.
        RateLimits {
            per_client_per_minute: get(
                raw.map(|r| &r.per_client_per_minute),
                "per_client_per_minute",
                PER_CLIENT_PER_MINUTE,
            ) as u32,
            per_user_per_minute: get(
                raw.map(|r| &r.per_user_per_minute),
                "per_user_per_minute",
                PER_USER_PER_MINUTE,
            ) as u32,
            per_address_per_minute: get(
                raw.map(|r| &r.per_address_per_minute),
                "per_address_per_minute",
                PER_ADDRESS_PER_MINUTE,
            ) as u32,
            failures_before_backoff: get(
                raw.map(|r| &r.failures_before_backoff),
                "failures_before_backoff",
                FAILURES_BEFORE_BACKOFF,
            ) as u32,
            identity_failures_before_backoff: get(
                raw.map(|r| &r.identity_failures_before_backoff),
                "identity_failures_before_backoff",
                IDENTITY_FAILURES_BEFORE_BACKOFF,
            ) as u32,
            max_backoff: Duration::from_secs(get(
                raw.map(|r| &r.max_backoff_seconds),
                "max_backoff_seconds",
                MAX_BACKOFF_SECONDS,
            )),
        }
    }
}
