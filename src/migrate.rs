//! `portcullis migrate --from LOCATION --to LOCATION`: one store's contents copied into
//! another — an embedded SQLite file into the PostgreSQL database several replicas will share
//! (or back) — then checked record by record. What is carried and what is not:
//! `store::transfer`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::PostgresConfig;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::transfer::{Counts, Mismatch, verify};
use crate::store::{SharedStore, StoreError};

/// A store named on the command line: `sqlite:FILE` or a `postgres://` URL.
#[derive(Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Location, String> {
        if let Some(file) = s.strip_prefix("sqlite:") {
            if file.is_empty() {
                return Err("`sqlite:` needs a file name".into());
            }
            return Ok(Location::Sqlite(file.into()));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            crate::config::split_sslmode(s)?;
            return Ok(Location::Postgres(s.to_owned()));
        }
        // Never echoed: it may be a URL with a password in it.
        Err("a store is `sqlite:FILE` or a postgres:// URL".into())
    }
}

impl fmt::Display for Location {
    /// A PostgreSQL location without its URL, which may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Location::Postgres(_) => f.write_str("the PostgreSQL database"),
        }
    }
}

/// A migration is one long call, not a request: its store calls may take minutes.
const PATIENCE: Duration = Duration::from_secs(600);

/// Opens a location: a source must exist; a destination SQLite file is created (a PostgreSQL
/// database is the operator's to create). Either gets its schema brought up to date.
pub async fn open(
    location: &Location,
    create: bool,
    ca_file: Option<PathBuf>,
) -> Result<SharedStore, StoreError> {
    let store: SharedStore = match location.clone() {
        Location::Sqlite(path) => {
            let options = SqliteOptions {
                create,
                busy_timeout: PATIENCE,
            };
            Arc::new(
                tokio::task::spawn_blocking(move || SqliteStore::open_with(&path, options))
                    .await
                    .map_err(|e| StoreError::Backend(Box::new(e)))??,
            )
        }
        Location::Postgres(url) => {
            let options = PostgresConfig {
                url,
                pool_size: 2,
                connect_timeout: Duration::from_secs(10),
                statement_timeout: PATIENCE,
                ca_file,
            };
            Arc::new(
                tokio::task::spawn_blocking(move || PostgresStore::open(&options))
                    .await
                    .map_err(|e| StoreError::Backend(Box::new(e)))??,
            )
        }
    };
    Ok(store)
}

/// What a migration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// What the source held (what was to be carried).
    pub source: Counts,
    /// What the destination did not have and got now.
    pub added: Counts,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}", mismatch_report(.0))]
    Mismatch(Vec<Mismatch>),
}

fn mismatch_report(all: &[Mismatch]) -> String {
    const SHOWN: usize = 20;
    let mut out = format!(
        "{} records of the source are not in the destination as they are in the source:",
        all.len()
    );
    for m in all.iter().take(SHOWN) {
        out.push_str(&format!("\n  {m}"));
    }
    if all.len() > SHOWN {
        out.push_str(&format!("\n  and {} more", all.len() - SHOWN));
    }
    out
}

/// Copies everything `from` holds at `now` that `to` lacks, in one transaction, then reads
/// `to` back and requires every record of the source there, unchanged.
pub async fn copy(from: &SharedStore, to: &SharedStore, now: i64) -> Result<Moved, MigrateError> {
    let snapshot = from.export(now).await?;
    let source = snapshot.counts();
    let added = to.import(snapshot.clone()).await?;
    let arrived = to.export(now).await?;
    let mismatches = verify(&snapshot, &arrived);
    if !mismatches.is_empty() {
        return Err(MigrateError::Mismatch(mismatches));
    }
    Ok(Moved { source, added })
}

/// What [`copy`] would do, writing nothing: what the source holds, and which of its records
/// the destination (`None`: not created yet) lacks or holds differently.
pub async fn plan(
    from: &SharedStore,
    to: Option<&SharedStore>,
    now: i64,
) -> Result<(Counts, Vec<Mismatch>), StoreError> {
    let snapshot = from.export(now).await?;
    let there = match to {
        Some(to) => to.export(now).await?,
        None => Default::default(),
    };
    Ok((snapshot.counts(), verify(&snapshot, &there)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let ok = |s: &str| s.parse::<Location>().map(|l| l.to_string());
        assert_eq!(ok("sqlite:data/p.db").unwrap(), "sqlite:data/p.db");
        assert_eq!(
            ok("postgres://gw:pw@db/p?sslmode=verify-full").unwrap(),
            "the PostgreSQL database"
        );
        assert!(ok("postgresql://db/p").is_ok());
        for bad in [
            "sqlite:",
            "data/p.db",
            "mysql://u:pw@db/p",
            "postgres://db/p?sslmode=x",
        ] {
            let err = ok(bad).expect_err(bad);
            assert!(!err.contains("pw@"), "{err}");
        }
    }
}
