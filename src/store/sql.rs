//! What the SQL backends share: table and column names (their schemas have the same tables
//! and columns, in each engine's types) and how a client's list-valued fields are kept in a
//! column. The drivers keep what differs: parameter syntax, types and row access.

use super::{ClientRecord, GrantType, TokenKind};

/// The table that holds tokens of `kind`.
pub fn table_of(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Access => "access_tokens",
        TokenKind::Refresh => "refresh_tokens",
    }
}

pub const USER_COLS: &str = "username, password_hash, created_at, is_admin";
pub const CLIENT_COLS: &str = "client_id, name, secret_digest, grants, scopes, created_at, public, redirect_uris, skip_consent, owner";
pub const CODE_COLS: &str = "digest, client_id, username, redirect_uri, scopes, code_challenge, issued_at, expires_at, used_at";
pub const SESSION_COLS: &str = "digest, username, created_at, expires_at";
/// The columns of `TokenMeta`, first in every token query.
pub const META_COLS: &str =
    "digest, client_id, username, scopes, issued_at, expires_at, revoked_at";
pub const ACCESS_COLS: &str = "digest, client_id, username, scopes, issued_at, expires_at, revoked_at, refresh_digest, family";
pub const REFRESH_COLS: &str = "digest, client_id, username, scopes, issued_at, expires_at, revoked_at, family, rotated_at, rotation_salt";

/// A public client keeps a placeholder in the `secret_digest` column (it is `NOT NULL`); the
/// `public` column says that it has none.
const NO_SECRET: [u8; 32] = [0; 32];

/// A client's columns after its id and name, as `add_client` and `update_client` write them:
/// secret digest, grants, scopes, public, redirect URIs.
pub fn client_params(c: &ClientRecord) -> (Vec<u8>, String, String, bool, String) {
    let grants: Vec<&str> = c.grants.iter().map(|g| g.as_str()).collect();
    (
        c.secret_digest.map_or(NO_SECRET.to_vec(), |d| d.0.to_vec()),
        grants.join(" "),
        c.scopes.to_string(),
        c.is_public(),
        c.redirect_uris.join(" "),
    )
}

/// The `grants` column back (space-separated; unknown names, from a newer binary, skipped).
pub fn grants_from(column: &str) -> Vec<GrantType> {
    column.split(' ').filter_map(|g| g.parse().ok()).collect()
}

/// The `redirect_uris` column back (space-separated; a registered URI holds no space).
pub fn redirect_uris_from(column: &str) -> Vec<String> {
    column
        .split(' ')
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}
