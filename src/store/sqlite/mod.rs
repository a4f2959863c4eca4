//! The embedded default store: one SQLite file in WAL mode with durable (`synchronous=FULL`)
//! commits. rusqlite is synchronous, so every call runs on a blocking thread: writes through
//! one connection (SQLite has one writer anyway), reads through a small pool of connections
//! that WAL lets run beside the writer. The schema is in `schema`, the rows and the rules'
//! steps in `tx`; the rules themselves are `store::rules`, shared by every backend.

mod schema;
mod transfer;
mod tx;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::Semaphore;

use super::sql::client_params;
use super::transfer::{Counts, Snapshot};
use super::{
    AccessTokenRecord, ClientRecord, CodeRecord, CodeRedemption, LiveTokens, RefreshExchange,
    RefreshTokenRecord, Revoked, SessionRecord, Store, StoreError, Swept, TokenFilter, TokenKind,
    TokenOwner, TokenSummary, UserRecord, rules,
};
use crate::crypto::Digest;
use crate::scope::ScopeSet;
use schema::{configure, migrate};
use tx::{
    ACCESS_COLS, CLIENT_COLS, CODE_COLS, META_COLS, OnConflict, REFRESH_COLS, SESSION_COLS,
    SqliteTx, USER_COLS, access_row, backend, client_row, code_row, conflict, digest_col, meta_row,
    owner_condition, put_client, put_user, refresh_row, session_row, table_of, user_row,
};
use writer::Writer;

const READERS: usize = 4;

/// How an SQLite store is opened.
#[derive(Debug, Clone, Copy)]
pub struct SqliteOptions {
    /// Create the file (and its folder) when it does not exist; otherwise that is an error.
    pub create: bool,
    /// How long a statement waits for a lock another process holds, and how long a caller
    /// waits for its read or write as a whole: past it the store answers `Unavailable`.
    pub busy_timeout: std::time::Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            create: true,
            busy_timeout: std::time::Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Mutex<Vec<Connection>>>,
    reader_permits: Semaphore,
    /// The longest a caller waits for a read.
    timeout: std::time::Duration,
}

