//! `limits`, `cache`, `cleanup`: the bounds on connections and requests, the token cache, the
//! sweeper. Each produces the type its consumer takes.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::Validator;
use super::defaults::*;
use super::raw::{RawCache, RawCleanup, RawLimits};

/// The bounds every connection of a listener has; the listener takes them as they are.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Time allowed for the TLS handshake and the first request head together, and for each
    /// later request head; over HTTP/1.1 it also closes keep-alive connections that send
    /// nothing.
    pub header_read_timeout: Duration,
    /// A connection with no request open for this long is closed.
    pub idle_timeout: Duration,
    /// Time a write may wait for the client to read; longer fails the connection.
    pub write_timeout: Duration,
    /// Largest HTTP/1.1 request head.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// How long in-flight requests may take to finish after shutdown is signalled.
    pub drain_grace: Duration,
}

impl Default for ConnectionLimits {
    /// The defaults, as an unconfigured listener gets them.
    fn default() -> Self {
        ConnectionLimits {
            max_connections: MAX_CONNECTIONS as usize,
            header_read_timeout: Duration::from_secs(HEADER_READ_TIMEOUT_SECONDS),
            idle_timeout: Duration::from_secs(IDLE_TIMEOUT_SECONDS),
            write_timeout: Duration::from_secs(WRITE_TIMEOUT_SECONDS),
            max_header_bytes: MAX_HEADER_BYTES as usize,
            max_headers: MAX_HEADERS as usize,
            drain_grace: DRAIN_GRACE,
        }
    }
}

impl ConnectionLimits {
    /// Settings for small internal listeners (the admin listener, the demo API): the
    /// defaults, with a short drain and at most `max_connections`.
    pub fn internal(max_connections: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            drain_grace: Duration::from_secs(5),
            ..ConnectionLimits::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// The proxy listener's connections.
    pub connection: ConnectionLimits,
    /// Largest `/o/` form body; larger is 413.
    pub token_request_max_bytes: usize,
    /// Default largest proxied request body (a route may set its own).
    pub max_body_bytes: u64,
    /// Time from a request's head to its response head; longer is 408.
    pub request_timeout: Duration,
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

/// The background sweeper of expired and revoked tokens.
#[derive(Debug, Clone)]
pub struct CleanupConfig {
    pub interval: Duration,
    /// Tokens of each kind deleted per transaction; validation never waits behind a long one.
    pub batch_size: usize,
}

impl Validator {
    /// A positive value of a section that may be absent, or `default`.
    fn setting<R>(
        &mut self,
        section: Option<&R>,
        field: impl Fn(&R) -> &Option<Spanned<u64>>,
        key: &str,
        default: u64,
    ) -> u64 {
        section
            .and_then(|s| self.positive(field(s), key))
            .unwrap_or(default)
    }

    pub(super) fn limits(&mut self, raw: Option<&RawLimits>) -> Limits {
        let secs = |n: u64| Duration::from_secs(n);
        let max_header_bytes = raw
            .and_then(|l| {
                self.at_least(
                    &l.max_header_bytes,
                    MIN_MAX_HEADER_BYTES,
                    "limits.max_header_bytes",
                )
            })
            .unwrap_or(MAX_HEADER_BYTES);
        let connection = ConnectionLimits {
            max_connections: self.setting(
                raw,
                |l| &l.max_connections,
                "limits.max_connections",
                MAX_CONNECTIONS,
            ) as usize,
            header_read_timeout: secs(self.setting(
                raw,
                |l| &l.header_read_timeout_seconds,
                "limits.header_read_timeout_seconds",
                HEADER_READ_TIMEOUT_SECONDS,
            )),
            idle_timeout: secs(self.setting(
                raw,
                |l| &l.idle_timeout_seconds,
                "limits.idle_timeout_seconds",
                IDLE_TIMEOUT_SECONDS,
            )),
            write_timeout: secs(self.setting(
                raw,
                |l| &l.write_timeout_seconds,
                "limits.write_timeout_seconds",
                WRITE_TIMEOUT_SECONDS,
            )),
            max_header_bytes: max_header_bytes as usize,
            max_headers: self.setting(raw, |l| &l.max_headers, "limits.max_headers", MAX_HEADERS)
                as usize,
            drain_grace: DRAIN_GRACE,
        };
        Limits {
            connection,
            token_request_max_bytes: self.setting(
                raw,
                |l| &l.token_request_max_bytes,
                "limits.token_request_max_bytes",
                TOKEN_REQUEST_MAX_BYTES,
            ) as usize,
            max_body_bytes: self.setting(
                raw,
                |l| &l.max_body_bytes,
                "limits.max_body_bytes",
                MAX_BODY_BYTES,
            ),
            request_timeout: secs(self.setting(
                raw,
                |l| &l.request_timeout_seconds,
                "limits.request_timeout_seconds",
                REQUEST_TIMEOUT_SECONDS,
            )),
        }
    }

    pub(super) fn cache(&mut self, raw: Option<&RawCache>) -> CacheConfig {
        CacheConfig {
            max_entries: self.setting(
                raw,
                |c| &c.max_entries,
                "cache.max_entries",
                CACHE_MAX_ENTRIES,
            ),
            ttl: raw
                .and_then(|c| self.positive(&c.ttl_seconds, "cache.ttl_seconds"))
                .map(Duration::from_secs),
            revocation_poll: Duration::from_millis(self.setting(
                raw,
                |c| &c.revocation_poll_ms,
                "cache.revocation_poll_ms",
                REVOCATION_POLL_MS,
            )),
        }
    }

    pub(super) fn cleanup(&mut self, raw: Option<&RawCleanup>) -> CleanupConfig {
        CleanupConfig {
            interval: Duration::from_secs(self.setting(
                raw,
                |c| &c.interval_seconds,
                "cleanup.interval_seconds",
                CLEANUP_INTERVAL_SECONDS,
            )),
            batch_size: self.setting(
                raw,
                |c| &c.batch_size,
                "cleanup.batch_size",
                CLEANUP_BATCH_SIZE,
            ) as usize,
        }
    }
}
