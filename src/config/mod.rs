//! Configuration: the only module that knows the YAML shape.
//!
//! Loading happens in two steps (STYLE habit 8): `raw` mirrors the file with
//! `deny_unknown_fields`, then [`Config::parse`] checks every value and reference and reports
//! *every* problem it finds, each with the file, line and column it came from.

mod keys;
mod raw;

use crate::scope::ScopeSet;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, Method, Uri};
use serde_saphyr::{Location, Spanned};

use crate::routes::{PathOptions, Route, RouteAuth, RouteTable, canonicalize_with};
use raw::{RawConfig, RawRoute};

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

/// Most proxy worker threads a config may ask for.
const MAX_WORKERS: u64 = 1024;

/// One proxy worker per CPU this process may run on.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The background sweeper of expired and revoked tokens.
#[derive(Debug, Clone)]
pub struct CleanupConfig {
    pub interval: Duration,
    /// Tokens of each kind deleted per transaction; validation never waits behind a long one.
    pub batch_size: usize,
}

/// A listener's certificate chain and key (PEM files, resolved against the config's folder).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the files are checked for a new certificate (SIGHUP also reloads).
    pub reload_interval: Duration,
}

/// Brute-force resistance of the token endpoint.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Requests per minute per client id (authenticated or not) from one source address.
    pub per_client_per_minute: u32,
    /// Password-grant requests per minute per username from one source address.
    pub per_user_per_minute: u32,
    /// Requests per minute per source address.
    pub per_address_per_minute: u32,
    /// Failed attempts of one client id or username from one source address before that
    /// address backs off for it.
    pub failures_before_backoff: u32,
    /// Failed attempts of one client id or username from all addresses together (within an
    /// hour) before it backs off everywhere except where it recently succeeded.
    pub identity_failures_before_backoff: u32,
    /// Back-off doubles with every further failure up to this.
    pub max_backoff: Duration,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// Embedded SQLite database file, resolved against the config file's directory.
    Sqlite {
        path: PathBuf,
        /// How long a store operation waits on a lock held elsewhere before it fails (503).
        busy_timeout: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// Scope name -> human description, as django-oauth-toolkit's `SCOPES`.
    pub scopes: BTreeMap<String, String>,
    /// Granted when a token request names no scope (intersected with the client's scopes).
    pub default_scopes: ScopeSet,
    pub access_token_expire_seconds: i64,
    pub refresh_token_expire_seconds: i64,
    /// Issue a new refresh token on every refresh and invalidate the old one.
    pub rotate_refresh_token: bool,
    /// A rotated refresh token presented again within this many seconds gets the same new
    /// pair (a client retrying after a lost response), not an error.
    pub refresh_token_grace_period_seconds: i64,
    /// A rotated refresh token presented after the grace period revokes its whole family.
    pub refresh_token_reuse_protection: bool,
    /// RFC 8414 issuer identifier; endpoint URLs in the metadata are built on it. `None`:
    /// `http://` and the address the proxy listener is bound to.
    pub issuer: Option<String>,
    /// Serve the `/o/` endpoints over plain HTTP on a non-loopback listener (behind a
    /// TLS-terminating proxy). Off: they refuse such requests.
    pub allow_plain_http: bool,
    pub rate_limits: RateLimits,
    /// The `realm` of `WWW-Authenticate: Bearer` challenges.
    pub realm: String,
    /// Password hashes verified at once, at most (each runs on a blocking thread).
    pub password_hash_concurrency: usize,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Prepended to the canonical request path; empty or starting with `/`, no trailing `/`.
    pub base_path: String,
    pub connect_timeout: Duration,
    /// Time allowed from sending the request until the upstream's response headers arrive.
    pub response_timeout: Duration,
    /// Trust roots for an https:// upstream; `None`: the system's.
    pub ca_file: Option<PathBuf>,
}