impl SqliteStore {
    /// Opens (creating on first use) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Opens the database file as `options` say and brings its schema up to date.
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        if !options.create && !path.is_file() {
            return Err(StoreError::Missing(path.display().to_string()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
        }
        let open_err = |e: rusqlite::Error| StoreError::Open(format!("{}: {e}", path.display()));
        let mut writer = Connection::open(path).map_err(open_err)?;
        configure(&writer, options.busy_timeout).map_err(open_err)?;
        migrate(&mut writer).map_err(open_err)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            configure(&conn, options.busy_timeout).map_err(open_err)?;
            readers.push(conn);
        }
        Ok(SqliteStore {
            writer: Writer::start(writer, path, options.busy_timeout)?,
            readers: Arc::new(Mutex::new(readers)),
            reader_permits: Semaphore::new(READERS),
            timeout: options.busy_timeout,
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let read = async {
            let _permit = self
                .reader_permits
                .acquire()
                .await
                .expect("semaphore never closed");
            let readers = Arc::clone(&self.readers);
            tokio::task::spawn_blocking(move || {
                let conn = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let conn = conn.expect("a permit guarantees a free reader");
                let out = f(&conn);
                readers.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
                out.map_err(backend)
            })
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?
        };
        // A read stuck behind a lock gives up with the busy timeout; the permit goes back
        // when its blocking call returns.
        tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| StoreError::Unavailable("the database did not answer in time".into()))?
    }

    /// Runs `f` on the writer's connection inside a (group-committed) transaction; resolves
    /// once the commit is durable.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// Runs one of the store's rules on the writer's transaction.
    async fn write_rule<T, F>(&self, rule: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteTx<'_>) -> Result<T, super::BackendError> + Send + 'static,
    {
        self.write(move |c| rule(&mut SqliteTx(c)).map_err(StoreError::Backend))
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    /// Readiness is what issuance needs: a write transaction on the very file that was
    /// opened (the writer checks it is still there and takes the write lock), durable-commit
    /// path included, within the busy timeout.
    async fn ping(&self) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached("SELECT 1 FROM users LIMIT 1")
                .and_then(|mut st| st.exists([]))
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn add_user(&self, user: UserRecord) -> Result<(), StoreError> {
        self.write(move |c| {
            put_user(c, &user, OnConflict::Fail)
                .map_err(conflict(format!("user {:?}", user.username)))?;
            Ok(())
        })
        .await
    }

    async fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let username = username.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {USER_COLS} FROM users WHERE username = ?1"
            ))?
            .query_row([username], user_row)
            .optional()
        })
        .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY username"))?;
            st.query_map([], user_row)?.collect()
        })
        .await
    }

    async fn remove_user(&self, username: &str, now: i64) -> Result<bool, StoreError> {
        let owner = TokenOwner::User(username.to_owned());
        self.write_rule(move |tx| rules::remove_owner(tx, &owner, now))
            .await
    }

    async fn set_password(
        &self,
        username: &str,
        password_hash: String,
    ) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE users SET password_hash = ?2 WHERE username = ?1",
                params![username, password_hash],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn add_client(&self, client: ClientRecord) -> Result<(), StoreError> {
        self.write(move |c| {
            put_client(c, &client, OnConflict::Fail)
                .map_err(conflict(format!("client {:?}", client.client_id)))?;
            Ok(())
        })
        .await
    }

    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let client_id = client_id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {CLIENT_COLS} FROM clients WHERE client_id = ?1"
            ))?
            .query_row([client_id], client_row)
            .optional()
        })
        .await
    }

    async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {CLIENT_COLS} FROM clients ORDER BY created_at, client_id"
            ))?;
            st.query_map([], client_row)?.collect()
        })
        .await
    }

    async fn remove_client(&self, client_id: &str, now: i64) -> Result<bool, StoreError> {
        let owner = TokenOwner::Client(client_id.to_owned());
        self.write_rule(move |tx| rules::remove_owner(tx, &owner, now))
            .await
    }

    async fn set_client_secret(
        &self,
        client_id: &str,
        secret_digest: Digest,
    ) -> Result<bool, StoreError> {
        let client_id = client_id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE clients SET secret_digest = ?2, imported_secret = NULL WHERE client_id = ?1 AND public = 0",
                params![client_id, &secret_digest.0[..]],
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
        self.write_rule(move |tx| rules::insert_tokens(tx, &access, refresh.as_ref()))
            .await
    }

    async fn access_token(&self, digest: Digest) -> Result<Option<AccessTokenRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {ACCESS_COLS} FROM access_tokens WHERE digest = ?1"
            ))?
            .query_row([&digest.0[..]], access_row)
            .optional()
        })
        .await
    }

    async fn refresh_token(
        &self,
        digest: Digest,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {REFRESH_COLS} FROM refresh_tokens WHERE digest = ?1"
            ))?
            .query_row([&digest.0[..]], refresh_row)
            .optional()
        })
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
        self.write_rule(move |tx| {
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
        self.write_rule(move |tx| rules::revoke_token(tx, &digest, &client_id, now, refresh_first))
            .await
    }

    async fn revoke_family(&self, family: Digest, now: i64) -> Result<Revoked, StoreError> {
        self.write_rule(move |tx| rules::revoke_all(tx, TokenFilter::Family(&family), now))
            .await
    }

    async fn revoke_tokens_of(&self, owner: TokenOwner, now: i64) -> Result<Revoked, StoreError> {
        self.write_rule(move |tx| rules::revoke_owner(tx, &owner, now))
            .await
    }

    async fn list_tokens(
        &self,
        owner: TokenOwner,
        now: i64,
    ) -> Result<Vec<TokenSummary>, StoreError> {
        self.read(move |c| {
            let (condition, keys) = owner_condition(&owner);
            let mut out = Vec::new();
            for kind in [TokenKind::Access, TokenKind::Refresh] {
                let mut st = c.prepare(&format!(
                    "SELECT {META_COLS} FROM {} WHERE {condition} ORDER BY issued_at, digest",
                    table_of(kind)
                ))?;
                for meta in st.query_map(rusqlite::params_from_iter(&keys), meta_row)? {
                    let meta = meta?;
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
        self.read(move |c| {
            let count = |kind: TokenKind| -> rusqlite::Result<u64> {
                c.query_row(
                    &format!(
                        "SELECT count(*) FROM {} WHERE expires_at > ?1 AND revoked_at IS NULL",
                        table_of(kind)
                    ),
                    [now],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n.max(0) as u64)
            };
            Ok(LiveTokens {
                access: count(TokenKind::Access)?,
                refresh: count(TokenKind::Refresh)?,
            })
        })
        .await
    }

    async fn sweep(&self, now: i64, batch: usize) -> Result<Swept, StoreError> {
        self.write_rule(move |tx| rules::sweep(tx, now, batch))
            .await
    }

    async fn update_client(&self, client: ClientRecord) -> Result<bool, StoreError> {
        self.write(move |c| {
            let (_, grants, scopes, _, redirect_uris) = client_params(&client);
            c.execute(
                "UPDATE clients SET name = ?2, grants = ?3, scopes = ?4, redirect_uris = ?5,
                        skip_consent = ?6, owner = ?7
                 WHERE client_id = ?1",
                params![
                    client.client_id,
                    client.name,
                    grants,
                    scopes,
                    redirect_uris,
                    client.skip_consent,
                    client.owner,
                ],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn insert_code(&self, code: CodeRecord) -> Result<(), StoreError> {
        self.write(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO authorization_codes ({CODE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    &code.digest.0[..],
                    code.client_id,
                    code.username,
                    code.redirect_uri,
                    code.scopes.to_string(),
                    code.code_challenge,
                    code.issued_at,
                    code.expires_at,
                    code.used_at,
                ],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn code(&self, digest: Digest) -> Result<Option<CodeRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {CODE_COLS} FROM authorization_codes WHERE digest = ?1"
            ))?
            .query_row([&digest.0[..]], code_row)
            .optional()
        })
        .await
    }

    async fn redeem_code(
        &self,
        code: Digest,
        now: i64,
        access: AccessTokenRecord,
        refresh: Option<RefreshTokenRecord>,
    ) -> Result<CodeRedemption, StoreError> {
        self.write_rule(move |tx| rules::redeem_code(tx, &code, now, &access, refresh.as_ref()))
            .await
    }

    async fn insert_session(&self, session: SessionRecord) -> Result<(), StoreError> {
        self.write(move |c| {
            c.execute(
                &format!("INSERT INTO sessions ({SESSION_COLS}) VALUES (?1, ?2, ?3, ?4)"),
                params![
                    &session.digest.0[..],
                    session.username,
                    session.created_at,
                    session.expires_at
                ],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn session(&self, digest: Digest, now: i64) -> Result<Option<SessionRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions WHERE digest = ?1 AND expires_at > ?2"
            ))?
            .query_row(params![&digest.0[..], now], session_row)
            .optional()
        })
        .await
    }

    async fn remove_session(&self, digest: Digest) -> Result<(), StoreError> {
        self.write(move |c| {
            c.execute("DELETE FROM sessions WHERE digest = ?1", [&digest.0[..]])
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
        self.read(move |c| {
            c.prepare_cached("SELECT scopes FROM consents WHERE username = ?1 AND client_id = ?2")?
                .query_row(params![username, client_id], |r| {
                    Ok(ScopeSet::from_stored(&r.get::<_, String>(0)?))
                })
                .optional()
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
        self.write(move |c| {
            let before: Option<String> = c
                .query_row(
                    "SELECT scopes FROM consents WHERE username = ?1 AND client_id = ?2",
                    params![username, client_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            let before = before.map(|s| ScopeSet::from_stored(&s)).unwrap_or_default();
            let widened: ScopeSet = before.iter().chain(scopes.iter()).collect();
            c.execute(
                "INSERT INTO consents (username, client_id, scopes, granted_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (username, client_id) DO UPDATE SET scopes = ?3, granted_at = ?4",
                params![username, client_id, widened.to_string(), now],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn revocations_since(&self, after: i64) -> Result<(i64, Vec<Digest>), StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, digest FROM revocation_log WHERE id > ?1 ORDER BY id LIMIT 10000",
            )?;
            let mut last = after;
            let mut out = Vec::new();
            let rows = st.query_map([after], |r| Ok((r.get::<_, i64>(0)?, digest_col(r, 1)?)))?;
            for row in rows {
                let (id, digest) = row?;
                last = id;
                out.push(digest);
            }
            Ok((last, out))
        })
        .await
    }

    async fn export(&self, now: i64) -> Result<Snapshot, StoreError> {
        self.read(move |c| transfer::export(c, now)).await
    }

    async fn import(&self, snapshot: Snapshot) -> Result<Counts, StoreError> {
        self.write(move |c| transfer::import(c, &snapshot).map_err(backend))
            .await
    }
}
