//! The SQLite writer: one thread, one connection, group commit. Writes that arrive while a
//! commit is in progress run together in the next transaction and are made durable by one
//! fsync; each still succeeds or fails alone (a savepoint each), and none is answered before
//! its commit is on disk. Every caller waits at most the busy timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::tx::backend;
use crate::store::StoreError;

/// A write waiting for the writer thread: it runs inside the batch's transaction (in its own
/// savepoint) and returns what to tell its caller once the commit's outcome is known. It is
/// given `Err` instead of the connection when its batch cannot run at all.
type Job = Box<dyn FnOnce(Result<&Connection, &str>) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

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

/// The writer thread and the queue to it.
#[derive(Debug)]
pub(super) struct Writer {
    /// `None` only while dropping.
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The longest a caller waits for its write.
    timeout: Duration,
}

impl Writer {
    /// Starts the writer thread on `conn`, the connection to the file at `path`.
    pub(super) fn start(
        conn: Connection,
        path: &Path,
        timeout: Duration,
    ) -> Result<Writer, StoreError> {
        let opened = FileIdentity::of(path)
            .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("portcullis-sqlite-writer".into())
            .spawn(move || write_loop(conn, path, opened, queue))
            .map_err(|e| StoreError::Open(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
            timeout,
        })
    }

    /// Runs `f` on the writer thread inside a (group-committed) transaction; resolves once the
    /// commit is durable.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
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
                    Err(e) => Err(backend(e)),
                    Ok(()) => {
                        let outcome = f(conn);
                        let end = if outcome.is_ok() {
                            "RELEASE job"
                        } else {
                            "ROLLBACK TO job; RELEASE job"
                        };
                        match (outcome, conn.execute_batch(end)) {
                            (Ok(v), Ok(())) => Ok(v),
                            (Ok(_), Err(e)) => Err(backend(e)),
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
        self.jobs
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

impl Drop for Writer {
    /// Closes the writer: pending writes finish, the connection closes and the WAL is
    /// checkpointed into the database file before the process goes on (or exits).
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread's loop. A batch
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
