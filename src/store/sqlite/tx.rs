//! SQLite rows: how records map to columns, and [`SqliteTx`], the [`TokenTx`] steps of the
//! store's rules as SQL on one connection inside the writer's transaction.

use rusqlite::types::{ToSql, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, params};

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

/// A rusqlite error as the store reports it (no caller sees rusqlite's type).
pub fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// A constraint violation as a conflict over `what`; any other error as it is.
pub fn conflict(what: String) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(what),
        _ => backend(e),
    }
}

/// How this engine writes the shared conditions (`store::sql`).
const SQLITE: Dialect = Dialect {
    param: |n| format!("?{n}"),
    all: "?1 IS NOT NULL",
};

/// An owner as an SQL condition over a token table, parameters 1 (and 2) bound to the keys.
pub fn owner_condition(owner: &TokenOwner) -> (String, Vec<String>) {
    sql::owner_condition(&SQLITE, owner)
}

/// The keys a [`condition`] binds.
type Keys<'a> = Vec<Box<dyn ToSql + 'a>>;

/// [`sql::condition`] with its keys as this engine binds them.
fn condition<'a>(
    filter: TokenFilter<'a>,
    kind: TokenKind,
) -> Result<(String, Keys<'a>), BackendError> {
    let (sql, keys) = sql::condition(&SQLITE, filter, kind)?;
    let keys = keys
        .into_iter()
        .map(|k| -> Box<dyn ToSql + 'a> {
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
fn keyed<'p>(keys: &'p Keys<'_>, now: &'p i64) -> Vec<&'p dyn ToSql> {
    let mut out: Vec<&dyn ToSql> = Vec::with_capacity(keys.len() + 1);
    out.push(&*keys[0]);
    out.push(now);
    out.extend(keys[1..].iter().map(|k| &**k as &dyn ToSql));
    out
}

pub fn digest_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Digest> {
    let bytes: Vec<u8> = row.get(idx)?;
    let arr: [u8; 32] = bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Blob,
            "digest is not 32 bytes".into(),
        )
    })?;
    Ok(Digest(arr))
}

fn optional_digest(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Digest>> {
    match row.get_ref(idx)? {
        ValueRef::Null => Ok(None),
        _ => digest_col(row, idx).map(Some),
    }
}

fn scopes_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<ScopeSet> {
    Ok(ScopeSet::from_stored(&row.get::<_, String>(idx)?))
}

pub fn user_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        username: row.get(0)?,
        password_hash: row.get(1)?,
        created_at: row.get(2)?,
        is_admin: row.get(3)?,
    })
}

pub fn client_row(row: &Row<'_>) -> rusqlite::Result<ClientRecord> {
    let grants: String = row.get(3)?;
    let redirect_uris: String = row.get(7)?;
    let public: bool = row.get(6)?;
    Ok(ClientRecord {
        client_id: row.get(0)?,
        name: row.get(1)?,
        secret_digest: if public {
            None
        } else {
            Some(digest_col(row, 2)?)
        },
        grants: grants_from(&grants),
        scopes: scopes_col(row, 4)?,
        created_at: row.get(5)?,
        redirect_uris: redirect_uris_from(&redirect_uris),
        skip_consent: row.get(8)?,
        owner: row.get(9)?,
        imported_secret: row.get(10)?,
    })
}

pub fn code_row(row: &Row<'_>) -> rusqlite::Result<CodeRecord> {
    Ok(CodeRecord {
        digest: digest_col(row, 0)?,
        client_id: row.get(1)?,
        username: row.get(2)?,
        redirect_uri: row.get(3)?,
        scopes: scopes_col(row, 4)?,
        code_challenge: row.get(5)?,
        issued_at: row.get(6)?,
        expires_at: row.get(7)?,
        used_at: row.get(8)?,
    })
}

pub fn session_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        digest: digest_col(row, 0)?,
        username: row.get(1)?,
        created_at: row.get(2)?,
        expires_at: row.get(3)?,
    })
}

