//! The embedded default store: one SQLite file in WAL mode with durable (`synchronous=FULL`)
//! commits. rusqlite is synchronous, so every call runs on a blocking thread: writes through
//! one connection (SQLite has one writer anyway), reads through a small pool of connections
//! that WAL lets run beside the writer.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::Semaphore;

use super::{
    AccessTokenRecord, ClientRecord, GrantType, RefreshExchange, RefreshTokenRecord, Store,
    StoreError, UserRecord,
};
use crate::crypto::Digest;

const READERS: usize = 4;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_digest BLOB NOT NULL,
    grants        TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE refresh_tokens (
    digest     BLOB PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    username   TEXT REFERENCES users(username) ON DELETE CASCADE,
    scopes     TEXT NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) WITHOUT ROWID;
CREATE TABLE access_tokens (
    digest         BLOB PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    username       TEXT REFERENCES users(username) ON DELETE CASCADE,
    scopes         TEXT NOT NULL,
    issued_at      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    refresh_digest BLOB REFERENCES refresh_tokens(digest) ON DELETE CASCADE,
    revoked_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX access_tokens_refresh ON access_tokens(refresh_digest);
CREATE INDEX access_tokens_client ON access_tokens(client_id);
CREATE INDEX access_tokens_user ON access_tokens(username);
CREATE INDEX refresh_tokens_client ON refresh_tokens(client_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens(username);
"#];

#[derive(Debug)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    reader_permits: Semaphore,
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in (0i64..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()
}

impl SqliteStore {
    /// Opens (creating on first use) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
        }
        let open_err = |e: rusqlite::Error| StoreError::Open(format!("{}: {e}", path.display()));
        let mut writer = Connection::open(path).map_err(open_err)?;
        configure(&writer).map_err(open_err)?;
        migrate(&mut writer).map_err(open_err)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            configure(&conn).map_err(open_err)?;
            readers.push(conn);
        }
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(Mutex::new(readers)),
            reader_permits: Semaphore::new(READERS),
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
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
            out.map_err(StoreError::from)
        })
        .await?
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await?
    }
}

fn words(s: String) -> Vec<String> {
    s.split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn digest_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Digest> {
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

fn user_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        username: row.get(0)?,
        password_hash: row.get(1)?,
        created_at: row.get(2)?,
    })
}

const CLIENT_COLS: &str = "client_id, name, secret_digest, grants, scopes, created_at";
fn client_row(row: &Row<'_>) -> rusqlite::Result<ClientRecord> {
    Ok(ClientRecord {
        client_id: row.get(0)?,
        name: row.get(1)?,
        secret_digest: digest_col(row, 2)?,
        grants: words(row.get(3)?)
            .iter()
            .filter_map(|g| g.parse::<GrantType>().ok())
            .collect(),
        scopes: words(row.get(4)?),
        created_at: row.get(5)?,
    })
}

const ACCESS_COLS: &str =
    "digest, client_id, username, scopes, issued_at, expires_at, refresh_digest, revoked_at";
fn access_row(row: &Row<'_>) -> rusqlite::Result<AccessTokenRecord> {
    Ok(AccessTokenRecord {
        digest: digest_col(row, 0)?,
        client_id: row.get(1)?,
        username: row.get(2)?,
        scopes: words(row.get(3)?),
        issued_at: row.get(4)?,
        expires_at: row.get(5)?,
        refresh: match row.get_ref(6)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(digest_col(row, 6)?),
        },
        revoked_at: row.get(7)?,
    })
}

const REFRESH_COLS: &str = "digest, client_id, username, scopes, issued_at, expires_at, revoked_at";
fn refresh_row(row: &Row<'_>) -> rusqlite::Result<RefreshTokenRecord> {
    Ok(RefreshTokenRecord {
        digest: digest_col(row, 0)?,
        client_id: row.get(1)?,
        username: row.get(2)?,
        scopes: words(row.get(3)?),
        issued_at: row.get(4)?,
        expires_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

fn insert_refresh(conn: &Connection, r: &RefreshTokenRecord) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO refresh_tokens (digest, client_id, username, scopes, issued_at, expires_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![&r.digest.0[..], r.client_id, r.username, r.scopes.join(" "), r.issued_at, r.expires_at, r.revoked_at],
    )
}

fn insert_access(conn: &Connection, a: &AccessTokenRecord) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO access_tokens (digest, client_id, username, scopes, issued_at, expires_at, refresh_digest, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            &a.digest.0[..],
            a.client_id,
            a.username,
            a.scopes.join(" "),
            a.issued_at,
            a.expires_at,
            a.refresh.as_ref().map(|d| d.0.to_vec()),
            a.revoked_at
        ],
    )
}

