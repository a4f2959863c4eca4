//! The PostgreSQL schema: the same tables as SQLite's, in PostgreSQL's types, applied by
//! versioned migrations that several replicas starting at once apply exactly once.

use postgres::Client;

/// Schema migrations, applied in order; `portcullis_schema.version` records how many ran.
/// Migration 1 is SQLite's first two in one (PostgreSQL started with the person-facing flow);
/// migration 2 is SQLite's third, migration 3 its fourth.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    is_admin      BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_digest BYTEA NOT NULL,
    grants        TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    public        BOOLEAN NOT NULL DEFAULT false,
    redirect_uris TEXT NOT NULL DEFAULT '',
    skip_consent  BOOLEAN NOT NULL DEFAULT false,
    owner         TEXT REFERENCES users(username) ON DELETE SET NULL
);
CREATE TABLE refresh_tokens (
    digest        BYTEA PRIMARY KEY,
    client_id     TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    username      TEXT REFERENCES users(username) ON DELETE CASCADE,
    scopes        TEXT NOT NULL,
    issued_at     BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    family        BYTEA NOT NULL,
    revoked_at    BIGINT,
    rotated_at    BIGINT,
    rotation_salt BYTEA
);
CREATE TABLE access_tokens (
    digest         BYTEA PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    username       TEXT REFERENCES users(username) ON DELETE CASCADE,
    scopes         TEXT NOT NULL,
    issued_at      BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    refresh_digest BYTEA,
    family         BYTEA NOT NULL,
    revoked_at     BIGINT
);
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
-- Access tokens revoked by any replica, so that every replica can drop them from its cache.
-- Rows are written under one advisory lock (see `PgTx::log_revocations`), so ids become
-- visible in id order and a reader following `id > last` misses none.
CREATE TABLE revocation_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest     BYTEA NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX revocation_log_time ON revocation_log(revoked_at);
CREATE TABLE authorization_codes (
    digest         BYTEA PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    username       TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    redirect_uri   TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    issued_at      BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);
CREATE INDEX authorization_codes_expiry ON authorization_codes(expires_at);
CREATE TABLE sessions (
    digest     BYTEA PRIMARY KEY,
    username   TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions(expires_at);
CREATE INDEX sessions_user ON sessions(username);
CREATE TABLE consents (
    username   TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    scopes     TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (username, client_id)
);
"#,
    r#"
-- A client secret imported from django-oauth-toolkit in Django's hash format, verified as it
-- is until its first use replaces it with secret_digest.
ALTER TABLE clients ADD COLUMN imported_secret TEXT;
"#,
    crate::store::sql::PARTIAL_TOKEN_INDEXES,
];

/// The advisory lock that serializes migrations across replicas ("portcull" in ASCII).
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c;

/// Why the schema could not be brought up to date.
#[derive(Debug)]
pub enum MigrateError {
    Database(postgres::Error),
    /// The database was migrated by a newer Portcullis: this binary must not write to it.
    Newer {
        found: i64,
        known: i64,
    },
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrateError::Database(e) => write!(f, "{e}"),
            MigrateError::Newer { found, known } => write!(
                f,
                "the database schema is at version {found}, newer than this binary knows ({known}); \
                 run the newer Portcullis or restore a matching backup"
            ),
        }
    }
}

impl From<postgres::Error> for MigrateError {
    fn from(e: postgres::Error) -> Self {
        MigrateError::Database(e)
    }
}

/// The migrations this database has not had yet, in one transaction under an advisory lock:
/// when several replicas start at once, one applies them and the others wait for its commit,
/// then find nothing left to do.
pub fn migrate(client: &mut Client) -> Result<(), MigrateError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // Asked first rather than `CREATE TABLE IF NOT EXISTS`, whose notice would be logged on
    // every start; the lock makes the two steps one.
    let exists: bool = tx
        .query_one("SELECT to_regclass('portcullis_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        tx.batch_execute("CREATE TABLE portcullis_schema (version BIGINT NOT NULL)")?;
    }
    let found: Option<i64> = tx
        .query_opt("SELECT version FROM portcullis_schema", &[])?
        .map(|r| r.get(0));
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let version = match found {
        Some(v) => v,
        None => {
            tx.execute("INSERT INTO portcullis_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    if version > known {
        return Err(MigrateError::Newer {
            found: version,
            known,
        });
    }
    for (i, sql) in (0i64..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tx.batch_execute(sql)?;
        tx.execute("UPDATE portcullis_schema SET version = $1", &[&(i + 1)])?;
    }
    tx.commit()?;
    Ok(())
}
