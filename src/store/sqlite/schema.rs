//! The SQLite schema: migrations applied in order (`PRAGMA user_version` counts them) and the
//! settings every connection gets.

use std::time::Duration;

use rusqlite::Connection;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
-- The person-facing flow: administrators, public clients, redirect URIs, consent skipping,
-- applications registered by users; authorization codes, browser sessions and consents.
ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN public INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN skip_consent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN owner TEXT REFERENCES users(username) ON DELETE SET NULL;
CREATE TABLE authorization_codes (
    digest         BLOB PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    username       TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    issued_at      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER
) WITHOUT ROWID;
CREATE INDEX authorization_codes_expiry ON authorization_codes(expires_at);
CREATE TABLE sessions (
    digest     BLOB PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_expiry ON sessions(expires_at);
CREATE INDEX sessions_user ON sessions(username);
CREATE TABLE consents (
    username   TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    scopes     TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (username, client_id)
) WITHOUT ROWID;
"#,
    r#"
-- A client secret imported from django-oauth-toolkit in Django's hash format, verified as it
-- is until its first use replaces it with secret_digest.
ALTER TABLE clients ADD COLUMN imported_secret TEXT;
"#,
    crate::store::sql::PARTIAL_TOKEN_INDEXES,
];

/// Settings of every connection: how long to wait on a lock another process holds, foreign
/// keys (the token cascades), and durable commits.
pub fn configure(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// WAL mode and the migrations this file has not had yet, in one transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A store made by the version before the partial token indexes (three migrations) is
    /// brought up to date in place: its tokens stay, the two indexes become partial, and a
    /// lookup by user still searches the index.
    #[test]
    fn a_store_of_the_previous_version_keeps_its_tokens() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO users (username, password_hash, created_at) VALUES ('u', 'hash', 0);
             INSERT INTO clients (client_id, name, secret_digest, grants, scopes, created_at)
                 VALUES ('c', 'c', x'00', 'password', 'read', 0);
             INSERT INTO access_tokens VALUES (x'01', 'c', NULL, 'read', 0, 9, NULL, x'01', NULL);
             INSERT INTO access_tokens VALUES (x'02', 'c', 'u', 'read', 0, 9, x'03', x'03', NULL);",
        )
        .unwrap();

        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();

        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(usize::try_from(version), Ok(MIGRATIONS.len()));
        let tokens: i64 = conn
            .query_row("SELECT count(*) FROM access_tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tokens, 2);
        for (index, column) in [
            ("access_tokens_user", "username"),
            ("access_tokens_refresh", "refresh_digest"),
        ] {
            let sql: String = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1",
                    [index],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(
                sql.ends_with(&format!("WHERE {column} IS NOT NULL")),
                "{sql}"
            );
        }
        let by_user: Vec<u8> = conn
            .query_row(
                "SELECT digest FROM access_tokens WHERE username = 'u'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(by_user, [2]);
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT digest FROM access_tokens WHERE username = 'u'",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("access_tokens_user"), "{plan}");
    }
}