pub fn meta_row(row: &Row<'_>) -> rusqlite::Result<TokenMeta> {
    Ok(TokenMeta {
        digest: digest_col(row, 0)?,
        client_id: row.get(1)?,
        username: row.get(2)?,
        scopes: scopes_col(row, 3)?,
        issued_at: row.get(4)?,
        expires_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

pub fn access_row(row: &Row<'_>) -> rusqlite::Result<AccessTokenRecord> {
    Ok(AccessTokenRecord {
        meta: meta_row(row)?,
        refresh: optional_digest(row, 7)?,
        family: digest_col(row, 8)?,
    })
}

pub fn refresh_row(row: &Row<'_>) -> rusqlite::Result<RefreshTokenRecord> {
    Ok(RefreshTokenRecord {
        meta: meta_row(row)?,
        family: digest_col(row, 7)?,
        rotated_at: row.get(8)?,
        rotation_salt: optional_digest(row, 9)?.map(|d| d.0),
    })
}

/// The writer's connection, inside its transaction, as the rules' steps.
pub struct SqliteTx<'c>(pub &'c Connection);

/// Inserts a user; the number of rows added (0 when `on_conflict` kept one that was there).
pub fn put_user(
    c: &Connection,
    u: &UserRecord,
    on_conflict: OnConflict,
) -> rusqlite::Result<usize> {
    c.prepare_cached(&format!(
        "INSERT INTO users ({USER_COLS}) VALUES (?1, ?2, ?3, ?4){}",
        on_conflict.clause()
    ))?
    .execute(params![
        u.username,
        u.password_hash,
        u.created_at,
        u.is_admin
    ])
}

/// Inserts a client, as [`put_user`] does a user.
pub fn put_client(
    c: &Connection,
    client: &ClientRecord,
    on_conflict: OnConflict,
) -> rusqlite::Result<usize> {
    let (secret, grants, scopes, public, redirect_uris) = sql::client_params(client);
    c.prepare_cached(&format!(
        "INSERT INTO clients ({CLIENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11){}",
        on_conflict.clause()
    ))?
    .execute(params![
        client.client_id,
        client.name,
        secret,
        grants,
        scopes,
        client.created_at,
        public,
        redirect_uris,
        client.skip_consent,
        client.owner,
        client.imported_secret,
    ])
}

pub fn put_consent(
    c: &Connection,
    consent: &ConsentRecord,
    on_conflict: OnConflict,
) -> rusqlite::Result<usize> {
    c.prepare_cached(&format!(
        "INSERT INTO consents ({CONSENT_COLS}) VALUES (?1, ?2, ?3, ?4){}",
        on_conflict.clause()
    ))?
    .execute(params![
        consent.username,
        consent.client_id,
        consent.scopes.to_string(),
        consent.granted_at
    ])
}

pub fn put_access(
    c: &Connection,
    a: &AccessTokenRecord,
    on_conflict: OnConflict,
) -> rusqlite::Result<usize> {
    c.prepare_cached(&format!(
        "INSERT INTO access_tokens ({ACCESS_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9){}",
        on_conflict.clause()
    ))?
    .execute(params![
        &a.digest.0[..],
        a.client_id,
        a.username,
        a.scopes.to_string(),
        a.issued_at,
        a.expires_at,
        a.revoked_at,
        a.refresh.as_ref().map(|d| &d.0[..]),
        &a.family.0[..],
    ])
}

pub fn put_refresh(
    c: &Connection,
    r: &RefreshTokenRecord,
    on_conflict: OnConflict,
) -> rusqlite::Result<usize> {
    c.prepare_cached(&format!(
        "INSERT INTO refresh_tokens ({REFRESH_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10){}",
        on_conflict.clause()
    ))?
    .execute(params![
        &r.digest.0[..],
        r.client_id,
        r.username,
        r.scopes.to_string(),
        r.issued_at,
        r.expires_at,
        r.revoked_at,
        &r.family.0[..],
        r.rotated_at,
        r.rotation_salt.as_ref().map(|s| &s[..]),
    ])
}

pub fn consent_row(row: &Row<'_>) -> rusqlite::Result<ConsentRecord> {
    Ok(ConsentRecord {
        username: row.get(0)?,
        client_id: row.get(1)?,
        scopes: scopes_col(row, 2)?,
        granted_at: row.get(3)?,
    })
}

/// Revokes the live tokens of `kind` that match `cond` (parameter 2 is now).
fn revoke_statement(kind: TokenKind, cond: &str) -> String {
    format!(
        "UPDATE {} SET revoked_at = ?2 WHERE {cond} AND revoked_at IS NULL AND expires_at > ?2 RETURNING digest",
        table_of(kind)
    )
}

/// The digests of the live access tokens that match `cond` (parameter 2 is now).
fn live_access_statement(cond: &str) -> String {
    format!(
        "SELECT digest FROM access_tokens WHERE {cond} AND revoked_at IS NULL AND expires_at > ?2"
    )
}

impl SqliteTx<'_> {
    fn revoke(
        &mut self,
        kind: TokenKind,
        filter: TokenFilter<'_>,
        now: i64,
    ) -> Result<Vec<Digest>, BackendError> {
        let (cond, keys) = condition(filter, kind)?;
        let mut st = self.0.prepare_cached(&revoke_statement(kind, &cond))?;
        let digests = st
            .query_map(&keyed(&keys, &now)[..], |r| digest_col(r, 0))?
            .collect::<rusqlite::Result<Vec<Digest>>>()?;
        Ok(digests)
    }
}

impl TokenTx for SqliteTx<'_> {
    fn owner_of(
        &mut self,
        kind: TokenKind,
        digest: &Digest,
    ) -> Result<Option<String>, BackendError> {
        Ok(self
            .0
            .prepare_cached(&format!(
                "SELECT client_id FROM {} WHERE digest = ?1",
                table_of(kind)
            ))?
            .query_row([&digest.0[..]], |r| r.get(0))
            .optional()?)
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
        let mut st = self.0.prepare_cached(&live_access_statement(&cond))?;
        let digests = st
            .query_map(&keyed(&keys, &now)[..], |r| digest_col(r, 0))?
            .collect::<rusqlite::Result<Vec<Digest>>>()?;
        Ok(digests)
    }

    fn take_refresh(
        &mut self,
        digest: &Digest,
        now: i64,
        rotate: Option<&[u8; 32]>,
    ) -> Result<bool, BackendError> {
        let key = &digest.0[..];
        Ok(match rotate {
            Some(salt) => {
                self.0.execute(
                    "UPDATE refresh_tokens SET revoked_at = ?2, rotated_at = ?2, rotation_salt = ?3
                     WHERE digest = ?1 AND revoked_at IS NULL AND expires_at > ?2",
                    params![key, now, &salt[..]],
                )? == 1
            }
            None => self
                .0
                .query_row(
                    "SELECT 1 FROM refresh_tokens WHERE digest = ?1 AND revoked_at IS NULL AND expires_at > ?2",
                    params![key, now],
                    |_| Ok(()),
                )
                .optional()?
                .is_some(),
        })
    }

    fn insert_access(&mut self, a: &AccessTokenRecord) -> Result<(), BackendError> {
        put_access(self.0, a, OnConflict::Fail)?;
        Ok(())
    }

    fn insert_refresh(&mut self, r: &RefreshTokenRecord) -> Result<(), BackendError> {
        put_refresh(self.0, r, OnConflict::Fail)?;
        Ok(())
    }

    fn log_revocations(&mut self, digests: &[Digest], now: i64) -> Result<(), BackendError> {
        let mut log = self
            .0
            .prepare_cached("INSERT INTO revocation_log (digest, revoked_at) VALUES (?1, ?2)")?;
        for d in digests {
            log.execute(params![&d.0[..], now])?;
        }
        Ok(())
    }

    fn delete_owner(&mut self, owner: &TokenOwner) -> Result<bool, BackendError> {
        let deleted = match owner {
            TokenOwner::User(u) => self
                .0
                .execute("DELETE FROM users WHERE username = ?1", [u])?,
            TokenOwner::Client(c) => self
                .0
                .execute("DELETE FROM clients WHERE client_id = ?1", [c])?,
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
        Ok(self.0.execute(
            &format!(
                "DELETE FROM {table} WHERE digest IN (
                     SELECT digest FROM {table} WHERE expires_at <= ?1
                     UNION ALL
                     SELECT digest FROM {table} WHERE {revoked}
                     LIMIT ?2)"
            ),
            params![now, batch],
        )?)
    }

    fn take_code(&mut self, digest: &Digest, now: i64) -> Result<CodeState, BackendError> {
        let key = &digest.0[..];
        let taken = self.0.execute(
            "UPDATE authorization_codes SET used_at = ?2
             WHERE digest = ?1 AND used_at IS NULL AND expires_at > ?2",
            params![key, now],
        )?;
        if taken == 1 {
            return Ok(CodeState::Taken);
        }
        let used: Option<Option<i64>> = self
            .0
            .query_row(
                "SELECT used_at FROM authorization_codes WHERE digest = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match used {
            Some(Some(_)) => CodeState::Used,
            _ => CodeState::Unusable,
        })
    }

    fn delete_expired_grants(&mut self, now: i64, batch: usize) -> Result<usize, BackendError> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let mut deleted = 0;
        for table in ["authorization_codes", "sessions"] {
            deleted += self.0.execute(
                &format!(
                    "DELETE FROM {table} WHERE digest IN (
                         SELECT digest FROM {table} WHERE expires_at <= ?1 LIMIT ?2)"
                ),
                params![now, batch],
            )?;
        }
        Ok(deleted)
    }

    fn forget_consent(&mut self, user: &str, client: &str) -> Result<(), BackendError> {
        self.0.execute(
            "DELETE FROM consents WHERE username = ?1 AND client_id = ?2",
            params![user, client],
        )?;
        Ok(())
    }

    fn trim_revocation_log(&mut self, before: i64, batch: usize) -> Result<usize, BackendError> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        Ok(self.0.execute(
            "DELETE FROM revocation_log WHERE id IN (
                 SELECT id FROM revocation_log WHERE revoked_at <= ?1 ORDER BY id LIMIT ?2)",
            params![before, batch],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every filter a revocation or a live-token read uses finds its rows through an index,
    /// never a scan of the token table: with the partial indexes too (they leave NULLs out,
    /// and SQLite uses one only when the condition implies `IS NOT NULL`).
    #[test]
    fn every_token_filter_is_an_index_search() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::sqlite::schema::migrate(&mut conn).unwrap();
        let d = Digest::of("x");
        let grant = TokenFilter::Grant {
            user: "u",
            client: "c",
        };
        let cases = [
            (TokenFilter::Digest(&d), TokenKind::Refresh, "PRIMARY KEY"),
            (
                TokenFilter::IssuedFrom(&d),
                TokenKind::Access,
                "access_tokens_refresh",
            ),
            (
                TokenFilter::Family(&d),
                TokenKind::Access,
                "access_tokens_family",
            ),
            (
                TokenFilter::Family(&d),
                TokenKind::Refresh,
                "refresh_tokens_family",
            ),
            (
                TokenFilter::User("u"),
                TokenKind::Access,
                "access_tokens_user",
            ),
            (
                TokenFilter::User("u"),
                TokenKind::Refresh,
                "refresh_tokens_user",
            ),
            (
                TokenFilter::Client("c"),
                TokenKind::Access,
                "access_tokens_client",
            ),
            (grant, TokenKind::Access, "access_tokens_user"),
            (grant, TokenKind::Refresh, "refresh_tokens_user"),
        ];
        for (filter, kind, index) in cases {
            let (cond, _) = condition(filter, kind).unwrap();
            let mut statements = vec![revoke_statement(kind, &cond)];
            if kind == TokenKind::Access {
                statements.push(live_access_statement(&cond));
            }
            for sql in statements {
                let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                let unbound = vec![rusqlite::types::Null; st.parameter_count()];
                let plan: Vec<String> = st
                    .query_map(rusqlite::params_from_iter(unbound), |r| r.get(3))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let searched = format!("SEARCH {} USING", table_of(kind));
                assert!(
                    plan.len() == 1 && plan[0].starts_with(&searched) && plan[0].contains(index),
                    "{sql}: {plan:?}, want a search on {index}"
                );
            }
        }
    }
}