impl UpstreamConfig {
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user: HeaderName,
    pub client: HeaderName,
    pub scopes: HeaderName,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Token cache capacity (entries).
    pub max_entries: u64,
    /// Optional backstop: longest time a cached token is trusted without asking the store
    /// again. Revocations arrive without it (directly or through the revocation log); it
    /// covers changes made to the database behind Portcullis' back, at some memory per entry.
    pub ttl: Option<Duration>,
    /// How often the revocation log is read, so that tokens revoked by another process (the
    /// CLI, another replica) leave this gateway's cache.
    pub revocation_poll: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Time allowed to send a request's headers (slow clients are cut off).
    pub header_read_timeout: Duration,
    pub token_request_max_bytes: usize,
    /// Default largest proxied request body (a route may set its own).
    pub max_body_bytes: u64,
    /// Largest request head (request line and headers) over HTTP/1.1; larger is 431.
    pub max_header_bytes: usize,
    /// Most request headers; more is 431.
    pub max_headers: usize,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Time from a request's head to its response head; longer is 408.
    pub request_timeout: Duration,
    /// Time a response write may wait for the client to read; longer closes the connection.
    pub write_timeout: Duration,
}

/// One thing wrong with a config file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// Everything wrong with a config file, reported at once.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{} has {n} problem{}:",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            if p.line == 0 {
                writeln!(f, "  {}: {}", self.file, p.message)?;
            } else {
                writeln!(f, "  {}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
            }
        }
        Ok(())
    }
}

pub const DEFAULT_REALM: &str = "portcullis";

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
                    message: first_line(&e.to_string()),
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

