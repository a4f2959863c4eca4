//! The PostgreSQL store's connections: opened on demand up to the pool size, replaced when
//! broken, each with the statements it has prepared; every call on a blocking thread (the
//! synchronous client must never run, or be dropped, on an async thread), every write one
//! transaction, every caller bounded by the connect and statement timeouts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::Client;
use tokio::sync::Semaphore;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::schema;
use super::tx::{PgTx, Prepared, Statements, backend};
use crate::config::PostgresConfig;
use crate::store::{BackendError, StoreError};

/// A pooled connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: Statements,
}

pub struct Pool {
    config: postgres::Config,
    tls: MakeRustlsConnect,
    idle: Arc<Mutex<Vec<Conn>>>,
    permits: Semaphore,
    timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Drop for Pool {
    /// Closing a synchronous client blocks on its own runtime, which must not happen on an
    /// async thread (the store is usually dropped on one): the idle connections close on a
    /// thread of their own.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("postgres-close".into())
                .spawn(move || drop(idle));
        }
    }
}

impl Pool {
    /// Connects and brings the schema up to date (waiting for another replica that is doing
    /// it). Blocking: call it from a blocking thread.
    pub fn open(options: &PostgresConfig) -> Result<Pool, StoreError> {
        let (config, tls) = super::tls::connection(options).map_err(StoreError::Open)?;
        let mut config = postgres::Config::from(config);
        config.options(&format!(
            "-c statement_timeout={}",
            options.statement_timeout.as_millis()
        ));
        let mut first = config
            .connect(tls.clone())
            .map_err(|e| StoreError::Open(format!("PostgreSQL: {}", describe(&e))))?;
        schema::migrate(&mut first).map_err(|e| StoreError::Open(format!("PostgreSQL: {e}")))?;
        let first = Conn {
            client: first,
            statements: Statements::default(),
        };
        Ok(Pool {
            config,
            tls,
            idle: Arc::new(Mutex::new(vec![first])),
            permits: Semaphore::new(options.pool_size.max(1)),
            // The call as a whole: a connection, then its statements.
            timeout: options.connect_timeout + options.statement_timeout,
        })
    }

    /// Runs `f` with a connection on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Prepared<'_, Client>) -> Result<T, StoreError> + Send + 'static,
    {
        let call = async {
            let _permit = self.permits.acquire().await.expect("never closed");
            let idle = Arc::clone(&self.idle);
            let (config, tls) = (self.config.clone(), self.tls.clone());
            tokio::task::spawn_blocking(move || {
                let reused = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let mut conn = match reused.filter(|c| !c.client.is_closed()) {
                    Some(c) => c,
                    None => Conn {
                        client: config.connect(tls).map_err(|e| {
                            StoreError::Unavailable(format!(
                                "cannot connect to PostgreSQL: {}",
                                describe(&e)
                            ))
                        })?,
                        statements: Statements::default(),
                    },
                };
                let out = f(&mut Prepared {
                    client: &mut conn.client,
                    statements: &mut conn.statements,
                });
                if !conn.client.is_closed() {
                    idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
                }
                out
            })
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| StoreError::Unavailable("the database did not answer in time".into()))?
    }

    /// Runs `f` inside one transaction; resolves once the commit is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut PgTx<'_, '_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |c| {
            let mut tx = c.client.transaction().map_err(backend)?;
            let out = f(&mut Prepared {
                client: &mut tx,
                statements: c.statements,
            })?;
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }

    /// Runs one of the store's rules in a transaction.
    pub async fn write_rule<T, F>(&self, rule: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut PgTx<'_, '_>) -> Result<T, BackendError> + Send + 'static,
    {
        self.write(move |tx| rule(tx).map_err(StoreError::Backend))
            .await
    }

    /// One row (or none) of a query, mapped.
    pub async fn one<T, M>(
        &self,
        sql: String,
        key: Vec<u8>,
        extra: Option<i64>,
        map: M,
    ) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        M: Fn(&postgres::Row) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |c| {
            let row = match extra {
                Some(x) => c.query_opt(&sql, &[&key, &x]),
                None => c.query_opt(&sql, &[&key]),
            }
            .map_err(backend)?;
            row.as_ref().map(map).transpose()
        })
        .await
    }
}

/// An error with its causes ("error performing TLS handshake: invalid peer certificate: …"):
/// the driver's own message often stops short of what went wrong.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
