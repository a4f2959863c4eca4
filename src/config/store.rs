//! `store`: where Portcullis keeps users, clients and tokens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Validator;
use super::defaults::STORE_BUSY_TIMEOUT_MS;
use super::raw::RawStore;

#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Embedded SQLite database file, resolved against the config file's directory.
    Sqlite {
        path: PathBuf,
        /// How long a store operation waits on a lock held elsewhere before it fails (503).
        busy_timeout: Duration,
    },
}

impl Validator {
    pub(super) fn store(&mut self, raw: &RawStore, base_dir: &Path) -> StoreConfig {
        let sqlite = &raw.sqlite;
        if sqlite.value.trim().is_empty() {
            self.at(
                &sqlite.referenced,
                "`store.sqlite` must name a database file",
            );
        }
        StoreConfig::Sqlite {
            path: base_dir.join(&sqlite.value),
            busy_timeout: Duration::from_millis(
                self.positive(&raw.busy_timeout_ms, "store.busy_timeout_ms")
                    .unwrap_or(STORE_BUSY_TIMEOUT_MS),
            ),
        }
    }
}
