//! The shared store: one PostgreSQL database that several gateways (replicas) use at once.
//! This module is the `Store` over it; the connections are `pool` (the synchronous `postgres`
//! client on blocking threads, as rusqlite for SQLite), the schema `schema`, the rows and the
//! rules' steps `tx`, the revocation feed `notify`. The rules themselves are `store::rules`,
//! shared with SQLite. The database URL is never logged or shown (it may hold a password).

pub mod notify;
mod pool;
mod schema;
mod tls;
mod transfer;
mod tx;

use async_trait::async_trait;

use super::sql::client_params;
use super::transfer::{Counts, Snapshot};
use super::{
    AccessTokenRecord, ClientRecord, CodeRecord, CodeRedemption, LiveTokens, RefreshExchange,
    RefreshTokenRecord, Revoked, SessionRecord, Store, StoreError, Swept, TokenFilter, TokenKind,
    TokenOwner, TokenSummary, UserRecord, rules,
};
use crate::config::PostgresConfig;
use crate::crypto::Digest;
use crate::scope::ScopeSet;
use pool::Pool;
pub use schema::MigrateError;
use tx::{
    ACCESS_COLS, CLIENT_COLS, CODE_COLS, META_COLS, OnConflict, REFRESH_COLS, SESSION_COLS,
    USER_COLS, access_row, backend, client_row, code_row, conflict, digest_col, meta_row,
    owner_condition, refresh_row, session_row, table_of, user_row,
};

/// A connection of its own with the store's connection rules (TLS as `sslmode` says), for
/// reading another database (`portcullis import dot`). Blocking.
pub fn connect(options: &PostgresConfig) -> Result<postgres::Client, String> {
    let (config, tls) = tls::connection(options)?;
    postgres::Config::from(config)
        .connect(tls)
        .map_err(|e| format!("cannot connect to PostgreSQL: {}", pool::describe(&e)))
}

pub struct PostgresStore {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool)
            .finish()
    }
}

impl PostgresStore {
    /// Connects and brings the schema up to date (waiting for another replica that is doing
    /// it). Blocking: call it from a blocking thread.
    pub fn open(options: &PostgresConfig) -> Result<PostgresStore, StoreError> {
        Ok(PostgresStore {
            pool: Pool::open(options)?,
        })
    }
}

