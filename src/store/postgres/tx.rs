//! PostgreSQL rows: how records map to columns, and [`PgTx`], the [`TokenTx`] steps of the
//! store's rules as SQL inside one transaction.

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{GenericClient, Row, Statement, Transaction};

use super::notify;
use crate::crypto::Digest;
use crate::scope::ScopeSet;
use crate::store::sql::{self, Dialect, Key, grants_from, redirect_uris_from};
pub use crate::store::sql::{
    ACCESS_COLS, CLIENT_COLS, CODE_COLS, CONSENT_COLS, META_COLS, OnConflict, REFRESH_COLS,
    SESSION_COLS, USER_COLS, table_of,
};
use crate::store::transfer::ConsentRecord;
use crate::store::{
    AccessTokenRecord, BackendError, ClientRecord, CodeRecord, CodeState, RefreshTokenRecord,
    SessionRecord, StoreError, TokenFilter, TokenKind, TokenMeta, TokenOwner, TokenTx, UserRecord,
};

/// A postgres error as the store reports it; a unique violation is a conflict over `what`.
pub fn backend(e: postgres::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

pub fn conflict(what: String) -> impl FnOnce(postgres::Error) -> StoreError {
    move |e| match e.code() {
        Some(c) if *c == postgres::error::SqlState::UNIQUE_VIOLATION => StoreError::Conflict(what),
        _ => backend(e),
    }
}

/// How this engine writes the shared conditions (`store::sql`).
const POSTGRES: Dialect = Dialect {
    param: |n| format!("${n}"),
    all: "$1::BIGINT IS NOT NULL",
};

/// An owner as an SQL condition over a token table, parameters 1 (and 2) bound to the keys.
pub fn owner_condition(owner: &TokenOwner) -> (String, Vec<String>) {
    sql::owner_condition(&POSTGRES, owner)
}

/// The keys a [`condition`] binds.
type Keys<'a> = Vec<Box<dyn ToSql + Sync + 'a>>;

/// [`sql::condition`] with its keys as this engine binds them.
fn condition<'a>(
    filter: TokenFilter<'a>,
    kind: TokenKind,
) -> Result<(String, Keys<'a>), BackendError> {
    let (sql, keys) = sql::condition(&POSTGRES, filter, kind)?;
    let keys = keys
        .into_iter()
        .map(|k| -> Box<dyn ToSql + Sync + 'a> {
            match k {
                Key::Bytes(b) => Box::new(b),
                Key::Text(t) => Box::new(t),
                Key::One => Box::new(1i64),
            }
        })
        .collect();
    Ok((sql, keys))
}

/// The parameters of a [`condition`] query: its first key, `now`, then any further key.
fn keyed<'p>(keys: &'p Keys<'_>, now: &'p i64) -> Vec<&'p (dyn ToSql + Sync)> {
    let mut out: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(keys.len() + 1);
    out.push(&*keys[0]);
    out.push(now);
    out.extend(keys[1..].iter().map(|k| &**k as &(dyn ToSql + Sync)));
    out
}

fn digest_from(bytes: Vec<u8>) -> Result<Digest, BackendError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| BackendError::from("a digest in the database is not 32 bytes"))?;
    Ok(Digest(arr))
}

pub fn digest_col(row: &Row, idx: usize) -> Result<Digest, StoreError> {
    digest_from(row.try_get(idx).map_err(backend)?).map_err(StoreError::Backend)
}

fn optional_digest(row: &Row, idx: usize) -> Result<Option<Digest>, StoreError> {
    let bytes: Option<Vec<u8>> = row.try_get(idx).map_err(backend)?;
    bytes
        .map(|b| digest_from(b).map_err(StoreError::Backend))
        .transpose()
}

fn get<'r, T: postgres::types::FromSql<'r>>(row: &'r Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx).map_err(backend)
}

fn scopes_col(row: &Row, idx: usize) -> Result<ScopeSet, StoreError> {
    Ok(ScopeSet::from_stored(&get::<String>(row, idx)?))
}

pub fn user_row(row: &Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        username: get(row, 0)?,
        password_hash: get(row, 1)?,
        created_at: get(row, 2)?,
        is_admin: get(row, 3)?,
    })
}

pub fn client_row(row: &Row) -> Result<ClientRecord, StoreError> {
    let grants: String = get(row, 3)?;
    let redirect_uris: String = get(row, 7)?;
    let public: bool = get(row, 6)?;
    Ok(ClientRecord {
        client_id: get(row, 0)?,
        name: get(row, 1)?,
        secret_digest: if public {
            None
        } else {
            Some(digest_col(row, 2)?)
        },
        grants: grants_from(&grants),
        scopes: scopes_col(row, 4)?,
        created_at: get(row, 5)?,
        redirect_uris: redirect_uris_from(&redirect_uris),
        skip_consent: get(row, 8)?,
        owner: get(row, 9)?,
        imported_secret: get(row, 10)?,
    })
}

