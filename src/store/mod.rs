//! Persistent state behind one async, backend-neutral trait: users, clients and tokens.
//!
//! The store never sees a raw token or client secret, only their [`Digest`]s. Backends:
//! [`sqlite::SqliteStore`] (embedded default). The token endpoint, the guard and the cache
//! depend on [`Store`] alone, so another backend slots in without touching them.

pub mod cache;
pub mod sqlite;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::crypto::Digest;

/// OAuth 2.0 grant types a client can be registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantType {
    Password,
    ClientCredentials,
    RefreshToken,
}

impl GrantType {
    pub const ALL: [GrantType; 3] = [
        GrantType::Password,
        GrantType::ClientCredentials,
        GrantType::RefreshToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::Password => "password",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::RefreshToken => "refresh_token",
        }
    }
}

impl fmt::Display for GrantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GrantType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        GrantType::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub username: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    /// Human name given at registration.
    pub name: String,
    /// SHA-256 of the secret. Secrets are 256-bit random values, so a fast hash is safe.
    pub secret_digest: Digest,
    pub grants: Vec<GrantType>,
    /// Scopes this client may ever obtain.
    pub scopes: Vec<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenRecord {
    pub digest: Digest,
    pub client_id: String,
    /// Resource owner; `None` for client_credentials tokens.
    pub username: Option<String>,
    pub scopes: Vec<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    /// The refresh token issued alongside (or the one this token was refreshed from).
    pub refresh: Option<Digest>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub digest: Digest,
    pub client_id: String,
    pub username: Option<String>,
    /// The scope of the original grant; a refresh can narrow the access token, never this.
    pub scopes: Vec<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl RefreshTokenRecord {
    pub fn is_usable(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// Outcome of [`Store::exchange_refresh_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshExchange {
    /// The new tokens are stored; these access tokens (issued from the old refresh token)
    /// were revoked with it and must leave every cache.
    Exchanged { revoked_access: Vec<Digest> },
    /// The refresh token was used, revoked or expired by the time the transaction ran.
    Stale,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Everything Portcullis keeps. Implementations must make each method atomic.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Cheap round trip used by `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    async fn add_user(&self, user: UserRecord) -> Result<(), StoreError>;
    async fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Removes the user and every token issued to them. False when there was no such user.
    async fn remove_user(&self, username: &str) -> Result<bool, StoreError>;
    async fn set_password(&self, username: &str, password_hash: String)
    -> Result<bool, StoreError>;

    async fn add_client(&self, client: ClientRecord) -> Result<(), StoreError>;
    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;
    async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError>;
    /// Removes the client and every token issued to it.
    async fn remove_client(&self, client_id: &str) -> Result<bool, StoreError>;
    async fn set_client_secret(
        &self,
        client_id: &str,
        secret_digest: Digest,
    ) -> Result<bool, StoreError>;

    /// Stores a freshly issued access token and, when present, its refresh token, durably:
    /// when this returns, the tokens survive a crash.
    async fn insert_tokens(
        &self,
        access: AccessTokenRecord,
        refresh: Option<RefreshTokenRecord>,
    ) -> Result<(), StoreError>;
    async fn access_token(&self, digest: Digest) -> Result<Option<AccessTokenRecord>, StoreError>;
    async fn refresh_token(&self, digest: Digest)
    -> Result<Option<RefreshTokenRecord>, StoreError>;

    /// In one transaction: check that refresh token `old` is still usable at `now`; when
    /// `rotate`, revoke it and the access tokens issued from it; store the new tokens.
    /// Concurrent exchanges of one token: exactly one gets `Exchanged` when rotating.
    async fn exchange_refresh_token(
        &self,
        old: Digest,
        now: i64,
        rotate: bool,
        access: AccessTokenRecord,
        refresh: Option<RefreshTokenRecord>,
    ) -> Result<RefreshExchange, StoreError>;
}

pub type SharedStore = Arc<dyn Store>;
