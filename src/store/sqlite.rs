//! The embedded default store: one SQLite file in WAL mode with durable (`synchronous=FULL`)
//! commits. rusqlite is synchronous, so every call runs on a blocking thread: writes through
//! one connection (SQLite has one writer anyway), reads through a small pool of connections
//! that WAL lets run beside the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::Semaphore;

use super::{
    AccessTokenRecord, ClientRecord, GrantType, LiveTokens, RefreshExchange, RefreshTokenRecord,
    Revoked, Store, StoreError, Swept, TokenKind, TokenOwner, TokenSummary, UserRecord,
};
use crate::crypto::Digest;
use crate::scope::ScopeSet;

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
    digest        BLOB PRIMARY KEY,
    client_id     TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    username      TEXT REFERENCES users(username) ON DELETE CASCADE,
    scopes        TEXT NOT NULL,
    issued_at     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    family        BLOB NOT NULL,
    revoked_at    INTEGER,
    rotated_at    INTEGER,
    rotation_salt BLOB
) WITHOUT ROWID;
CREATE TABLE access_tokens (
    digest         BLOB PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    username       TEXT REFERENCES users(username) ON DELETE CASCADE,
    scopes         TEXT NOT NULL,
    issued_at      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    refresh_digest BLOB,
    family         BLOB NOT NULL,
    revoked_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX access_tokens_refresh ON access_tokens(refresh_digest);
CREATE INDEX access_tokens_family ON access_tokens(family);
CREATE INDEX access_tokens_client ON access_tokens(client_id);
CREATE INDEX access_tokens_user ON access_tokens(username);
CREATE INDEX access_tokens_expiry ON access_tokens(expires_at);
CREATE INDEX access_tokens_revoked ON access_tokens(revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
CREATE INDEX refresh_tokens_client ON refresh_tokens(client_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens(username);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens(expires_at);
CREATE INDEX refresh_tokens_revoked ON refresh_tokens(revoked_at)
    WHERE revoked_at IS NOT NULL AND rotated_at IS NULL;
-- Access tokens revoked by any process, so that every gateway sharing this file can drop
-- them from its cache; entries older than an hour are swept.
CREATE TABLE revocation_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    digest     BLOB NOT NULL,
    revoked_at INTEGER NOT NULL
);
"#];

/// How long revocation log entries are kept: far longer than any gateway's poll interval.
const REVOCATION_LOG_RETENTION_SECONDS: i64 = 3600;

/// A write waiting for the writer thread: it runs inside the batch's transaction (in its own
/// savepoint) and returns what to tell its caller once the commit's outcome is known. It is
/// given `Err` instead of the connection when its batch cannot run at all.
type Job = Box<dyn FnOnce(Result<&Connection, &str>) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

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

/// Which file the store opened (device and inode), to notice it being deleted or replaced
/// under a running gateway: writes into a deleted file would be lost on restart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path)?;
        Ok(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Why the database file can no longer take writes, if it cannot.
fn file_gone(path: &Path, opened: &FileIdentity) -> Option<String> {
    match FileIdentity::of(path) {
        Ok(now) if now == *opened => None,
        Ok(_) => Some(format!("{} was replaced by another file", path.display())),
        Err(e) => Some(format!("{} is gone: {e}", path.display())),
    }
}

/// Most writes committed together.
const MAX_BATCH: usize = 512;

#[derive(Debug)]
pub struct SqliteStore {
    /// `None` only while dropping.
    writer: Option<std::sync::mpsc::Sender<Job>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    reader_permits: Semaphore,
    /// The longest a caller waits for a read or a write.
    timeout: std::time::Duration,
}

impl Drop for SqliteStore {
    /// Closes the writer: pending writes finish, the connection closes and the WAL is
    /// checkpointed into the database file before the process goes on (or exits).
    fn drop(&mut self) {
        self.writer.take();
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: group commit. Writes that arrive while a commit is in progress are run
/// together in the next transaction and made durable by one fsync; each still succeeds or
/// fails alone (a savepoint each), and none is answered before its commit is on disk. A batch
/// that cannot start (the file is gone, another process holds the write lock past the busy
/// timeout) fails whole at once: the callers behind it do not each wait the timeout again.
fn write_loop(
    conn: Connection,
    path: PathBuf,
    opened: FileIdentity,
    jobs: std::sync::mpsc::Receiver<Job>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let refused = match file_gone(&path, &opened) {
            Some(why) => Some(why),
            None => conn
                .execute_batch("BEGIN IMMEDIATE")
                .err()
                .map(|e| e.to_string()),
        };
        if let Some(why) = refused {
            tracing::error!(error = %why, writes = batch.len(), "the store cannot take writes");
            for job in batch {
                job(Err(&why))(Err(why.clone()));
            }
            continue;
        }
        let replies: Vec<Reply> = batch.into_iter().map(|job| job(Ok(&conn))).collect();
        let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
}

fn configure(conn: &Connection, busy_timeout: std::time::Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
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
        let opened = FileIdentity::of(path)
            .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
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
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let path = path.to_path_buf();
        let writer_thread = std::thread::Builder::new()
            .name("portcullis-sqlite-writer".into())
            .spawn(move || write_loop(writer, path, opened, queue))
            .map_err(|e| StoreError::Open(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: Some(jobs),
            writer_thread: Some(writer_thread),
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
                out.map_err(StoreError::from)
            })
            .await?
        };
        // A read stuck behind a lock gives up with the busy timeout; the permit goes back
        // when its blocking call returns.
        tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| StoreError::Unavailable("the database did not answer in time".into()))?
    }

    /// Deletes a user or client (`table` keyed by `column`); its tokens go with it by cascade,
    /// after their digests were written to the revocation log for every gateway's cache.
    async fn delete_with_tokens(
        &self,
        table: &'static str,
        column: &'static str,
        key: &str,
    ) -> Result<bool, StoreError> {
        let key = key.to_owned();
        let now = now();
        self.write(move |c| {
            log_before_delete(c, &format!("{column} = ?1"), &key, now)?;
            let removed =
                c.execute(&format!("DELETE FROM {table} WHERE {column} = ?1"), [&key])? > 0;
            Ok(removed)
        })
        .await
    }

    /// Runs `f` on the writer thread inside a (group-committed) transaction; resolves once the
    /// commit is durable.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |conn: Result<&Connection, &str>| {
            // A caller that gave up (timed out, or its request ended) is not written for.
            if tx.is_closed() {
                return Box::new(|_| {});
            }
            let outcome = match conn {
                Err(why) => Err(StoreError::Unavailable(why.to_owned())),
                Ok(conn) => match conn.execute_batch("SAVEPOINT job") {
                    Err(e) => Err(StoreError::from(e)),
                    Ok(()) => {
                        let outcome = f(conn);
                        let end = if outcome.is_ok() {
                            "RELEASE job"
                        } else {
                            "ROLLBACK TO job; RELEASE job"
                        };
                        match (outcome, conn.execute_batch(end)) {
                            (Ok(v), Ok(())) => Ok(v),
                            (Ok(_), Err(e)) => Err(StoreError::from(e)),
                            (Err(e), _) => Err(e),
                        }
                    }
                },
            };
            Box::new(move |committed: Result<(), String>| {
                let answer = match (outcome, committed) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(e)) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
                    (Err(e), _) => Err(e),
                };
                let _ = tx.send(answer);
            })
        });
        self.writer
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the store is closing".into()))?
            .send(job)
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?;
        // Bounded: a lock held elsewhere, or a queue behind one, answers `Unavailable` (503
        // at the token endpoint) instead of holding the request. A write that commits after
        // its caller gave up is durable but unanswered, like a response lost on the network.
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(answer) => {
                answer.map_err(|_| StoreError::Unavailable("the write was not answered".into()))?
            }
            Err(_) => Err(StoreError::Unavailable(
                "the database did not take the write in time".into(),
            )),
        }
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
        scopes: ScopeSet::from_stored(&row.get::<_, String>(4)?),
        created_at: row.get(5)?,
    })
}

