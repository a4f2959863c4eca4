//! What the SQL backends share: table and column names (their schemas have the same tables
//! and columns, in each engine's types) and how a client's list-valued fields are kept in a
//! column. The drivers keep what differs: parameter syntax, types and row access.

use super::{BackendError, ClientRecord, GrantType, TokenFilter, TokenKind, TokenOwner};

/// The table that holds tokens of `kind`.
pub fn table_of(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Access => "access_tokens",
        TokenKind::Refresh => "refresh_tokens",
    }
}

pub const USER_COLS: &str = "username, password_hash, created_at, is_admin";
pub const CLIENT_COLS: &str = "client_id, name, secret_digest, grants, scopes, created_at, public, redirect_uris, skip_consent, owner, imported_secret";
pub const CODE_COLS: &str = "digest, client_id, username, redirect_uri, scopes, code_challenge, issued_at, expires_at, used_at";
pub const SESSION_COLS: &str = "digest, username, created_at, expires_at";
pub const CONSENT_COLS: &str = "username, client_id, scopes, granted_at";
/// The columns of `TokenMeta`, first in every token query.
pub const META_COLS: &str =
    "digest, client_id, username, scopes, issued_at, expires_at, revoked_at";
pub const ACCESS_COLS: &str = "digest, client_id, username, scopes, issued_at, expires_at, revoked_at, refresh_digest, family";
pub const REFRESH_COLS: &str = "digest, client_id, username, scopes, issued_at, expires_at, revoked_at, family, rotated_at, rotation_salt";

/// What an insert does when the row's key is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Fail: the caller reports a conflict (adding a user or client that exists).
    Fail,
    /// Keep the row that is there and insert nothing (an import run again).
    Keep,
}

impl OnConflict {
    /// What follows the `VALUES` list.
    pub fn clause(self) -> &'static str {
        match self {
            OnConflict::Fail => "",
            OnConflict::Keep => " ON CONFLICT DO NOTHING",
        }
    }
}

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

/// How one engine writes what the shared conditions leave open.
pub struct Dialect {
    /// Parameter `n` (1-based) as the engine writes it (`?1`, `$1`).
    pub param: fn(u8) -> String,
    /// A condition true for every row that still binds parameter 1, to [`Key::One`] (so that
    /// every filter binds the same parameters in the same places).
    pub all: &'static str,
}

/// A value a condition binds, for the driver to hand to its engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    Bytes(&'a [u8]),
    Text(&'a str),
    /// The integer 1, for [`Dialect::all`].
    One,
}

/// A filter as an SQL condition over a token table of `kind`: parameter 1 and, for a grant,
/// parameter 3 are bound to the returned keys in that order; parameter 2 is left to the
/// caller (its `now`).
pub fn condition<'a>(
    dialect: &Dialect,
    filter: TokenFilter<'a>,
    kind: TokenKind,
) -> Result<(String, Vec<Key<'a>>), BackendError> {
    let p = dialect.param;
    let on = |column: &str, key: Key<'a>| (format!("{column} = {}", p(1)), vec![key]);
    Ok(match filter {
        TokenFilter::Digest(d) => on("digest", Key::Bytes(&d.0)),
        TokenFilter::IssuedFrom(d) if kind == TokenKind::Access => {
            on("refresh_digest", Key::Bytes(&d.0))
        }
        TokenFilter::IssuedFrom(_) => {
            return Err("refresh tokens are not issued from refresh tokens".into());
        }
        TokenFilter::Family(d) => on("family", Key::Bytes(&d.0)),
        TokenFilter::User(u) => on("username", Key::Text(u)),
        TokenFilter::Client(c) => on("client_id", Key::Text(c)),
        TokenFilter::Grant { user, client } => (
            format!("username = {} AND client_id = {}", p(1), p(3)),
            vec![Key::Text(user), Key::Text(client)],
        ),
        TokenFilter::All => (dialect.all.to_owned(), vec![Key::One]),
    })
}