/// serde-saphyr's messages may carry a rendered snippet after the first line; the location is
/// reported separately, so keep only the message itself.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let line = match line.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(line, |(_, m)| m),
        None => line,
    };
    line.to_owned()
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn at(&mut self, loc: &Location, message: impl Into<String>) {
        self.problems.push(Problem {
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        });
    }

    fn positive<T: Copy + Into<u64>>(
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

    fn at_least(&mut self, field: &Option<Spanned<u64>>, min: u64, name: &str) -> Option<u64> {
        let s = field.as_ref()?;
        if s.value < min {
            self.at(&s.referenced, format!("`{name}` must be at least {min}"));
        }
        Some(s.value.max(min))
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

    fn config(&mut self, raw: RawConfig, source: &Path, base_dir: &Path) -> Config {
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
        let sqlite = &raw.store.sqlite;
        if sqlite.value.trim().is_empty() {
            self.at(
                &sqlite.referenced,
                "`store.sqlite` must name a database file",
            );
        }
        let store = StoreConfig::Sqlite {
            path: base_dir.join(&sqlite.value),
            busy_timeout: Duration::from_millis(
                self.positive(&raw.store.busy_timeout_ms, "store.busy_timeout_ms")
                    .unwrap_or(5000),
            ),
        };

        let oauth = self.oauth(&raw.oauth);
        let upstreams = self.upstreams(&raw.upstreams, base_dir);
        let identity_headers = self.identity_headers(raw.identity_headers.as_ref());

        let cache = raw.cache.as_ref();
        let cache = CacheConfig {
            max_entries: cache
                .and_then(|c| self.positive(&c.max_entries, "cache.max_entries"))
                .unwrap_or(1_000_000),
            ttl: cache
                .and_then(|c| self.positive(&c.ttl_seconds, "cache.ttl_seconds"))
                .map(Duration::from_secs),
            revocation_poll: Duration::from_millis(
                cache
                    .and_then(|c| self.positive(&c.revocation_poll_ms, "cache.revocation_poll_ms"))
                    .unwrap_or(1000),
            ),
        };
        let cleanup = raw.cleanup.as_ref();
        let cleanup = CleanupConfig {
            interval: Duration::from_secs(
                cleanup
                    .and_then(|c| self.positive(&c.interval_seconds, "cleanup.interval_seconds"))
                    .unwrap_or(600),
            ),
            batch_size: cleanup
                .and_then(|c| self.positive(&c.batch_size, "cleanup.batch_size"))
                .unwrap_or(1000) as usize,
        };
        let limits = raw.limits.as_ref();
        let limits = Limits {
            max_connections: limits
                .and_then(|l| self.positive(&l.max_connections, "limits.max_connections"))
                .unwrap_or(10_000) as usize,
            header_read_timeout: Duration::from_secs(
                limits
                    .and_then(|l| {
                        self.positive(
                            &l.header_read_timeout_seconds,
                            "limits.header_read_timeout_seconds",
                        )
                    })
                    .unwrap_or(10),
            ),
            token_request_max_bytes: limits
                .and_then(|l| {
                    self.positive(&l.token_request_max_bytes, "limits.token_request_max_bytes")
                })
                .unwrap_or(16 * 1024) as usize,
            max_body_bytes: limits
                .and_then(|l| self.positive(&l.max_body_bytes, "limits.max_body_bytes"))
                .unwrap_or(10 * 1024 * 1024),
            max_header_bytes: limits
                .and_then(|l| self.at_least(&l.max_header_bytes, 8192, "limits.max_header_bytes"))
                .unwrap_or(32 * 1024) as usize,
            max_headers: limits
                .and_then(|l| self.positive(&l.max_headers, "limits.max_headers"))
                .unwrap_or(100) as usize,
            idle_timeout: Duration::from_secs(
                limits
                    .and_then(|l| {
                        self.positive(&l.idle_timeout_seconds, "limits.idle_timeout_seconds")
                    })
                    .unwrap_or(60),
            ),
            request_timeout: Duration::from_secs(
                limits
                    .and_then(|l| {
                        self.positive(&l.request_timeout_seconds, "limits.request_timeout_seconds")
                    })
                    .unwrap_or(60),
            ),
            write_timeout: Duration::from_secs(
                limits
                    .and_then(|l| {
                        self.positive(&l.write_timeout_seconds, "limits.write_timeout_seconds")
                    })
                    .unwrap_or(60),
            ),
        };

        let workers = match &raw.workers {
            Some(w) if w.value > MAX_WORKERS => {
                self.at(
                    &w.referenced,
                    format!("`workers` must be at most {MAX_WORKERS}"),
                );
                1
            }
            w => self
                .positive(w, "workers")
                .map_or_else(default_workers, |n| n as usize),
        };

        let routes = self.routes(&raw.routes, &oauth, &upstreams, limits.max_body_bytes);
        Config {
            source: source.to_path_buf(),
            listen,
            admin_listen,
            workers,
            tls,
            admin_tls,
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

    fn oauth(&mut self, raw: &raw::RawOAuth) -> OAuthConfig {
        let mut scopes = BTreeMap::new();
        for (name, description) in &raw.scopes {
            if !ScopeSet::is_valid_token(name) {
                self.at(
                    &description.referenced,
                    format!("scope name {name:?} is not a valid RFC 6749 scope token"),
                );
            }
            scopes.insert(name.clone(), description.value.clone());
        }
        if scopes.is_empty() {
            self.problems.push(Problem {
                line: 0,
                column: 0,
                message: "`oauth.scopes` must define at least one scope".into(),
            });
        }
        let mut default_scopes: Vec<&str> = Vec::new();
        for s in &raw.default_scopes {
            if !scopes.contains_key(&s.value) {
                self.at(
                    &s.referenced,
                    format!(
                        "default scope {:?} is not defined in `oauth.scopes`",
                        s.value
                    ),
                );
            } else {
                default_scopes.push(&s.value);
            }
        }
        let access = self
            .positive(
                &raw.access_token_expire_seconds,
                "oauth.access_token_expire_seconds",
            )
            .unwrap_or(3600);
        let refresh = self
            .positive(
                &raw.refresh_token_expire_seconds,
                "oauth.refresh_token_expire_seconds",
            )
            .unwrap_or(14 * 24 * 3600);
        let realm = match &raw.realm {
            Some(r)
                if r.value.is_empty()
                    || r.value.contains(['"', '\\'])
                    || r.value.chars().any(char::is_control) =>
            {
                self.at(&r.referenced, "`oauth.realm` must be non-empty and contain no quote, backslash or control character");
                DEFAULT_REALM.to_owned()
            }
            Some(r) => r.value.clone(),
            None => DEFAULT_REALM.to_owned(),
        };
        let default_concurrency = std::thread::available_parallelism().map_or(2, |n| n.get());
        let password_hash_concurrency = self
            .positive(
                &raw.password_hash_concurrency,
                "oauth.password_hash_concurrency",
            )
            .map_or(default_concurrency, |n| n as usize);
        let issuer = match &raw.issuer {
            None => None,
            Some(i) => {
                let ok = i.value.parse::<Uri>().is_ok_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https"))
                        && u.authority().is_some()
                        && u.query().is_none()
                        && !i.value.contains('#')
                });
                if !ok {
                    self.at(
                        &i.referenced,
                        "`oauth.issuer` must be an http(s) URL without query or fragment",
                    );
                }
                Some(i.value.trim_end_matches('/').to_owned())
            }
        };
        OAuthConfig {
            scopes,
            default_scopes: default_scopes.into_iter().collect(),
            access_token_expire_seconds: access.min(i64::MAX as u64 / 4) as i64,
            refresh_token_expire_seconds: refresh.min(i64::MAX as u64 / 4) as i64,
            rotate_refresh_token: raw.rotate_refresh_token.unwrap_or(true),
            refresh_token_grace_period_seconds: raw
                .refresh_token_grace_period_seconds
                .unwrap_or(5)
                .min(86_400) as i64,
            refresh_token_reuse_protection: raw.refresh_token_reuse_protection.unwrap_or(true),
            allow_plain_http: raw.allow_plain_http.unwrap_or(false),
            rate_limits: self.rate_limits(raw.rate_limits.as_ref()),
            issuer,
            realm,
            password_hash_concurrency,
        }
    }

    fn rate_limits(&mut self, raw: Option<&raw::RawRateLimits>) -> RateLimits {
        let mut get = |field: Option<&Option<Spanned<u64>>>, name: &str, default: u64| -> u64 {
            field
                .and_then(|f| self.positive(f, name))
                .unwrap_or(default)
                .min(u64::from(u32::MAX))
        };
        RateLimits {
            per_client_per_minute: get(
                raw.map(|r| &r.per_client_per_minute),
                "per_client_per_minute",
                6000,
            ) as u32,
            per_user_per_minute: get(
                raw.map(|r| &r.per_user_per_minute),
                "per_user_per_minute",
                60,
            ) as u32,
            per_address_per_minute: get(
                raw.map(|r| &r.per_address_per_minute),
                "per_address_per_minute",
                6000,
            ) as u32,
            failures_before_backoff: get(
                raw.map(|r| &r.failures_before_backoff),
                "failures_before_backoff",
                5,
            ) as u32,
            identity_failures_before_backoff: get(
                raw.map(|r| &r.identity_failures_before_backoff),
                "identity_failures_before_backoff",
                100,
            ) as u32,
            max_backoff: Duration::from_secs(get(
                raw.map(|r| &r.max_backoff_seconds),
                "max_backoff_seconds",
                300,
            )),
        }
    }

    fn tls(&mut self, raw: &raw::RawTls, base_dir: &Path, key: &str) -> TlsConfig {
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
            .positive(&raw.reload_interval_seconds, "reload_interval_seconds")
            .unwrap_or(60);
        TlsConfig {
            cert,
            key: tls_key,
            reload_interval: Duration::from_secs(interval),
        }
    }

    fn upstreams(
        &mut self,
        raw: &BTreeMap<String, raw::RawUpstream>,
        base_dir: &Path,
    ) -> BTreeMap<String, UpstreamConfig> {
        let mut out = BTreeMap::new();
        for (name, up) in raw {
            let url = &up.url;
            let parsed = url.value.parse::<Uri>().ok().and_then(|uri| {
                let parts = uri.into_parts();
                Some((parts.scheme?, parts.authority?, parts.path_and_query))
            });
            let Some((scheme, authority, path_and_query)) = parsed else {
                self.at(&url.referenced, format!("upstream {name:?}: `url` must be an absolute URL such as http://127.0.0.1:9000, got {:?}", url.value));
                continue;
            };
            if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
                self.at(
                    &url.referenced,
                    format!("upstream {name:?}: the URL must be http:// or https://"),
                );
            }
            let ca_file = up.ca_file.as_ref().map(|ca| {
                let path = base_dir.join(&ca.value);
                if scheme != Scheme::HTTPS {
                    self.at(
                        &ca.referenced,
                        format!("upstream {name:?}: `ca_file` needs an https:// URL"),
                    );
                } else if !path.is_file() {
                    self.at(
                        &ca.referenced,
                        format!("upstream {name:?}: no such file {}", path.display()),
                    );
                }
                path
            });
            if authority.as_str().contains('@') {
                self.at(
                    &url.referenced,
                    format!("upstream {name:?}: credentials in the URL are not supported"),
                );
            }
            let mut base_path = String::new();
            if let Some(pq) = path_and_query {
                if pq.query().is_some() {
                    self.at(
                        &url.referenced,
                        format!("upstream {name:?}: the URL must not have a query"),
                    );
                }
                base_path = pq.path().trim_end_matches('/').to_owned();
            }
            let connect = self
                .positive(&up.connect_timeout_ms, "connect_timeout_ms")
                .unwrap_or(2_000);
            let response = self
                .positive(&up.response_timeout_ms, "response_timeout_ms")
                .unwrap_or(30_000);
            out.insert(
                name.clone(),
                UpstreamConfig {
                    name: name.clone(),
                    scheme,
                    authority,
                    base_path,
                    connect_timeout: Duration::from_millis(connect),
                    response_timeout: Duration::from_millis(response),
                    ca_file,
                },
            );
        }
        out
    }

    fn routes(
        &mut self,
        raw: &[RawRoute],
        oauth: &OAuthConfig,
        upstreams: &BTreeMap<String, UpstreamConfig>,
        default_max_body_bytes: u64,
    ) -> RouteTable {
        let mut routes: Vec<(Route, Location)> = Vec::new();
        let mut ids = BTreeSet::new();
        for r in raw {
            let loc = r.path.referenced;
            let path = &r.path.value;
            let options = PathOptions {
                allow_encoded_slashes: r.allow_encoded_slashes.unwrap_or(false),
                allow_semicolons: r.allow_semicolons.unwrap_or(false),
                allow_double_encoding: r.allow_double_encoding.unwrap_or(false),
            };
            let prefix = match canonicalize_with(path, options) {
                Ok(c) if c == path.as_str() => path.clone(),
                Ok(c) => {
                    self.at(
                        &loc,
                        format!("route path {path:?} is not canonical; write it as {c:?}"),
                    );
                    c.into_owned()
                }
                Err(e) => {
                    self.at(&loc, format!("route path {path:?} is invalid: {e}"));
                    continue;
                }
            };
            if crate::routes::is_reserved(&prefix) {
                self.at(
                    &loc,
                    "the /o/ path namespace is reserved for the OAuth endpoints",
                );
            }
            let methods = r.methods.as_ref().map(|ms| {
                let mut out: Vec<Method> = Vec::new();
                for m in ms {
                    match Method::from_bytes(m.value.as_bytes()) {
                        Ok(method) if m.value.bytes().all(|b| b.is_ascii_uppercase()) => {
                            if !out.contains(&method) {
                                out.push(method)
                            }
                        }
                        _ => self.at(
                            &m.referenced,
                            format!(
                                "{:?} is not an HTTP method (write methods in upper case)",
                                m.value
                            ),
                        ),
                    }
                }
                if ms.is_empty() {
                    self.at(&loc, "`methods` is empty: omit it to allow every method");
                }
                out.into_boxed_slice()
            });
            let public = match &r.auth {
                None => false,
                Some(a) if a.value == "none" => true,
                Some(a) if a.value == "bearer" => false,
                Some(a) => {
                    self.at(
                        &a.referenced,
                        format!("`auth` must be `bearer` or `none`, got {:?}", a.value),
                    );
                    false
                }
            };
            let mut scopes: Vec<&str> = Vec::new();
            for s in r.scopes.iter().flatten() {
                if !oauth.scopes.contains_key(&s.value) {
                    self.at(
                        &s.referenced,
                        format!(
                            "unknown scope {:?} (defined: {})",
                            s.value,
                            join(oauth.scopes.keys())
                        ),
                    );
                } else {
                    scopes.push(&s.value);
                }
            }
            if public && r.scopes.is_some() {
                self.at(&loc, "a route with `auth: none` cannot require `scopes`");
            }
            if !upstreams.contains_key(&r.upstream.value) {
                self.at(
                    &r.upstream.referenced,
                    format!(
                        "unknown upstream {:?} (defined: {})",
                        r.upstream.value,
                        join(upstreams.keys())
                    ),
                );
            }
            let id = match &r.id {
                Some(id) => id.value.clone(),
                None => match &methods {
                    Some(ms) => {
                        let names: Vec<&str> = ms.iter().map(Method::as_str).collect();
                        format!("{} {prefix}", names.join(","))
                    }
                    None => prefix.clone(),
                },
            };
            if !ids.insert(id.clone()) {
                self.at(
                    &loc,
                    format!("route id {id:?} is used twice; give one of them an `id:`"),
                );
            }
            let route = Route {
                id: id.into(),
                prefix: prefix.into(),
                methods,
                auth: if public {
                    RouteAuth::Public
                } else {
                    RouteAuth::Bearer {
                        scopes: scopes.into_iter().collect(),
                    }
                },
                upstream: r.upstream.value.as_str().into(),
                path_options: options,
                case_insensitive: r.case_insensitive.unwrap_or(false),
                max_body_bytes: self
                    .positive(&r.max_body_bytes, "max_body_bytes")
                    .unwrap_or(default_max_body_bytes),
                index: 0,
            };
            if let Some((_, first)) = routes.iter().find(|(other, _)| {
                other.prefix == route.prefix
                    && match (&other.methods, &route.methods) {
                        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
                        _ => true,
                    }
            }) {
                self.at(
                    &loc,
                    format!(
                        "duplicate route: path {:?} with these methods is already routed at line {}",
                        route.prefix,
                        first.line()
                    ),
                );
            }
            routes.push((route, loc));
        }
        RouteTable::new(routes.into_iter().map(|(r, _)| r).collect())
    }

    fn identity_headers(&mut self, raw: Option<&raw::RawIdentityHeaders>) -> IdentityHeaders {
        let mut pick = |v: Option<&Spanned<String>>, default: &'static str| -> HeaderName {
            match v {
                None => HeaderName::from_static(default),
                Some(s) => HeaderName::from_bytes(s.value.as_bytes()).unwrap_or_else(|_| {
                    self.at(
                        &s.referenced,
                        format!("{:?} is not a valid header name", s.value),
                    );
                    HeaderName::from_static(default)
                }),
            }
        };
        let headers = IdentityHeaders {
            user: pick(raw.and_then(|r| r.user.as_ref()), "x-auth-user"),
            client: pick(raw.and_then(|r| r.client.as_ref()), "x-auth-client"),
            scopes: pick(raw.and_then(|r| r.scopes.as_ref()), "x-auth-scopes"),
        };
        let names: BTreeSet<String> = [&headers.user, &headers.client, &headers.scopes]
            .iter()
            .map(|h| h.as_str().replace('_', "-"))
            .collect();
        if names.len() != 3 {
            self.problems.push(Problem {
                line: 0,
                column: 0,
                message: "`identity_headers` must name three different headers".into(),
            });
        }
        headers
    }
}

fn join<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> String {
    let v: Vec<String> = items.into_iter().map(|s| s.as_ref().to_owned()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests;
