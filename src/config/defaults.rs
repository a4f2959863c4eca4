//! Every default and bound of the config in one place, named. The example config
//! (`config/portcullis.yaml`) and README.md state the same values.

use std::time::Duration;

// listeners
/// Most proxy worker threads a config may ask for.
pub const MAX_WORKERS: u64 = 1024;
pub const TLS_RELOAD_INTERVAL_SECONDS: u64 = 60;

// store
pub const STORE_BUSY_TIMEOUT_MS: u64 = 5000;
/// PostgreSQL connections per gateway: enough for the token endpoint's hashing pool and the
/// guard's cache misses on a small machine; the server's `max_connections` (100 by default)
/// bounds replicas × this.
pub const POSTGRES_POOL_SIZE: u64 = 16;
pub const POSTGRES_POOL_SIZE_MAX: u64 = 1024;
pub const POSTGRES_CONNECT_TIMEOUT_MS: u64 = 5000;
pub const POSTGRES_STATEMENT_TIMEOUT_MS: u64 = 5000;

// oauth
pub const REALM: &str = "portcullis";
pub const ACCESS_TOKEN_EXPIRE_SECONDS: u64 = 3600;
pub const REFRESH_TOKEN_EXPIRE_SECONDS: u64 = 14 * 24 * 3600;
/// Longest token lifetime a config may set (about 292 years: expiry arithmetic stays far
/// from overflow).
pub const MAX_TOKEN_LIFETIME_SECONDS: u64 = i64::MAX as u64 / (1 << 30);
pub const REFRESH_TOKEN_GRACE_PERIOD_SECONDS: u64 = 5;
/// RFC 6749 §4.1.2 recommends at most ten minutes; django-oauth-toolkit uses 60 s.
pub const AUTHORIZATION_CODE_EXPIRE_SECONDS: u64 = 60;
pub const MAX_AUTHORIZATION_CODE_EXPIRE_SECONDS: u64 = 600;
/// How long a browser stays signed in at `/o/`.
pub const SESSION_EXPIRE_SECONDS: u64 = 8 * 3600;
pub const MAX_REFRESH_TOKEN_GRACE_PERIOD_SECONDS: u64 = 86_400;

// oauth.rate_limits
pub const PER_CLIENT_PER_MINUTE: u64 = 6000;
pub const PER_USER_PER_MINUTE: u64 = 60;
pub const PER_ADDRESS_PER_MINUTE: u64 = 6000;
pub const FAILURES_BEFORE_BACKOFF: u64 = 5;
pub const IDENTITY_FAILURES_BEFORE_BACKOFF: u64 = 100;
pub const MAX_BACKOFF_SECONDS: u64 = 300;
/// Largest rate-limit count (the limiter counts in 32 bits).
pub const MAX_RATE_LIMIT: u64 = u32::MAX as u64;

// upstreams
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
pub const RESPONSE_TIMEOUT_MS: u64 = 30_000;

// identity_headers
pub const IDENTITY_USER_HEADER: &str = "x-auth-user";
pub const IDENTITY_CLIENT_HEADER: &str = "x-auth-client";
pub const IDENTITY_SCOPES_HEADER: &str = "x-auth-scopes";

// cache
pub const CACHE_MAX_ENTRIES: u64 = 1_000_000;
pub const REVOCATION_POLL_MS: u64 = 1000;

// cleanup
pub const CLEANUP_INTERVAL_SECONDS: u64 = 600;
pub const CLEANUP_BATCH_SIZE: u64 = 1000;

// limits
pub const MAX_CONNECTIONS: u64 = 10_000;
pub const HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
pub const TOKEN_REQUEST_MAX_BYTES: u64 = 16 * 1024;
pub const MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub const MAX_HEADER_BYTES: u64 = 32 * 1024;
/// Smallest request-head limit (hyper's HTTP/1 read buffer cannot be smaller).
pub const MIN_MAX_HEADER_BYTES: u64 = 8192;
/// hyper's own default header count.
pub const MAX_HEADERS: u64 = 100;
pub const IDLE_TIMEOUT_SECONDS: u64 = 60;
pub const REQUEST_TIMEOUT_SECONDS: u64 = 60;
pub const WRITE_TIMEOUT_SECONDS: u64 = 60;
/// How long in-flight requests may take to finish after shutdown is signalled.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);
