//! `store`: where Portcullis keeps users, clients and tokens — an embedded SQLite file (the
//! default), or a PostgreSQL database that several gateways share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Validator;
use super::defaults::{
    POSTGRES_CONNECT_TIMEOUT_MS, POSTGRES_POOL_SIZE, POSTGRES_POOL_SIZE_MAX,
    POSTGRES_STATEMENT_TIMEOUT_MS, STORE_BUSY_TIMEOUT_MS,
};
use super::raw::{RawStore, S};

#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Embedded SQLite database file, resolved against the config file's directory.
    Sqlite {
        path: PathBuf,
        /// How long a store operation waits on a lock held elsewhere before it fails (503).
        busy_timeout: Duration,
    },
    /// A PostgreSQL database, shared by every replica that names it.
    Postgres(PostgresConfig),
}

/// How the PostgreSQL store connects.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host[:port]/database[?options]` (libpq's URL form).
    pub url: String,
    /// Connections at most; each store call holds one for its duration.
    pub pool_size: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// How long one statement may run on the server (`statement_timeout`), and how long a
    /// caller waits for a connection and its call as a whole: past it the store answers
    /// `Unavailable`.
    pub statement_timeout: Duration,
    /// The roots that verify the server's certificate when the connection uses TLS; `None`:
    /// the system's.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for PostgresConfig {
    /// Without the URL: it may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl Validator {
    pub(super) fn store(&mut self, raw: &S<RawStore>, base_dir: &Path) -> StoreConfig {
        let at = &raw.referenced;
        let raw = &raw.value;
        let postgres_keys = [
            raw.pool_size.as_ref().map(|s| (&s.referenced, "pool_size")),
            raw.connect_timeout_ms
                .as_ref()
                .map(|s| (&s.referenced, "connect_timeout_ms")),
            raw.statement_timeout_ms
                .as_ref()
                .map(|s| (&s.referenced, "statement_timeout_ms")),
            raw.ca_file.as_ref().map(|s| (&s.referenced, "ca_file")),
        ];
        let url = match (&raw.sqlite, &raw.postgres, &raw.postgres_url_env) {
            (Some(sqlite), None, None) => {
                for (loc, key) in postgres_keys.into_iter().flatten() {
                    self.at(loc, format!("`store.{key}` applies to PostgreSQL only"));
                }
                return self.sqlite(sqlite, raw, base_dir);
            }
            (None, Some(url), None) => {
                if !(url.value.starts_with("postgres://") || url.value.starts_with("postgresql://"))
                {
                    self.at(
                        &url.referenced,
                        "`store.postgres` must be a postgres:// URL",
                    );
                }
                url.value.clone()
            }
            (None, None, Some(var)) => match std::env::var(&var.value) {
                Ok(url) if !url.trim().is_empty() => url,
                _ => {
                    self.at(
                        &var.referenced,
                        format!(
                            "`store.postgres_url_env` names {:?}, which is not set in the environment",
                            var.value
                        ),
                    );
                    String::new()
                }
            },
            (None, None, None) => {
                self.at(
                    at,
                    "`store` needs `sqlite: FILE`, `postgres: URL` or `postgres_url_env: VARIABLE`",
                );
                String::new()
            }
            _ => {
                self.at(
                    at,
                    "`store` takes one of `sqlite`, `postgres` and `postgres_url_env`",
                );
                String::new()
            }
        };
        if let Some(b) = &raw.busy_timeout_ms {
            self.at(
                &b.referenced,
                "`store.busy_timeout_ms` applies to SQLite only (PostgreSQL: `statement_timeout_ms`)",
            );
        }
        if let (Err(e), Some(at)) = (
            split_sslmode(&url),
            raw.postgres.as_ref().or(raw.postgres_url_env.as_ref()),
        ) {
            self.at(&at.referenced, format!("`store`: {e}"));
        }
        let ms = |v: Option<u64>, default| Duration::from_millis(v.unwrap_or(default));
        let ca_file = raw.ca_file.as_ref().map(|ca| {
            let path = base_dir.join(&ca.value);
            // Read now, so that a missing or unreadable file is reported where it is named.
            if let Err(e) = crate::tls::client_config(Some(&path)) {
                self.at(&ca.referenced, format!("`store.ca_file`: {e}"));
            }
            path
        });
        StoreConfig::Postgres(PostgresConfig {
            url,
            pool_size: self
                .bounded(&raw.pool_size, POSTGRES_POOL_SIZE_MAX, "store.pool_size")
                .unwrap_or(POSTGRES_POOL_SIZE)
                .try_into()
                .unwrap_or(usize::MAX),
            connect_timeout: ms(
                self.positive(&raw.connect_timeout_ms, "store.connect_timeout_ms"),
                POSTGRES_CONNECT_TIMEOUT_MS,
            ),
            statement_timeout: ms(
                self.positive(&raw.statement_timeout_ms, "store.statement_timeout_ms"),
                POSTGRES_STATEMENT_TIMEOUT_MS,
            ),
            ca_file,
        })
    }

    fn sqlite(&mut self, file: &S<String>, raw: &RawStore, base_dir: &Path) -> StoreConfig {
        if file.value.trim().is_empty() {
            self.at(&file.referenced, "`store.sqlite` must name a database file");
        }
        StoreConfig::Sqlite {
            path: base_dir.join(&file.value),
            busy_timeout: Duration::from_millis(
                self.positive(&raw.busy_timeout_ms, "store.busy_timeout_ms")
                    .unwrap_or(STORE_BUSY_TIMEOUT_MS),
            ),
        }
    }
}