fn conflict(what: String) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(what),
        _ => StoreError::Sqlite(e),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn add_user(&self, user: UserRecord) -> Result<(), StoreError> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO users (username, password_hash, created_at) VALUES (?1, ?2, ?3)",
                params![user.username, user.password_hash, user.created_at],
            )
            .map_err(conflict(format!("user {:?}", user.username)))?;
            Ok(())
        })
        .await
    }

    async fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let username = username.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT username, password_hash, created_at FROM users WHERE username = ?1",
                [username],
                user_row,
            )
            .optional()
        })
        .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT username, password_hash, created_at FROM users ORDER BY username",
            )?;
            st.query_map([], user_row)?.collect()
        })
        .await
    }

    async fn remove_user(&self, username: &str) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.write(move |c| Ok(c.execute("DELETE FROM users WHERE username = ?1", [username])? > 0))
            .await
    }

    async fn set_password(
        &self,
        username: &str,
        password_hash: String,
    ) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE users SET password_hash = ?2 WHERE username = ?1",
                params![username, password_hash],
            )? > 0)
        })
        .await
    }

    async fn add_client(&self, client: ClientRecord) -> Result<(), StoreError> {
        self.write(move |c| {
            let grants: Vec<&str> = client.grants.iter().map(|g| g.as_str()).collect();
            c.execute(
                "INSERT INTO clients (client_id, name, secret_digest, grants, scopes, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    client.client_id,
                    client.name,
                    &client.secret_digest.0[..],
                    grants.join(" "),
                    client.scopes.join(" "),
                    client.created_at
                ],
            )
            .map_err(conflict(format!("client {:?}", client.client_id)))?;
            Ok(())
        })
        .await
    }

    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let client_id = client_id.to_owned();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {CLIENT_COLS} FROM clients WHERE client_id = ?1"),
                [client_id],
                client_row,
            )
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

    async fn remove_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let client_id = client_id.to_owned();
        self.write(move |c| {
            Ok(c.execute("DELETE FROM clients WHERE client_id = ?1", [client_id])? > 0)
        })
        .await
    }

    async fn set_client_secret(
        &self,
        client_id: &str,
        secret_digest: Digest,
    ) -> Result<bool, StoreError> {
        let client_id = client_id.to_owned();
        self.write(move |c| {
            Ok(c.execute(
                "UPDATE clients SET secret_digest = ?2 WHERE client_id = ?1",
                params![client_id, &secret_digest.0[..]],
            )? > 0)
        })
        .await
    }

    async fn insert_tokens(
        &self,
        access: AccessTokenRecord,
        refresh: Option<RefreshTokenRecord>,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            let tx = c.transaction()?;
            if let Some(r) = &refresh {
                insert_refresh(&tx, r)?;
            }
            insert_access(&tx, &access)?;
            tx.commit()?;
            Ok(())
        })
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
        rotate: bool,
        access: AccessTokenRecord,
        refresh: Option<RefreshTokenRecord>,
    ) -> Result<RefreshExchange, StoreError> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let usable = if rotate {
                tx.execute(
                    "UPDATE refresh_tokens SET revoked_at = ?2
                     WHERE digest = ?1 AND revoked_at IS NULL AND expires_at > ?2",
                    params![&old.0[..], now],
                )? == 1
            } else {
                tx.query_row(
                    "SELECT 1 FROM refresh_tokens WHERE digest = ?1 AND revoked_at IS NULL AND expires_at > ?2",
                    params![&old.0[..], now],
                    |_| Ok(()),
                )
                .optional()?
                .is_some()
            };
            if !usable {
                return Ok(RefreshExchange::Stale);
            }
            let mut revoked_access = Vec::new();
            if rotate {
                let mut st = tx.prepare(
                    "UPDATE access_tokens SET revoked_at = ?2
                     WHERE refresh_digest = ?1 AND revoked_at IS NULL RETURNING digest",
                )?;
                let rows = st.query_map(params![&old.0[..], now], |r| digest_col(r, 0))?;
                for d in rows {
                    revoked_access.push(d?);
                }
            }
            if let Some(r) = &refresh {
                insert_refresh(&tx, r)?;
            }
            insert_access(&tx, &access)?;
            tx.commit()?;
            Ok(RefreshExchange::Exchanged { revoked_access })
        })
        .await
    }
}
