//! `listen`, `admin_listen`, `workers`, `tls`, `admin_tls`: where Portcullis listens and how.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::defaults::{MAX_WORKERS, TLS_RELOAD_INTERVAL_SECONDS};
use super::raw::{RawConfig, RawTls};
use super::{Problem, Validator};

/// A listener's certificate chain and key (PEM files, resolved against the config's folder).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the files are checked for a new certificate (SIGHUP also reloads).
    pub reload_interval: Duration,
}

/// The listener section, validated.
pub(super) struct Listeners {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub workers: usize,
    pub tls: Option<TlsConfig>,
    pub admin_tls: Option<TlsConfig>,
}

/// One proxy worker per CPU this process may run on.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Validator {
    pub(super) fn listeners(&mut self, raw: &RawConfig, base_dir: &Path) -> Listeners {
        let listen = self.addr(&raw.listen, "listen");
        let admin_listen = raw
            .admin_listen
            .as_ref()
            .map(|a| self.addr(a, "admin_listen"));
        if admin_listen == Some(listen) && listen.port() != 0 {
            let loc = raw
                .admin_listen
                .as_ref()
                .map(|a| a.referenced)
                .unwrap_or(raw.listen.referenced);
            self.at(&loc, "`admin_listen` must differ from `listen`");
        }
        let tls = raw.tls.as_ref().map(|t| self.tls(t, base_dir, "tls"));
        let admin_tls = raw
            .admin_tls
            .as_ref()
            .map(|t| self.tls(t, base_dir, "admin_tls"));
        if admin_tls.is_some() && admin_listen.is_none() {
            self.problems.push(Problem {
                line: 0,
                column: 0,
                message: "`admin_tls` needs `admin_listen`".into(),
            });
        }
        let workers = self
            .bounded(&raw.workers, MAX_WORKERS, "workers")
            .map_or_else(default_workers, |n| n as usize);
        Listeners {
            listen,
            admin_listen,
            workers,
            tls,
            admin_tls,
        }
    }

    fn addr(&mut self, s: &Spanned<String>, key: &str) -> SocketAddr {
        s.value.parse().unwrap_or_else(|_| {
            self.at(
                &s.referenced,
                format!(
                    "`{key}` must be an IP address and port such as 127.0.0.1:8080, got {:?}",
                    s.value
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn tls(&mut self, raw: &RawTls, base_dir: &Path, key: &str) -> TlsConfig {
        let mut file = |s: &Spanned<String>, what: &str| {
            let path = base_dir.join(&s.value);
            if !path.is_file() {
                self.at(
                    &s.referenced,
                    format!("`{key}.{what}`: no such file {}", path.display()),
                );
            }
            path
        };
        let cert = file(&raw.cert, "cert");
        let tls_key = file(&raw.key, "key");
        let interval = self
            .positive(
                &raw.reload_interval_seconds,
                &format!("{key}.reload_interval_seconds"),
            )
            .unwrap_or(TLS_RELOAD_INTERVAL_SECONDS);
        TlsConfig {
            cert,
            key: tls_key,
            reload_interval: Duration::from_secs(interval),
        }
    }
}