/// libpq's `sslmode` values that Portcullis accepts (`allow` is not one: it would try
/// plaintext first). What each means: `store::postgres::tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sslmode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A PostgreSQL URL without its `sslmode` parameter (the driver knows only some of libpq's
/// values), and that parameter (`prefer` when absent, as in libpq).
pub fn split_sslmode(url: &str) -> Result<(String, Sslmode), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Sslmode::Prefer));
    };
    let mut mode = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        let Some(("sslmode", value)) = pair.split_once('=') else {
            rest.push(pair);
            continue;
        };
        let value = match value {
            "disable" => Sslmode::Disable,
            "prefer" => Sslmode::Prefer,
            "require" => Sslmode::Require,
            "verify-ca" => Sslmode::VerifyCa,
            "verify-full" => Sslmode::VerifyFull,
            other => {
                return Err(format!(
                    "the PostgreSQL URL's sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        };
        if mode.replace(value).is_some() {
            return Err("the PostgreSQL URL gives sslmode twice".into());
        }
    }
    let url = match rest.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", rest.join("&")),
    };
    Ok((url, mode.unwrap_or(Sslmode::Prefer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_the_url() {
        // The URL, and what remains of it with the mode (`None`: refused).
        type Case<'a> = (&'a str, Option<(&'a str, Sslmode)>);
        let cases: &[Case<'_>] = &[
            (
                "postgres://h/db",
                Some(("postgres://h/db", Sslmode::Prefer)),
            ),
            (
                "postgres://h/db?sslmode=verify-full",
                Some(("postgres://h/db", Sslmode::VerifyFull)),
            ),
            (
                "postgres://h/db?application_name=gw&sslmode=verify-ca&connect_timeout=3",
                Some((
                    "postgres://h/db?application_name=gw&connect_timeout=3",
                    Sslmode::VerifyCa,
                )),
            ),
            (
                "postgres://h/db?sslmode=disable",
                Some(("postgres://h/db", Sslmode::Disable)),
            ),
            ("postgres://h/db?sslmode=require&sslmode=disable", None),
            ("postgres://h/db?sslmode=allow", None),
            ("postgres://h/db?sslmode=", None),
        ];
        for (url, want) in cases {
            let got = split_sslmode(url).ok();
            let got = got.as_ref().map(|(u, m)| (u.as_str(), *m));
            assert_eq!(&got, want, "{url}");
        }
    }
}
