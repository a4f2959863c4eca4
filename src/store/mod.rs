//! Persistent state behind one async, backend-neutral trait: users, clients and tokens.
//!
//! The store never sees a raw token or client secret, only their [`Digest`]s. Backends:
//! [`sqlite::SqliteStore`] (embedded default). The token endpoint, the guard and the cache
//! depend on [`Store`] alone, so another backend slots in without touching them.

pub mod cache;
pub mod postgres;
pub mod rules;
mod sql;
pub mod sqlite;
pub mod transfer;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::crypto::Digest;
use crate::scope::ScopeSet;

/// OAuth 2.0 grant types a client can be registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantType {
    AuthorizationCode,
    Password,
    ClientCredentials,
    RefreshToken,
}

impl GrantType {
    pub const ALL: [GrantType; 4] = [
        GrantType::AuthorizationCode,
        GrantType::Password,
        GrantType::ClientCredentials,
        GrantType::RefreshToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
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
    /// Sees and manages every application at `/o/applications/`.
    pub is_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    /// Human name given at registration.
    pub name: String,
    /// SHA-256 of the secret (secrets are 256-bit random values, so a fast hash is safe);
    /// `None` for a public client (RFC 6749 §2.1), which has no secret.
    pub secret_digest: Option<Digest>,
    pub grants: Vec<GrantType>,
    /// Scopes this client may ever obtain.
    pub scopes: ScopeSet,
    /// Where `/o/authorize/` may send the user back (exact match; RFC 8252 loopback ports).
    pub redirect_uris: Vec<String>,
    /// Never ask the user for consent (a first-party application).
    pub skip_consent: bool,
    /// The user who registered it at `/o/applications/`; `None` for the command line.
    pub owner: Option<String>,
    pub created_at: i64,
    /// A secret imported from django-oauth-toolkit in Django's hash format
    /// (`pbkdf2_sha256$…`): verified as it is until its first successful use, which replaces
    /// it with `secret_digest` (then `None`). `secret_digest` meanwhile holds a digest of
    /// nothing anyone knows.
    pub imported_secret: Option<String>,
}

impl ClientRecord {
    pub fn is_public(&self) -> bool {
        self.secret_digest.is_none()
    }
}

/// An authorization code (RFC 6749 §4.1.2), stored as its digest, bound to everything the
/// token request must repeat or prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    pub digest: Digest,
    pub client_id: String,
    pub username: String,
    /// The `redirect_uri` of the authorization request, which the token request repeats.
    pub redirect_uri: String,
    pub scopes: ScopeSet,
    /// The S256 PKCE challenge.
    pub code_challenge: String,
    pub issued_at: i64,
    pub expires_at: i64,
    /// When it was exchanged; a code is used once.
    pub used_at: Option<i64>,
}