const ACCESS_COLS: &str = "digest, client_id, username, scopes, issued_at, expires_at, refresh_digest, family, revoked_at";
fn access_row(row: &Row<'_>) -> rusqlite::Result<AccessTokenRecord> {
    Ok(AccessTokenRecord {
        digest: digest_col(row, 0)?,
        client_id: row.get(1)?,
        username: row.get(2)?,
        scopes: ScopeSet::from_stored(&row.get::<_, String>(3)?),
        issued_at: row.get(4)?,
        expires_at: row.get(5)?,
        refresh: match row.get_ref(6)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(digest_col(row, 6)?),
        },
        family: digest_col(row, 7)?,
        revoked_at: row.get(8)?,
    })
}

const REFRESH_COLS: &str = "digest, client_id, username, scopes, issued_at, expires_at, family, revoked_at, rotated_at, rotation_salt";
fn refresh_row(row: &Row<'_>) -> rusqlite::Result<RefreshTokenRecord> {
    Ok(RefreshTokenRecord {
        digest: digest_col(row, 0)?,
        client_id: row.get(1)?,
        username: row.get(2)?,
        scopes: ScopeSet::from_stored(&row.get::<_, String>(3)?),
        issued_at: row.get(4)?,
        expires_at: row.get(5)?,
        family: digest_col(row, 6)?,
        revoked_at: row.get(7)?,
        rotated_at: row.get(8)?,
        rotation_salt: match row.get_ref(9)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(digest_col(row, 9)?.0),
        },
    })
}