pub fn code_row(row: &Row) -> Result<CodeRecord, StoreError> {
    Ok(CodeRecord {
        digest: digest_col(row, 0)?,
        client_id: get(row, 1)?,
        username: get(row, 2)?,
        redirect_uri: get(row, 3)?,
        scopes: scopes_col(row, 4)?,
        code_challenge: get(row, 5)?,
        issued_at: get(row, 6)?,
        expires_at: get(row, 7)?,
        used_at: get(row, 8)?,
    })
}

pub fn session_row(row: &Row) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        digest: digest_col(row, 0)?,
        username: get(row, 1)?,
        created_at: get(row, 2)?,
        expires_at: get(row, 3)?,
    })
}

pub fn meta_row(row: &Row) -> Result<TokenMeta, StoreError> {
    Ok(TokenMeta {
        digest: digest_col(row, 0)?,
        client_id: get(row, 1)?,
        username: get(row, 2)?,
        scopes: scopes_col(row, 3)?,
        issued_at: get(row, 4)?,
        expires_at: get(row, 5)?,
        revoked_at: get(row, 6)?,
    })
}

pub fn access_row(row: &Row) -> Result<AccessTokenRecord, StoreError> {
    Ok(AccessTokenRecord {
        meta: meta_row(row)?,
        refresh: optional_digest(row, 7)?,
        family: digest_col(row, 8)?,
    })
}

pub fn refresh_row(row: &Row) -> Result<RefreshTokenRecord, StoreError> {
    Ok(RefreshTokenRecord {
        meta: meta_row(row)?,
        family: digest_col(row, 7)?,
        rotated_at: get(row, 8)?,
        rotation_salt: optional_digest(row, 9)?.map(|d| d.0),
    })
}

/// The advisory lock every revocation-log write holds until its commit ("revocati" in ASCII).
const REVOCATION_LOG_LOCK: i64 = 0x7265_766f_6361_7469;

/// The statements one connection has prepared, by their text (a fixed set: the queries of
/// this module and `mod.rs`). A prepared statement runs in one round trip; a query sent as
/// text costs two (parse and describe, then bind and execute).
#[derive(Default)]
pub struct Statements(HashMap<String, Statement>);

/// A connection or a transaction on it, with the connection's prepared statements: the
/// client's own `query`/`execute` calls, each on a statement prepared once.
pub struct Prepared<'a, C> {
    pub client: &'a mut C,
    pub statements: &'a mut Statements,
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl<C: GenericClient> Prepared<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.0.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.0.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query(&s, params)
    }

    pub fn query_opt(
        &mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_opt(&s, params)
    }

    pub fn query_one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_one(&s, params)
    }

    pub fn execute(&mut self, sql: &str, params: &Params<'_>) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.execute(&s, params)
    }
}

/// Inserts of whole records; each returns the rows added (0 when `on_conflict` kept a row
/// that was there).
impl<C: GenericClient> Prepared<'_, C> {
    pub fn put_user(
        &mut self,
        u: &UserRecord,
        on_conflict: OnConflict,
    ) -> Result<u64, postgres::Error> {
        self.execute(
            &format!(
                "INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4){}",
                on_conflict.clause()
            ),
            &[&u.username, &u.password_hash, &u.created_at, &u.is_admin],
        )
    }

    pub fn put_client(
        &mut self,
        client: &ClientRecord,
        on_conflict: OnConflict,
    ) -> Result<u64, postgres::Error> {
        let (secret, grants, scopes, public, redirect_uris) = sql::client_params(client);
        self.execute(
            &format!(
                "INSERT INTO clients ({CLIENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11){}",
                on_conflict.clause()
            ),
            &[
                &client.client_id,
                &client.name,
                &secret,
                &grants,
                &scopes,
                &client.created_at,
                &public,
                &redirect_uris,
                &client.skip_consent,
                &client.owner,
                &client.imported_secret,
            ],
        )
    }

    pub fn put_consent(
        &mut self,
        consent: &ConsentRecord,
        on_conflict: OnConflict,
    ) -> Result<u64, postgres::Error> {
        self.execute(
            &format!(
                "INSERT INTO consents ({CONSENT_COLS}) VALUES ($1, $2, $3, $4){}",
                on_conflict.clause()
            ),
            &[
                &consent.username,
                &consent.client_id,
                &consent.scopes.to_string(),
                &consent.granted_at,
            ],
        )
    }

    pub fn put_access(
        &mut self,
        a: &AccessTokenRecord,
        on_conflict: OnConflict,
    ) -> Result<u64, postgres::Error> {
        self.execute(
            &format!(
                "INSERT INTO access_tokens ({ACCESS_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9){}",
                on_conflict.clause()
            ),
            &[
                &&a.digest.0[..],
                &a.client_id,
                &a.username,
                &a.scopes.to_string(),
                &a.issued_at,
                &a.expires_at,
                &a.revoked_at,
                &a.refresh.as_ref().map(|d| &d.0[..]),
                &&a.family.0[..],
            ],
        )
    }

    pub fn put_refresh(
        &mut self,
        r: &RefreshTokenRecord,
        on_conflict: OnConflict,
    ) -> Result<u64, postgres::Error> {
        self.execute(
            &format!(
                "INSERT INTO refresh_tokens ({REFRESH_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10){}",
                on_conflict.clause()
            ),
            &[
                &&r.digest.0[..],
                &r.client_id,
                &r.username,
                &r.scopes.to_string(),
                &r.issued_at,
                &r.expires_at,
                &r.revoked_at,
                &&r.family.0[..],
                &r.rotated_at,
                &r.rotation_salt.as_ref().map(|s| &s[..]),
            ],
        )
    }
}

