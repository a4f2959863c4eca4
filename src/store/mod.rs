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
use crate::scope::ScopeSet;

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
    pub scopes: ScopeSet,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenRecord {
    pub digest: Digest,
    pub client_id: String,
    /// Resource owner; `None` for client_credentials tokens.
    pub username: Option<String>,
    pub scopes: ScopeSet,
    pub issued_at: i64,
    pub expires_at: i64,
    /// The refresh token issued alongside (or the one this token was refreshed from).
    pub refresh: Option<Digest>,
    /// The grant this token descends from: every token of one original grant shares it, so a
    /// detected refresh-token reuse can revoke them all.
    pub family: Digest,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub digest: Digest,
    pub client_id: String,
    pub username: Option<String>,
    /// The scope of the original grant; a refresh can narrow the access token, never this.
    pub scopes: ScopeSet,
    pub issued_at: i64,
    pub expires_at: i64,
    pub family: Digest,
    pub revoked_at: Option<i64>,
    /// When this token was exchanged for a new pair (rotation); `None` while unused or when
    /// revoked by other means.
    pub rotated_at: Option<i64>,
    /// The salt its successors were derived with, so that a retry within the grace period
    /// gets the same pair (see `crypto::derive_rotated`).
    pub rotation_salt: Option<[u8; 32]>,
}

impl RefreshTokenRecord {
    pub fn is_usable(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

impl AccessTokenRecord {
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// Whose tokens a bulk operation concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOwner {
    User(String),
    Client(String),
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// A token as listed by `portcullis tokens list`: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSummary {
    pub kind: TokenKind,
    pub digest: Digest,
    pub client_id: String,
    pub username: Option<String>,
    pub scopes: ScopeSet,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// What a revocation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Access tokens revoked now; every cache must drop them.
    pub access: Vec<Digest>,
    /// Refresh tokens revoked now.
    pub refresh: usize,
}

/// What one sweep batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub access: usize,
    pub refresh: usize,
}

/// Live (unrevoked, unexpired) tokens in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveTokens {
    pub access: u64,
    pub refresh: u64,
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
    #[error("no database at {0} (`portcullis migrate` creates it)")]
    Missing(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Everything Portcullis keeps. Implementations must make each method atomic.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Whether the store can do what issuance needs, within its timeout; used by `/readyz`.
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
    /// `rotation_salt` is given, mark it rotated (revoked, with the salt its successors were
    /// derived from) and revoke the access tokens issued from it; store the new tokens.
    /// Concurrent exchanges of one token: exactly one gets `Exchanged` when rotating.
    async fn exchange_refresh_token(
        &self,
        old: Digest,
        now: i64,
        rotation_salt: Option<[u8; 32]>,
        access: AccessTokenRecord,
        refresh: Option<RefreshTokenRecord>,
    ) -> Result<RefreshExchange, StoreError>;

    /// RFC 7009: revokes the token with this digest if it belongs to `client_id`. A refresh
    /// token takes the access tokens issued from it along. `refresh_first` only orders the
    /// lookups (the `token_type_hint`); both kinds are always searched.
    async fn revoke_token(
        &self,
        digest: Digest,
        client_id: &str,
        now: i64,
        refresh_first: bool,
    ) -> Result<Revoked, StoreError>;
    /// Revokes every token of one grant family (refresh-token reuse was detected).
    async fn revoke_family(&self, family: Digest, now: i64) -> Result<Revoked, StoreError>;
    /// Revokes every live token of a user, a client or everyone.
    async fn revoke_tokens_of(&self, owner: TokenOwner, now: i64) -> Result<Revoked, StoreError>;
    async fn list_tokens(
        &self,
        owner: TokenOwner,
        now: i64,
    ) -> Result<Vec<TokenSummary>, StoreError>;
    async fn live_tokens(&self, now: i64) -> Result<LiveTokens, StoreError>;

    /// Deletes at most `batch` expired or revoked tokens of each kind in one short transaction.
    /// Rotated refresh tokens stay until they expire, so that their reuse is still detected.
    async fn sweep(&self, now: i64, batch: usize) -> Result<Swept, StoreError>;

    /// Access tokens revoked since log entry `after` (by any process sharing this store), with
    /// the newest entry id, so that every gateway can drop them from its cache.
    async fn revocations_since(&self, after: i64) -> Result<(i64, Vec<Digest>), StoreError>;
}

pub type SharedStore = Arc<dyn Store>;