fn insert_refresh(conn: &Connection, r: &RefreshTokenRecord) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO refresh_tokens (digest, client_id, username, scopes, issued_at, expires_at, family, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            &r.digest.0[..],
            r.client_id,
            r.username,
            r.scopes.to_string(),
            r.issued_at,
            r.expires_at,
            &r.family.0[..],
            r.revoked_at
        ],
    )
}

fn insert_access(conn: &Connection, a: &AccessTokenRecord) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO access_tokens (digest, client_id, username, scopes, issued_at, expires_at, refresh_digest, family, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            &a.digest.0[..],
            a.client_id,
            a.username,
            a.scopes.to_string(),
            a.issued_at,
            a.expires_at,
            a.refresh.as_ref().map(|d| d.0.to_vec()),
            &a.family.0[..],
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

/// Revokes the live access tokens matching `condition` (SQL over `access_tokens`, with `?1`
/// bound to `key`) and logs them for every gateway's cache. Returns their digests.
fn revoke_access(
    conn: &Connection,
    condition: &str,
    key: &dyn rusqlite::ToSql,
    now: i64,
) -> rusqlite::Result<Vec<Digest>> {
    let mut st = conn.prepare_cached(&format!(
        "UPDATE access_tokens SET revoked_at = ?2 WHERE {condition} AND revoked_at IS NULL AND expires_at > ?2 RETURNING digest"
    ))?;
    let digests = st
        .query_map(params![key, now], |r| digest_col(r, 0))?
        .collect::<rusqlite::Result<Vec<Digest>>>()?;
    log_revocations(conn, &digests, now)?;
    Ok(digests)
}

fn log_revocations(conn: &Connection, digests: &[Digest], now: i64) -> rusqlite::Result<()> {
    let mut log =
        conn.prepare_cached("INSERT INTO revocation_log (digest, revoked_at) VALUES (?1, ?2)")?;
    for d in digests {
        log.execute(params![&d.0[..], now])?;
    }
    Ok(())
}

/// Revokes the live refresh tokens matching `condition`; returns how many.
fn revoke_refresh(
    conn: &Connection,
    condition: &str,
    key: &dyn rusqlite::ToSql,
    now: i64,
) -> rusqlite::Result<usize> {
    conn.execute(
        &format!("UPDATE refresh_tokens SET revoked_at = ?2 WHERE {condition} AND revoked_at IS NULL AND expires_at > ?2"),
        params![key, now],
    )
}

/// Logs the live access tokens matching `condition` before a cascade delete removes them.
fn log_before_delete(
    conn: &Connection,
    condition: &str,
    key: &str,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO revocation_log (digest, revoked_at)
             SELECT digest, ?2 FROM access_tokens WHERE {condition} AND revoked_at IS NULL AND expires_at > ?2"
        ),
        params![key, now],
    )?;
    Ok(())
}