/// A signed-in browser session, stored as the digest of its random id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub digest: Digest,
    pub username: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Outcome of [`Store::redeem_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// The code was unused and live: it is used now, and the tokens are stored.
    Redeemed,
    /// The code had been used already: every token issued from it was revoked now (RFC 6749
    /// §4.1.2).
    Replayed(Revoked),
    /// Unknown or expired.
    Stale,
}

/// What every token record carries: access tokens, refresh tokens and token listings alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMeta {
    pub digest: Digest,
    pub client_id: String,
    /// Resource owner; `None` for client_credentials tokens.
    pub username: Option<String>,
    pub scopes: ScopeSet,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl TokenMeta {
    /// Unrevoked and unexpired at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }

    /// What `portcullis tokens list` shows.
    pub fn status(&self, now: i64) -> TokenStatus {
        match (self.revoked_at, self.expires_at > now) {
            (Some(_), _) => TokenStatus::Revoked,
            (None, false) => TokenStatus::Expired,
            (None, true) => TokenStatus::Active,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Active,
    Expired,
    Revoked,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Expired => "expired",
            TokenStatus::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenRecord {
    pub meta: TokenMeta,
    /// The refresh token issued alongside (or the one this token was refreshed from).
    pub refresh: Option<Digest>,
    /// The grant this token descends from: every token of one original grant shares it, so a
    /// detected refresh-token reuse can revoke them all.
    pub family: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    /// Its scopes are the original grant's; a refresh can narrow the access token, never them.
    pub meta: TokenMeta,
    pub family: Digest,
    /// When this token was exchanged for a new pair (rotation); `None` while unused or when
    /// revoked by other means.
    pub rotated_at: Option<i64>,
    /// The salt its successors were derived with, so that a retry within the grace period
    /// gets the same pair (see `crypto::derive_rotated`).
    pub rotation_salt: Option<[u8; 32]>,
}

/// Records read as their common fields.
impl std::ops::Deref for AccessTokenRecord {
    type Target = TokenMeta;
    fn deref(&self) -> &TokenMeta {
        &self.meta
    }
}

impl std::ops::Deref for RefreshTokenRecord {
    type Target = TokenMeta;
    fn deref(&self) -> &TokenMeta {
        &self.meta
    }
}

/// Whose tokens a bulk operation concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOwner {
    User(String),
    Client(String),
    /// What one user granted one client.
    Grant {
        user: String,
        client: String,
    },
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
    pub meta: TokenMeta,
    /// At the `now` the listing was made for.
    pub status: TokenStatus,
}

/// Which tokens a step of a store rule concerns (see [`TokenTx`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFilter<'a> {
    /// The one token with this digest.
    Digest(&'a Digest),
    /// The access tokens issued with (or refreshed from) this refresh token.
    IssuedFrom(&'a Digest),
    /// Every token of one grant family.
    Family(&'a Digest),
    User(&'a str),
    Client(&'a str),
    /// What one user granted one client.
    Grant {
        user: &'a str,
        client: &'a str,
    },
    All,
}

/// What [`TokenTx::take_code`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeState {
    /// Unused and live: now marked used.
    Taken,
    /// Used before.
    Used,
    /// Unknown or expired.
    Unusable,
}

impl<'a> From<&'a TokenOwner> for TokenFilter<'a> {
    fn from(owner: &'a TokenOwner) -> Self {
        match owner {
            TokenOwner::User(u) => TokenFilter::User(u),
            TokenOwner::Client(c) => TokenFilter::Client(c),
            TokenOwner::Grant { user, client } => TokenFilter::Grant { user, client },
            TokenOwner::All => TokenFilter::All,
        }
    }
}

/// A backend's own error, boxed: the rules and the callers never look inside it.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// The steps the store's rules ([`rules`]) are written in: one transaction of a backend,
/// synchronous, each step atomic within it. A backend implements these few operations on its
/// tables; how tokens are rotated, revoked in cascade, logged for other gateways' caches and
/// swept is decided once, in `rules`, for every backend.
pub trait TokenTx {
    /// The client a token of `kind` belongs to, if such a token exists.
    fn owner_of(
        &mut self,
        kind: TokenKind,
        digest: &Digest,
    ) -> Result<Option<String>, BackendError>;
    /// Revokes the live access tokens that `filter` selects; returns their digests.
    fn revoke_access(
        &mut self,
        filter: TokenFilter<'_>,
        now: i64,
    ) -> Result<Vec<Digest>, BackendError>;
    /// Revokes the live refresh tokens that `filter` selects (never `IssuedFrom`); returns how
    /// many.
    fn revoke_refresh(&mut self, filter: TokenFilter<'_>, now: i64) -> Result<usize, BackendError>;
    /// The live access tokens that `filter` selects.
    fn live_access(
        &mut self,
        filter: TokenFilter<'_>,
        now: i64,
    ) -> Result<Vec<Digest>, BackendError>;
    /// Whether a refresh token is live at `now`; with `rotate`, also marks it rotated (revoked
    /// now, with the salt its successors were derived from) when it was.
    fn take_refresh(
        &mut self,
        digest: &Digest,
        now: i64,
        rotate: Option<&[u8; 32]>,
    ) -> Result<bool, BackendError>;
    fn insert_access(&mut self, record: &AccessTokenRecord) -> Result<(), BackendError>;
    fn insert_refresh(&mut self, record: &RefreshTokenRecord) -> Result<(), BackendError>;
    /// Appends access-token revocations to the log every gateway follows.
    fn log_revocations(&mut self, digests: &[Digest], now: i64) -> Result<(), BackendError>;
    /// Deletes a user or a client, and by cascade their tokens. False when there was none.
    fn delete_owner(&mut self, owner: &TokenOwner) -> Result<bool, BackendError>;
    /// Deletes at most `batch` tokens of `kind` that expired by `now` or were revoked (but
    /// not rotated: a rotated refresh token stays until it expires, to detect its reuse).
    fn delete_dead(
        &mut self,
        kind: TokenKind,
        now: i64,
        batch: usize,
    ) -> Result<usize, BackendError>;
    /// Deletes at most `batch` revocation-log entries written at or before `before`.
    fn trim_revocation_log(&mut self, before: i64, batch: usize) -> Result<usize, BackendError>;
    /// Marks an authorization code used, if it is unused and live at `now`, and says what it
    /// found.
    fn take_code(&mut self, digest: &Digest, now: i64) -> Result<CodeState, BackendError>;
    /// Deletes at most `batch` authorization codes and sessions that expired by `now`.
    fn delete_expired_grants(&mut self, now: i64, batch: usize) -> Result<usize, BackendError>;
    /// Forgets `user`'s consent to `client`.
    fn forget_consent(&mut self, user: &str, client: &str) -> Result<(), BackendError>;
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
    Backend(BackendError),
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("no database at {0} (`portcullis migrate` creates it)")]
    Missing(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Everything Portcullis keeps. Implementations must make each method atomic.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Whether the store can do what issuance needs, within its timeout; used by `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    async fn add_user(&self, user: UserRecord) -> Result<(), StoreError>;
    async fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Removes the user and every token issued to them (their live access tokens go to the
    /// revocation log first). False when there was no such user.
    async fn remove_user(&self, username: &str, now: i64) -> Result<bool, StoreError>;
    async fn set_password(&self, username: &str, password_hash: String)
    -> Result<bool, StoreError>;

    async fn add_client(&self, client: ClientRecord) -> Result<(), StoreError>;
    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;
    async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError>;
    /// Removes the client and every token issued to it, as [`Store::remove_user`] does.
    async fn remove_client(&self, client_id: &str, now: i64) -> Result<bool, StoreError>;
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
    /// Revokes every live token of a user, a client, a user's grant to a client, or everyone.
    /// Revoking a grant also forgets the user's consent to that client.
    async fn revoke_tokens_of(&self, owner: TokenOwner, now: i64) -> Result<Revoked, StoreError>;
    /// The tokens of `owner`, oldest first, with their status at `now`.
    async fn list_tokens(
        &self,
        owner: TokenOwner,
        now: i64,
    ) -> Result<Vec<TokenSummary>, StoreError>;
    async fn live_tokens(&self, now: i64) -> Result<LiveTokens, StoreError>;

    /// Deletes at most `batch` expired or revoked tokens of each kind in one short transaction.
    /// Rotated refresh tokens stay until they expire, so that their reuse is still detected.
    async fn sweep(&self, now: i64, batch: usize) -> Result<Swept, StoreError>;

    /// Replaces a client's registration (all but its id, secret and creation time). False when
    /// there is no such client.
    async fn update_client(&self, client: ClientRecord) -> Result<bool, StoreError>;

    /// Stores a new authorization code.
    async fn insert_code(&self, code: CodeRecord) -> Result<(), StoreError>;
    async fn code(&self, digest: Digest) -> Result<Option<CodeRecord>, StoreError>;
    /// In one transaction: use the code if it is unused and live, and store the tokens issued
    /// for it; if it was used before, revoke every token issued from it (its family).
    async fn redeem_code(
        &self,
        code: Digest,
        now: i64,
        access: AccessTokenRecord,
        refresh: Option<RefreshTokenRecord>,
    ) -> Result<CodeRedemption, StoreError>;

    async fn insert_session(&self, session: SessionRecord) -> Result<(), StoreError>;
    /// The session with this digest, if it exists and is live at `now`.
    async fn session(&self, digest: Digest, now: i64) -> Result<Option<SessionRecord>, StoreError>;
    async fn remove_session(&self, digest: Digest) -> Result<(), StoreError>;

    /// The scopes `username` has consented to give `client_id`, if any.
    async fn consent(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<Option<ScopeSet>, StoreError>;
    /// Records (or widens to) consent to `scopes`.
    async fn grant_consent(
        &self,
        username: &str,
        client_id: &str,
        scopes: ScopeSet,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Access tokens revoked since log entry `after` (by any process sharing this store), with
    /// the newest entry id, so that every gateway can drop them from its cache.
    async fn revocations_since(&self, after: i64) -> Result<(i64, Vec<Digest>), StoreError>;

    /// What another store needs to carry on (see [`transfer`]): users, clients, consents,
    /// and every token that has not expired at `now`, in one consistent read.
    async fn export(&self, now: i64) -> Result<transfer::Snapshot, StoreError>;
    /// Adds the records of `snapshot` that this store lacks, in one transaction; a record
    /// whose key is here already is kept as it is (so an import run twice adds nothing).
    /// Returns how many rows of each kind were added.
    async fn import(&self, snapshot: transfer::Snapshot) -> Result<transfer::Counts, StoreError>;
}

pub type SharedStore = Arc<dyn Store>;
