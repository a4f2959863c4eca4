//! The YAML file's shape, field for field. Nothing outside `config` sees these types.
//! Unknown keys are not denied here but collected (all of them, with their locations) by
//! `Config::parse` through `serde_ignored`, which makes each one an error: a misspelled
//! `scopes:` fails instead of opening a route.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
pub struct RawConfig {
    pub listen: S<String>,
    #[serde(default)]
    pub admin_listen: Option<S<String>>,
    #[serde(default)]
    pub workers: Option<S<u64>>,
    #[serde(default)]
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub admin_tls: Option<RawTls>,
    pub store: S<RawStore>,
    pub oauth: RawOAuth,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub identity_headers: Option<RawIdentityHeaders>,
    #[serde(default)]
    pub cache: Option<RawCache>,
    #[serde(default)]
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub cleanup: Option<RawCleanup>,
}

#[derive(Debug, Deserialize)]
pub struct RawCleanup {
    #[serde(default)]
    pub interval_seconds: Option<S<u64>>,
    #[serde(default)]
    pub batch_size: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawTls {
    pub cert: S<String>,
    pub key: S<String>,
    #[serde(default)]
    pub reload_interval_seconds: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawStore {
    #[serde(default)]
    pub sqlite: Option<S<String>>,
    #[serde(default)]
    pub busy_timeout_ms: Option<S<u64>>,
    #[serde(default)]
    pub postgres: Option<S<String>>,
    #[serde(default)]
    pub postgres_url_env: Option<S<String>>,
    #[serde(default)]
    pub pool_size: Option<S<u64>>,
    #[serde(default)]
    pub connect_timeout_ms: Option<S<u64>>,
    #[serde(default)]
    pub statement_timeout_ms: Option<S<u64>>,
    #[serde(default)]
    pub ca_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawOAuth {
    pub scopes: BTreeMap<String, S<String>>,
    #[serde(default)]
    pub default_scopes: Vec<S<String>>,
    #[serde(default)]
    pub access_token_expire_seconds: Option<S<u64>>,
    #[serde(default)]
    pub refresh_token_expire_seconds: Option<S<u64>>,
    #[serde(default)]
    pub rotate_refresh_token: Option<bool>,
    #[serde(default)]
    pub refresh_token_grace_period_seconds: Option<S<u64>>,
    #[serde(default)]
    pub refresh_token_reuse_protection: Option<bool>,
    #[serde(default)]
    pub authorization_code_expire_seconds: Option<S<u64>>,
    #[serde(default)]
    pub session_expire_seconds: Option<S<u64>>,
    #[serde(default)]
    pub approval_prompt: Option<S<String>>,
    #[serde(default)]
    pub issuer: Option<S<String>>,
    #[serde(default)]
    pub allow_plain_http: Option<bool>,
    #[serde(default)]
    pub accept_imported_tokens: Option<bool>,
    #[serde(default)]
    pub rate_limits: Option<RawRateLimits>,
    #[serde(default)]
    pub realm: Option<S<String>>,
    #[serde(default)]
    pub password_hash_concurrency: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawRateLimits {
    #[serde(default)]
    pub per_client_per_minute: Option<S<u64>>,
    #[serde(default)]
    pub per_user_per_minute: Option<S<u64>>,
    #[serde(default)]
    pub per_address_per_minute: Option<S<u64>>,
    #[serde(default)]
    pub failures_before_backoff: Option<S<u64>>,
    #[serde(default)]
    pub identity_failures_before_backoff: Option<S<u64>>,
    #[serde(default)]
    pub max_backoff_seconds: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawUpstream {
    pub url: S<String>,
    #[serde(default)]
    pub ca_file: Option<S<String>>,
    #[serde(default)]
    pub connect_timeout_ms: Option<S<u64>>,
    #[serde(default)]
    pub response_timeout_ms: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawRoute {
    #[serde(default)]
    pub id: Option<S<String>>,
    pub path: S<String>,
    #[serde(default)]
    pub methods: Option<Vec<S<String>>>,
    #[serde(default)]
    pub scopes: Option<Vec<S<String>>>,
    #[serde(default)]
    pub auth: Option<S<String>>,
    pub upstream: S<String>,
    #[serde(default)]
    pub allow_encoded_slashes: Option<bool>,
    #[serde(default)]
    pub allow_semicolons: Option<bool>,
    #[serde(default)]
    pub allow_double_encoding: Option<bool>,
    #[serde(default)]
    pub case_insensitive: Option<bool>,
    #[serde(default)]
    pub max_body_bytes: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawIdentityHeaders {
    #[serde(default)]
    pub user: Option<S<String>>,
    #[serde(default)]
    pub client: Option<S<String>>,
    #[serde(default)]
    pub scopes: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawCache {
    #[serde(default)]
    pub max_entries: Option<S<u64>>,
    #[serde(default)]
    pub ttl_seconds: Option<S<u64>>,
    #[serde(default)]
    pub revocation_poll_ms: Option<S<u64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawLimits {
    #[serde(default)]
    pub max_connections: Option<S<u64>>,
    #[serde(default)]
    pub header_read_timeout_seconds: Option<S<u64>>,
    #[serde(default)]
    pub token_request_max_bytes: Option<S<u64>>,
    #[serde(default)]
    pub max_body_bytes: Option<S<u64>>,
    #[serde(default)]
    pub max_header_bytes: Option<S<u64>>,
    #[serde(default)]
    pub max_headers: Option<S<u64>>,
    #[serde(default)]
    pub idle_timeout_seconds: Option<S<u64>>,
    #[serde(default)]
    pub write_timeout_seconds: Option<S<u64>>,
    #[serde(default)]
    pub request_timeout_seconds: Option<S<u64>>,
}