pub fn consent_row(row: &Row) -> Result<ConsentRecord, StoreError> {
    Ok(ConsentRecord {
        username: get(row, 0)?,
        client_id: get(row, 1)?,
        scopes: scopes_col(row, 2)?,
        granted_at: get(row, 3)?,
    })
}

/// One transaction, as the rules' steps.
pub type PgTx<'a, 'c> = Prepared<'a, Transaction<'c>>;

fn digests(rows: Vec<Row>) -> Result<Vec<Digest>, BackendError> {
    rows.into_iter()
        .map(|r| digest_from(r.try_get(0)?))
        .collect()
}

impl Prepared<'_, Transaction<'_>> {
    fn revoke(
        &mut self,
        kind: TokenKind,
        filter: TokenFilter<'_>,
        now: i64,
    ) -> Result<Vec<Digest>, BackendError> {
        let (cond, keys) = condition(filter, kind)?;
        let rows = self.query(
            &format!(
                "UPDATE {} SET revoked_at = $2 WHERE {cond} AND revoked_at IS NULL AND expires_at > $2 RETURNING digest",
                table_of(kind)
            ),
            &keyed(&keys, &now),
        )?;
        digests(rows)
    }
}

impl TokenTx for Prepared<'_, Transaction<'_>> {
    fn owner_of(
        &mut self,
        kind: TokenKind,
        digest: &Digest,
    ) -> Result<Option<String>, BackendError> {
        Ok(self
            .query_opt(
                &format!("SELECT client_id FROM {} WHERE digest = $1", table_of(kind)),
                &[&&digest.0[..]],
            )?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    fn revoke_access(
        &mut self,
        filter: TokenFilter<'_>,
        now: i64,
    ) -> Result<Vec<Digest>, BackendError> {
        self.revoke(TokenKind::Access, filter, now)
    }

    fn revoke_refresh(&mut self, filter: TokenFilter<'_>, now: i64) -> Result<usize, BackendError> {
        Ok(self.revoke(TokenKind::Refresh, filter, now)?.len())
    }

    fn live_access(
        &mut self,
        filter: TokenFilter<'_>,
        now: i64,
    ) -> Result<Vec<Digest>, BackendError> {
        let (cond, keys) = condition(filter, TokenKind::Access)?;
        let rows = self.query(
            &format!(
                "SELECT digest FROM access_tokens WHERE {cond} AND revoked_at IS NULL AND expires_at > $2"
            ),
            &keyed(&keys, &now),
        )?;
        digests(rows)
    }

    fn take_refresh(
        &mut self,
        digest: &Digest,
        now: i64,
        rotate: Option<&[u8; 32]>,
    ) -> Result<bool, BackendError> {
        let key = &digest.0[..];
        // The UPDATE takes the row's lock: of two concurrent rotations the second re-reads
        // the row after the first commits, finds it revoked and changes nothing.
        Ok(match rotate {
            Some(salt) => {
                self.execute(
                    "UPDATE refresh_tokens SET revoked_at = $2, rotated_at = $2, rotation_salt = $3
                     WHERE digest = $1 AND revoked_at IS NULL AND expires_at > $2",
                    &[&key, &now, &&salt[..]],
                )? == 1
            }
            None => self.query_opt(
                    "SELECT 1 FROM refresh_tokens WHERE digest = $1 AND revoked_at IS NULL AND expires_at > $2
                     FOR SHARE",
                    &[&key, &now],
                )?
                .is_some(),
        })
    }

    fn insert_access(&mut self, a: &AccessTokenRecord) -> Result<(), BackendError> {
        self.put_access(a, OnConflict::Fail)?;
        Ok(())
    }

    fn insert_refresh(&mut self, r: &RefreshTokenRecord) -> Result<(), BackendError> {
        self.put_refresh(r, OnConflict::Fail)?;
        Ok(())
    }

    /// Log writers take one advisory lock until they commit, so log ids are assigned in
    /// commit order: a replica reading `id > last` never sees id 10 while id 9 is still
    /// uncommitted (and then skips 9 for ever). Revocations are rare next to issuance; the
    /// lock costs them a queue, nothing else. The same transaction notifies every listening
    /// replica; PostgreSQL delivers the notification only if it commits.
    fn log_revocations(&mut self, digests: &[Digest], now: i64) -> Result<(), BackendError> {
        if digests.is_empty() {
            return Ok(());
        }
        self.execute("SELECT pg_advisory_xact_lock($1)", &[&REVOCATION_LOG_LOCK])?;
        let all: Vec<&[u8]> = digests.iter().map(|d| &d.0[..]).collect();
        self.execute(
            "INSERT INTO revocation_log (digest, revoked_at) SELECT d, $2 FROM unnest($1::BYTEA[]) AS d",
            &[&all, &now],
        )?;
        let sent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        for payload in notify::payloads(digests, sent) {
            self.execute("SELECT pg_notify($1, $2)", &[&notify::CHANNEL, &payload])?;
        }
        Ok(())
    }

    fn delete_owner(&mut self, owner: &TokenOwner) -> Result<bool, BackendError> {
        let deleted = match owner {
            TokenOwner::User(u) => self.execute("DELETE FROM users WHERE username = $1", &[u])?,
            TokenOwner::Client(c) => {
                self.execute("DELETE FROM clients WHERE client_id = $1", &[c])?
            }
            TokenOwner::Grant { .. } | TokenOwner::All => {
                return Err("only a user or a client is deleted".into());
            }
        };
        Ok(deleted > 0)
    }

    fn delete_dead(
        &mut self,
        kind: TokenKind,
        now: i64,
        batch: usize,
    ) -> Result<usize, BackendError> {
        let table = table_of(kind);
        // Revoked by rotation: kept until expiry (reuse detection).
        let revoked = match kind {
            TokenKind::Access => "revoked_at IS NOT NULL",
            TokenKind::Refresh => "revoked_at IS NOT NULL AND rotated_at IS NULL",
        };
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let n = self.execute(
            &format!(
                "DELETE FROM {table} WHERE digest IN (
                     SELECT digest FROM {table} WHERE expires_at <= $1
                     UNION ALL
                     SELECT digest FROM {table} WHERE {revoked}
                     LIMIT $2)"
            ),
            &[&now, &batch],
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn take_code(&mut self, digest: &Digest, now: i64) -> Result<CodeState, BackendError> {
        let key = &digest.0[..];
        let taken = self.execute(
            "UPDATE authorization_codes SET used_at = $2
             WHERE digest = $1 AND used_at IS NULL AND expires_at > $2",
            &[&key, &now],
        )?;
        if taken == 1 {
            return Ok(CodeState::Taken);
        }
        let used: Option<Option<i64>> = self
            .query_opt(
                "SELECT used_at FROM authorization_codes WHERE digest = $1",
                &[&key],
            )?
            .map(|r| r.try_get(0))
            .transpose()?;
        Ok(match used {
            Some(Some(_)) => CodeState::Used,
            _ => CodeState::Unusable,
        })
    }

    fn delete_expired_grants(&mut self, now: i64, batch: usize) -> Result<usize, BackendError> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let mut deleted = 0;
        for table in ["authorization_codes", "sessions"] {
            deleted += self.execute(
                &format!(
                    "DELETE FROM {table} WHERE digest IN (
                         SELECT digest FROM {table} WHERE expires_at <= $1 LIMIT $2)"
                ),
                &[&now, &batch],
            )?;
        }
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    fn forget_consent(&mut self, user: &str, client: &str) -> Result<(), BackendError> {
        self.execute(
            "DELETE FROM consents WHERE username = $1 AND client_id = $2",
            &[&user, &client],
        )?;
        Ok(())
    }

    fn trim_revocation_log(&mut self, before: i64, batch: usize) -> Result<usize, BackendError> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let n = self.execute(
            "DELETE FROM revocation_log WHERE id IN (
                 SELECT id FROM revocation_log WHERE revoked_at <= $1 ORDER BY id LIMIT $2)",
            &[&before, &batch],
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