fn all<T>(
    rows: Vec<postgres::Row>,
    map: impl Fn(&postgres::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(map).collect()
}

#[async_trait]
impl Store for PostgresStore {
    /// Readiness is what issuance needs: a connection and a write transaction, within the
    /// timeout.
    async fn ping(&self) -> Result<(), StoreError> {
        self.pool
            .write(|tx| {
                tx.execute("SELECT 1 FROM users LIMIT 1", &[])
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn add_user(&self, user: UserRecord) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.put_user(&user, OnConflict::Fail)
                    .map_err(conflict(format!("user {:?}", user.username)))?;
                Ok(())
            })
            .await
    }

    async fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let username = username.to_owned();
        self.pool
            .run(move |c| {
                c.query_opt(
                    &format!("SELECT {USER_COLS} FROM users WHERE username = $1"),
                    &[&username],
                )
                .map_err(backend)?
                .as_ref()
                .map(user_row)
                .transpose()
            })
            .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.pool
            .run(|c| {
                let rows = c
                    .query(
                        &format!("SELECT {USER_COLS} FROM users ORDER BY username"),
                        &[],
                    )
                    .map_err(backend)?;
                all(rows, user_row)
            })
            .await
    }

    async fn remove_user(&self, username: &str, now: i64) -> Result<bool, StoreError> {
        let owner = TokenOwner::User(username.to_owned());
        self.pool
            .write_rule(move |tx| rules::remove_owner(tx, &owner, now))
            .await
    }

    async fn set_password(
        &self,
        username: &str,
        password_hash: String,
    ) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.pool
            .write(move |tx| {
                tx.execute(
                    "UPDATE users SET password_hash = $2 WHERE username = $1",
                    &[&username, &password_hash],
                )
                .map(|n| n > 0)
                .map_err(backend)
            })
            .await
    }

    async fn add_client(&self, client: ClientRecord) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.put_client(&client, OnConflict::Fail)
                    .map_err(conflict(format!("client {:?}", client.client_id)))?;
                Ok(())
            })
            .await
    }

    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let client_id = client_id.to_owned();
        self.pool
            .run(move |c| {
                c.query_opt(
                    &format!("SELECT {CLIENT_COLS} FROM clients WHERE client_id = $1"),
                    &[&client_id],
                )
                .map_err(backend)?
                .as_ref()
                .map(client_row)
                .transpose()
            })
            .await
    }

    async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.pool
            .run(|c| {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {CLIENT_COLS} FROM clients ORDER BY created_at, client_id"
                        ),
                        &[],
                    )
                    .map_err(backend)?;
                all(rows, client_row)
            })
            .await
    }

    async fn remove_client(&self, client_id: &str, now: i64) -> Result<bool, StoreError> {
        let owner = TokenOwner::Client(client_id.to_owned());
        self.pool
            .write_rule(move |tx| rules::remove_owner(tx, &owner, now))
            .await
    }

    async fn set_client_secret(
        &self,
        client_id: &str,
        secret_digest: Digest,
    ) -> Result<bool, StoreError> {
        let client_id = client_id.to_owned();
        self.pool
            .write(move |tx| {
                tx.execute(
                    "UPDATE clients SET secret_digest = $2, imported_secret = NULL WHERE client_id = $1 AND NOT public",
                    &[&client_id, &&secret_digest.0[..]],
                )
                .map(|n| n > 0)
                .map_err(backend)
            })
            .await
    }

    async fn insert_tokens(
        &self,
        access: AccessTokenRecord,
        refresh: Option<RefreshTokenRecord>,
    ) -> Result<(), StoreError> {
        self.pool
            .write_rule(move |tx| rules::insert_tokens(tx, &access, refresh.as_ref()))
            .await
    }

    async fn access_token(&self, digest: Digest) -> Result<Option<AccessTokenRecord>, StoreError> {
        let sql = format!("SELECT {ACCESS_COLS} FROM access_tokens WHERE digest = $1");
        self.pool
            .one(sql, digest.0.to_vec(), None, access_row)
            .await
    }

    async fn refresh_token(
        &self,
        digest: Digest,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        let sql = format!("SELECT {REFRESH_COLS} FROM refresh_tokens WHERE digest = $1");
        self.pool
            .one(sql, digest.0.to_vec(), None, refresh_row)
            .await
    }

    async fn exchange_refresh_token(
        &self,
        old: Digest,
        now: i64,
        rotation_salt: Option<[u8; 32]>,
        access: AccessTokenRecord,
        refresh: Option<RefreshTokenRecord>,
    ) -> Result<RefreshExchange, StoreError> {
        self.pool
            .write_rule(move |tx| {
                rules::exchange_refresh_token(
                    tx,
                    &old,
                    now,
                    rotation_salt.as_ref(),
                    &access,
                    refresh.as_ref(),
                )
            })
            .await
    }

    async fn revoke_token(
        &self,
        digest: Digest,
        client_id: &str,
        now: i64,
        refresh_first: bool,
    ) -> Result<Revoked, StoreError> {
        let client_id = client_id.to_owned();
        self.pool
            .write_rule(move |tx| rules::revoke_token(tx, &digest, &client_id, now, refresh_first))
            .await
    }

    async fn revoke_family(&self, family: Digest, now: i64) -> Result<Revoked, StoreError> {
        self.pool
            .write_rule(move |tx| rules::revoke_all(tx, TokenFilter::Family(&family), now))
            .await
    }

    async fn revoke_tokens_of(&self, owner: TokenOwner, now: i64) -> Result<Revoked, StoreError> {
        self.pool
            .write_rule(move |tx| rules::revoke_owner(tx, &owner, now))
            .await
    }

    async fn list_tokens(
        &self,
        owner: TokenOwner,
        now: i64,
    ) -> Result<Vec<TokenSummary>, StoreError> {
        self.pool.run(move |c| {
            let (condition, keys) = owner_condition(&owner);
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> = keys
                .iter()
                .map(|k| k as &(dyn postgres::types::ToSql + Sync))
                .collect();
            let mut out = Vec::new();
            for kind in [TokenKind::Access, TokenKind::Refresh] {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {META_COLS} FROM {} WHERE {condition} ORDER BY issued_at, digest",
                            table_of(kind)
                        ),
                        &params,
                    )
                    .map_err(backend)?;
                for row in &rows {
                    let meta = meta_row(row)?;
                    out.push(TokenSummary {
                        kind,
                        status: meta.status(now),
                        meta,
                    });
                }
            }
            out.sort_by_key(|t| (t.meta.issued_at, t.kind == TokenKind::Access));
            Ok(out)
        })
        .await
    }

    async fn live_tokens(&self, now: i64) -> Result<LiveTokens, StoreError> {
        self.pool
            .run(move |c| {
                let mut count = |kind: TokenKind| -> Result<u64, StoreError> {
                    let n: i64 = c
                    .query_one(
                        &format!(
                            "SELECT count(*) FROM {} WHERE expires_at > $1 AND revoked_at IS NULL",
                            table_of(kind)
                        ),
                        &[&now],
                    )
                    .and_then(|r| r.try_get(0))
                    .map_err(backend)?;
                    Ok(n.max(0).unsigned_abs())
                };
                Ok(LiveTokens {
                    access: count(TokenKind::Access)?,
                    refresh: count(TokenKind::Refresh)?,
                })
            })
            .await
    }

    async fn sweep(&self, now: i64, batch: usize) -> Result<Swept, StoreError> {
        self.pool
            .write_rule(move |tx| rules::sweep(tx, now, batch))
            .await
    }

    async fn update_client(&self, client: ClientRecord) -> Result<bool, StoreError> {
        self.pool
            .write(move |tx| {
                let (_, grants, scopes, _, redirect_uris) = client_params(&client);
                tx.execute(
                    "UPDATE clients SET name = $2, grants = $3, scopes = $4, redirect_uris = $5,
                        skip_consent = $6, owner = $7
                 WHERE client_id = $1",
                    &[
                        &client.client_id,
                        &client.name,
                        &grants,
                        &scopes,
                        &redirect_uris,
                        &client.skip_consent,
                        &client.owner,
                    ],
                )
                .map(|n| n > 0)
                .map_err(backend)
            })
            .await
    }

    async fn insert_code(&self, code: CodeRecord) -> Result<(), StoreError> {
        self.pool.write(move |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO authorization_codes ({CODE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &&code.digest.0[..],
                    &code.client_id,
                    &code.username,
                    &code.redirect_uri,
                    &code.scopes.to_string(),
                    &code.code_challenge,
                    &code.issued_at,
                    &code.expires_at,
                    &code.used_at,
                ],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn code(&self, digest: Digest) -> Result<Option<CodeRecord>, StoreError> {
        let sql = format!("SELECT {CODE_COLS} FROM authorization_codes WHERE digest = $1");
        self.pool.one(sql, digest.0.to_vec(), None, code_row).await
    }

    async fn redeem_code(
        &self,
        code: Digest,
        now: i64,
        access: AccessTokenRecord,
        refresh: Option<RefreshTokenRecord>,
    ) -> Result<CodeRedemption, StoreError> {
        self.pool
            .write_rule(move |tx| rules::redeem_code(tx, &code, now, &access, refresh.as_ref()))
            .await
    }

    async fn insert_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.execute(
                    &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES ($1, $2, $3, $4)"),
                    &[
                        &&session.digest.0[..],
                        &session.username,
                        &session.created_at,
                        &session.expires_at,
                    ],
                )
                .map(|_| ())
                .map_err(backend)
            })
            .await
    }

    async fn session(&self, digest: Digest, now: i64) -> Result<Option<SessionRecord>, StoreError> {
        let sql =
            format!("SELECT {SESSION_COLS} FROM sessions WHERE digest = $1 AND expires_at > $2");
        self.pool
            .one(sql, digest.0.to_vec(), Some(now), session_row)
            .await
    }

    async fn remove_session(&self, digest: Digest) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.execute("DELETE FROM sessions WHERE digest = $1", &[&&digest.0[..]])
                    .map(|_| ())
                    .map_err(backend)
            })
            .await
    }

    async fn consent(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<Option<ScopeSet>, StoreError> {
        let (username, client_id) = (username.to_owned(), client_id.to_owned());
        self.pool
            .run(move |c| {
                let row = c
                    .query_opt(
                        "SELECT scopes FROM consents WHERE username = $1 AND client_id = $2",
                        &[&username, &client_id],
                    )
                    .map_err(backend)?;
                row.map(|r| r.try_get::<_, String>(0).map(|s| ScopeSet::from_stored(&s)))
                    .transpose()
                    .map_err(backend)
            })
            .await
    }

    async fn grant_consent(
        &self,
        username: &str,
        client_id: &str,
        scopes: ScopeSet,
        now: i64,
    ) -> Result<(), StoreError> {
        let (username, client_id) = (username.to_owned(), client_id.to_owned());
        self.pool.write(move |tx| {
            // The row's lock (when there is one) keeps a concurrent grant from being lost.
            let before: Option<String> = tx
                .query_opt(
                    "SELECT scopes FROM consents WHERE username = $1 AND client_id = $2 FOR UPDATE",
                    &[&username, &client_id],
                )
                .and_then(|r| r.map(|r| r.try_get(0)).transpose())
                .map_err(backend)?;
            let before = before.map(|s| ScopeSet::from_stored(&s)).unwrap_or_default();
            let widened: ScopeSet = before.iter().chain(scopes.iter()).collect();
            tx.execute(
                "INSERT INTO consents (username, client_id, scopes, granted_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (username, client_id) DO UPDATE SET scopes = $3, granted_at = $4",
                &[&username, &client_id, &widened.to_string(), &now],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn revocations_since(&self, after: i64) -> Result<(i64, Vec<Digest>), StoreError> {
        self.pool
            .run(move |c| {
                let rows = c
                .query(
                    "SELECT id, digest FROM revocation_log WHERE id > $1 ORDER BY id LIMIT 10000",
                    &[&after],
                )
                .map_err(backend)?;
                let mut last = after;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    last = row.try_get(0).map_err(backend)?;
                    out.push(digest_col(row, 1)?);
                }
                Ok((last, out))
            })
            .await
    }

    async fn export(&self, now: i64) -> Result<Snapshot, StoreError> {
        self.pool.write(move |tx| transfer::export(tx, now)).await
    }

    async fn import(&self, snapshot: Snapshot) -> Result<Counts, StoreError> {
        self.pool
            .write(move |tx| transfer::import(tx, &snapshot).map_err(backend))
            .await
    }
}
