//! Configuration: the only module that knows the YAML shape.
//!
//! Loading happens in two steps (STYLE habit 8): `raw` mirrors the file, then
//! [`Config::parse`] checks every value and reference and reports *every* problem it finds,
//! each with the file, line and column it came from and the full key path. One validator per
//! section (`listeners`, `store`, `oauth`, `upstreams`, `routes`, `headers`, `limits`), each
//! beside the validated types it produces; every default and bound is named in `defaults`.

pub mod defaults;
mod error;
mod headers;
mod keys;
mod limits;
mod listeners;
mod oauth;
mod raw;
mod routes;
mod store;
mod upstreams;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use crate::routes::RouteTable;
pub use error::{ConfigError, Problem};
pub use headers::IdentityHeaders;
pub use limits::{CacheConfig, CleanupConfig, ConnectionLimits, Limits};
pub use listeners::TlsConfig;
pub use oauth::{OAuthConfig, RateLimits};
use raw::RawConfig;
pub use store::{PostgresConfig, Sslmode, StoreConfig, split_sslmode};
pub use upstreams::UpstreamConfig;

/// A validated configuration. Every field holds a checked value.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (or a label such as `<inline>` for tests).
    pub source: PathBuf,
    /// Proxy and `/o/` endpoints.
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`; absent means no admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// Threads serving the proxy listener's connections, each with an event loop of its own.
    pub workers: usize,
    /// TLS on the proxy listener.
    pub tls: Option<TlsConfig>,
    /// TLS on the admin listener.
    pub admin_tls: Option<TlsConfig>,
    pub store: StoreConfig,
    pub oauth: OAuthConfig,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: RouteTable,
    pub identity_headers: IdentityHeaders,
    pub cache: CacheConfig,
    pub limits: Limits,
    pub cleanup: CleanupConfig,
}

impl Config {
    /// Reads and validates a config file. Relative paths inside it resolve against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Validates YAML text. `source` names it in errors; `base_dir` anchors relative paths.
    pub fn parse(text: &str, source: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        let file = source.display().to_string();
        let syntax_error = |e: serde_saphyr::Error| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ConfigError {
                file: file.clone(),
                problems: vec![Problem {
                    line,
                    column,
                    message: error::first_line(&e.to_string()),
                }],
            }
        };
        let mut unknown: Vec<Vec<keys::Segment>> = Vec::new();
        let raw: RawConfig = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_ignored::deserialize(de, |path| {
                let segments = keys::segments(&path);
                if !keys::is_span_marker(&segments) {
                    unknown.push(segments)
                }
            })
        })
        .map_err(syntax_error)?;
        let mut v = Validator::default();
        if !unknown.is_empty() {
            // Unknown keys are errors: a misspelled `scopes:` must never open a route.
            let tree: keys::Node = serde_saphyr::from_str(text).map_err(syntax_error)?;
            for path in &unknown {
                let (line, column) = tree.locate(path).map_or((0, 0), |l| (l.line(), l.column()));
                v.problems.push(Problem {
                    line,
                    column,
                    message: format!("unknown key `{}`", keys::display(path)),
                });
            }
        }
        let config = v.config(raw, source, base_dir);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            v.problems.sort_by_key(|p| (p.line, p.column));
            Err(ConfigError {
                file,
                problems: v.problems,
            })
        }
    }
}

/// Collects the problems of one file while its sections are checked.
#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    pub(super) fn at(&mut self, loc: &Location, message: impl Into<String>) {
        self.problems.push(Problem {
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        });
    }

    pub(super) fn positive<T: Copy + Into<u64>>(
        &mut self,
        field: &Option<Spanned<T>>,
        name: &str,
    ) -> Option<u64> {
        let s = field.as_ref()?;
        let v: u64 = s.value.into();
        if v == 0 {
            self.at(&s.referenced, format!("`{name}` must be greater than zero"));
        }
        Some(v)
    }

    pub(super) fn at_least(
        &mut self,
        field: &Option<Spanned<u64>>,
        min: u64,
        name: &str,
    ) -> Option<u64> {
        let s = field.as_ref()?;
        if s.value < min {
            self.at(&s.referenced, format!("`{name}` must be at least {min}"));
        }
        Some(s.value.max(min))
    }

    /// A positive value of at most `max`, reported (not cut) when larger.
    pub(super) fn bounded(
        &mut self,
        field: &Option<Spanned<u64>>,
        max: u64,
        name: &str,
    ) -> Option<u64> {
        self.positive(field, name)?;
        self.at_most(field, max, name)
    }

    /// A value of at most `max` (zero allowed), reported (not cut) when larger.
    pub(super) fn at_most(
        &mut self,
        field: &Option<Spanned<u64>>,
        max: u64,
        name: &str,
    ) -> Option<u64> {
        let s = field.as_ref()?;
        if s.value > max {
            self.at(&s.referenced, format!("`{name}` must be at most {max}"));
            return Some(max);
        }
        Some(s.value)
    }

    fn config(&mut self, raw: RawConfig, source: &Path, base_dir: &Path) -> Config {
        let listeners = self.listeners(&raw, base_dir);
        let store = self.store(&raw.store, base_dir);
        let oauth = self.oauth(&raw.oauth);
        let upstreams = self.upstreams(&raw.upstreams, base_dir);
        let identity_headers = self.identity_headers(raw.identity_headers.as_ref());
        let cache = self.cache(raw.cache.as_ref());
        let cleanup = self.cleanup(raw.cleanup.as_ref());
        let limits = self.limits(raw.limits.as_ref());
        let routes = self.routes(&raw.routes, &oauth, &upstreams, limits.max_body_bytes);
        Config {
            source: source.to_path_buf(),
            listen: listeners.listen,
            admin_listen: listeners.admin_listen,
            workers: listeners.workers,
            tls: listeners.tls,
            admin_tls: listeners.admin_tls,
            store,
            oauth,
            upstreams,
            routes,
            identity_headers,
            cache,
            limits,
            cleanup,
        }
    }
}

pub(super) fn join<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> String {
    let v: Vec<String> = items.into_iter().map(|s| s.as_ref().to_owned()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests;