/// The table that holds tokens of `kind`.
fn table_of(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Access => "access_tokens",
        TokenKind::Refresh => "refresh_tokens",
    }
}

fn owner_condition(owner: &TokenOwner) -> (&'static str, String) {
    match owner {
        TokenOwner::User(name) => ("username = ?1", name.clone()),
        TokenOwner::Client(id) => ("client_id = ?1", id.clone()),
        TokenOwner::All => ("?1 = ?1", String::new()),
    }
}

#[async_trait]
impl Store for SqliteStore {
    /// Readiness is what issuance needs: a write transaction on the very file that was
    /// opened (the writer checks it is still there and takes the write lock), durable-commit
    /// path included, within the busy timeout.
    async fn ping(&self) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached("SELECT 1 FROM users LIMIT 1")?
                .exists([])?;
            Ok(())
        })
        .await
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
        self.delete_with_tokens("users", "username", username).await
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
                    client.scopes.to_string(),
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

    async fn remove_client(&self, client_id: &str) -> Result<bool, StoreError> {
        self.delete_with_tokens("clients", "client_id", client_id)
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
            if let Some(r) = &refresh {
                insert_refresh(c, r)?;
            }
            insert_access(c, &access)?;
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
        rotation_salt: Option<[u8; 32]>,
        access: AccessTokenRecord,
        refresh: Option<RefreshTokenRecord>,
    ) -> Result<RefreshExchange, StoreError> {
        self.write(move |c| {
            let usable = match &rotation_salt {
                Some(salt) => {
                    c.execute(
                        "UPDATE refresh_tokens SET revoked_at = ?2, rotated_at = ?2, rotation_salt = ?3
                         WHERE digest = ?1 AND revoked_at IS NULL AND expires_at > ?2",
                        params![&old.0[..], now, &salt[..]],
                    )? == 1
                }
                None => c
                    .query_row(
                        "SELECT 1 FROM refresh_tokens WHERE digest = ?1 AND revoked_at IS NULL AND expires_at > ?2",
                        params![&old.0[..], now],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some(),
            };
            if !usable {
                return Ok(RefreshExchange::Stale);
            }
            let revoked_access = if rotation_salt.is_some() {
                revoke_access(c, "refresh_digest = ?1", &&old.0[..], now)?
            } else {
                Vec::new()
            };
            if let Some(r) = &refresh {
                insert_refresh(c, r)?;
            }
            insert_access(c, &access)?;
            Ok(RefreshExchange::Exchanged { revoked_access })
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
        self.write(move |c| {
            let key = &digest.0[..];
            // The hint only orders the lookups; a miss falls through to the other kind.
            let order = if refresh_first {
                [TokenKind::Refresh, TokenKind::Access]
            } else {
                [TokenKind::Access, TokenKind::Refresh]
            };
            let mut out = Revoked::default();
            for kind in order {
                let table = table_of(kind);
                let owner: Option<String> = c
                    .query_row(
                        &format!("SELECT client_id FROM {table} WHERE digest = ?1"),
                        [key],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(owner) = owner else { continue };
                // Found: another client's token is left alone, and nothing else is searched.
                if owner == client_id {
                    if kind == TokenKind::Refresh {
                        out.refresh += revoke_refresh(c, "digest = ?1", &key, now)?;
                        out.access
                            .extend(revoke_access(c, "refresh_digest = ?1", &key, now)?);
                    } else {
                        out.access
                            .extend(revoke_access(c, "digest = ?1", &key, now)?);
                    }
                }
                break;
            }
            Ok(out)
        })
        .await
    }

    async fn revoke_family(&self, family: Digest, now: i64) -> Result<Revoked, StoreError> {
        self.write(move |c| {
            let key = &family.0[..];
            let refresh = revoke_refresh(c, "family = ?1", &key, now)?;
            let access = revoke_access(c, "family = ?1", &key, now)?;
            Ok(Revoked { access, refresh })
        })
        .await
    }

    async fn revoke_tokens_of(&self, owner: TokenOwner, now: i64) -> Result<Revoked, StoreError> {
        self.write(move |c| {
            let (condition, key) = owner_condition(&owner);
            let refresh = revoke_refresh(c, condition, &key, now)?;
            let access = revoke_access(c, condition, &key, now)?;
            Ok(Revoked { access, refresh })
        })
        .await
    }

    async fn list_tokens(
        &self,
        owner: TokenOwner,
        _now: i64,
    ) -> Result<Vec<TokenSummary>, StoreError> {
        self.read(move |c| {
            let (condition, key) = owner_condition(&owner);
            let mut out = Vec::new();
            for kind in [TokenKind::Access, TokenKind::Refresh] {
                let table = table_of(kind);
                let mut st = c.prepare(&format!(
                    "SELECT digest, client_id, username, scopes, issued_at, expires_at, revoked_at
                     FROM {table} WHERE {condition} ORDER BY issued_at, digest"
                ))?;
                let rows = st.query_map([&key], |r| {
                    Ok(TokenSummary {
                        kind,
                        digest: digest_col(r, 0)?,
                        client_id: r.get(1)?,
                        username: r.get(2)?,
                        scopes: ScopeSet::from_stored(&r.get::<_, String>(3)?),
                        issued_at: r.get(4)?,
                        expires_at: r.get(5)?,
                        revoked_at: r.get(6)?,
                    })
                })?;
                for row in rows {
                    out.push(row?);
                }
            }
            out.sort_by_key(|t| (t.issued_at, t.kind == TokenKind::Access));
            Ok(out)
        })
        .await
    }

    async fn live_tokens(&self, now: i64) -> Result<LiveTokens, StoreError> {
        self.read(move |c| {
            let count = |table: &str| -> rusqlite::Result<u64> {
                c.query_row(
                    &format!(
                        "SELECT count(*) FROM {table} WHERE expires_at > ?1 AND revoked_at IS NULL"
                    ),
                    [now],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n.max(0) as u64)
            };
            Ok(LiveTokens {
                access: count(table_of(TokenKind::Access))?,
                refresh: count(table_of(TokenKind::Refresh))?,
            })
        })
        .await
    }

    async fn sweep(&self, now: i64, batch: usize) -> Result<Swept, StoreError> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        self.write(move |c| {
            let access = c.execute(
                "DELETE FROM access_tokens WHERE digest IN (
                     SELECT digest FROM access_tokens WHERE expires_at <= ?1
                     UNION ALL
                     SELECT digest FROM access_tokens WHERE revoked_at IS NOT NULL
                     LIMIT ?2)",
                params![now, batch],
            )?;
            let refresh = c.execute(
                "DELETE FROM refresh_tokens WHERE digest IN (
                     SELECT digest FROM refresh_tokens WHERE expires_at <= ?1
                     UNION ALL
                     SELECT digest FROM refresh_tokens WHERE revoked_at IS NOT NULL AND rotated_at IS NULL
                     LIMIT ?2)",
                params![now, batch],
            )?;
            c.execute(
                "DELETE FROM revocation_log WHERE id IN (
                     SELECT id FROM revocation_log WHERE revoked_at <= ?1 ORDER BY id LIMIT ?2)",
                params![now - REVOCATION_LOG_RETENTION_SECONDS, batch],
            )?;
            Ok(Swept { access, refresh })
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
}

/// Wall-clock seconds for bookkeeping that no caller passes a time for (the revocation log of
/// a deletion).
fn now() -> i64 {
    use crate::clock::Clock as _;
    crate::clock::SystemClock.now()
}