/// An owner as an SQL condition over a token table, parameters 1 (and 2) bound to the
/// returned keys; `All` binds none.
pub fn owner_condition(dialect: &Dialect, owner: &TokenOwner) -> (String, Vec<String>) {
    let p = dialect.param;
    match owner {
        TokenOwner::User(name) => (format!("username = {}", p(1)), vec![name.clone()]),
        TokenOwner::Client(id) => (format!("client_id = {}", p(1)), vec![id.clone()]),
        TokenOwner::Grant { user, client } => (
            format!("username = {} AND client_id = {}", p(1), p(2)),
            vec![user.clone(), client.clone()],
        ),
        TokenOwner::All => ("1 = 1".to_owned(), Vec::new()),
    }
}

/// A `client_credentials` access token has no user and no refresh token: the indexes on those
/// columns leave NULLs out, so storing one writes two B-trees fewer (issuance +12-14% alone,
/// +33-36% beside the throttle's clock change: benches/README.md, 2026-12-02). Every lookup
/// on them is `column = ?`, which implies `IS NOT NULL`, so the planners of both engines use
/// the partial indexes (the conditions above; a test in `store::sqlite::tx` reads SQLite's
/// plans, one in `tests/postgres.rs` PostgreSQL's). Both engines' migrations apply this text;
/// on a large store it rebuilds the two indexes once, at the first start of the new version.
pub const PARTIAL_TOKEN_INDEXES: &str = r#"
DROP INDEX access_tokens_user;
CREATE INDEX access_tokens_user ON access_tokens(username) WHERE username IS NOT NULL;
DROP INDEX access_tokens_refresh;
CREATE INDEX access_tokens_refresh ON access_tokens(refresh_digest)
    WHERE refresh_digest IS NOT NULL;
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Digest;

    const QUESTION: Dialect = Dialect {
        param: |n| format!("?{n}"),
        all: "?1 IS NOT NULL",
    };

    #[test]
    fn filters_bind_parameter_one_then_three() {
        let d = Digest::of("x");
        let cases: Vec<(TokenFilter<'_>, TokenKind, &str, Vec<Key<'_>>)> = vec![
            (
                TokenFilter::Digest(&d),
                TokenKind::Refresh,
                "digest = ?1",
                vec![Key::Bytes(&d.0)],
            ),
            (
                TokenFilter::IssuedFrom(&d),
                TokenKind::Access,
                "refresh_digest = ?1",
                vec![Key::Bytes(&d.0)],
            ),
            (
                TokenFilter::Family(&d),
                TokenKind::Access,
                "family = ?1",
                vec![Key::Bytes(&d.0)],
            ),
            (
                TokenFilter::User("u"),
                TokenKind::Access,
                "username = ?1",
                vec![Key::Text("u")],
            ),
            (
                TokenFilter::Client("c"),
                TokenKind::Refresh,
                "client_id = ?1",
                vec![Key::Text("c")],
            ),
            (
                TokenFilter::Grant {
                    user: "u",
                    client: "c",
                },
                TokenKind::Access,
                "username = ?1 AND client_id = ?3",
                vec![Key::Text("u"), Key::Text("c")],
            ),
            (
                TokenFilter::All,
                TokenKind::Refresh,
                "?1 IS NOT NULL",
                vec![Key::One],
            ),
        ];
        for (filter, kind, sql, keys) in cases {
            assert_eq!(
                condition(&QUESTION, filter, kind).unwrap(),
                (sql.to_owned(), keys)
            );
        }
        assert!(condition(&QUESTION, TokenFilter::IssuedFrom(&d), TokenKind::Refresh).is_err());
        assert_eq!(
            owner_condition(
                &QUESTION,
                &TokenOwner::Grant {
                    user: "u".into(),
                    client: "c".into()
                }
            ),
            (
                "username = ?1 AND client_id = ?2".to_owned(),
                vec!["u".to_owned(), "c".to_owned()]
            )
        );
    }
}
