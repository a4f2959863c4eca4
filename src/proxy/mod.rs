//! Forwarding to upstreams, and the header rewriting that decides what an upstream sees
//! (hop-by-hop headers gone, `X-Forwarded-*` set, credentials and client-sent identity headers
//! removed before the gateway adds its own).
//!
//! Each HTTP/1.1 client connection gets upstream connections of its own ([`Affinity`]): the
//! first request to an upstream opens one, later requests on the same client connection reuse
//! it, and it goes to the worker's idle pool when the client connection ends. Requests never
//! wait on a shared pool, and a desynchronised upstream connection could only ever affect the
//! client that owns it. These exchanges run on the lean HTTP/1.1 client ([`h1`]) inside the
//! client connection's task. HTTP/2 client connections multiplex many requests at once and
//! share a pooled hyper client per upstream.

mod connect;
pub mod h1;
mod headers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_util::either::Either;

pub use headers::{
    Forwarded, GatewayFields, LEFT_OUT, forwarded_for, strip_hop_by_hop, strip_request_headers,
    vary_on_authorization,
};

use self::connect::Dialer;
use self::h1::{Held, Home};
use crate::config::UpstreamConfig;
use crate::http::{Body, GatewayError};
use crate::routes::CanonicalPath;
use crate::tls::TlsError;

/// Why an upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("upstream address: {0}")]
    Header(#[from] http::header::InvalidHeaderValue),
    #[error("upstream address: {0}")]
    Uri(#[from] http::Error),
    #[error("upstream host name: {0}")]
    HostName(#[from] rustls::pki_types::InvalidDnsNameError),
}

pub use self::h1::BoxError;

/// The body of a request sent upstream: the client's, streamed (and size-limited), or one the
/// gateway had to read first.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// A request ready for an upstream ([`Upstream::prepare`]).
pub enum Prepared {
    /// Encoded for the lean HTTP/1.1 client.
    Lean(h1::Outgoing<UpstreamBody>),
    /// For the pooled hyper client, its URI and fields set (boxed: a request is 240 bytes,
    /// and this is moved on the way to the exchange with every HTTP/1.1 request's).
    Pooled(Box<Request<UpstreamBody>>),
}

type Connector = HttpsConnector<HttpConnector>;

/// One upstream: how to connect to it, and the pooled client HTTP/2 client connections share.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: Arc<str>,
    pub config: UpstreamConfig,
    /// Index among the configured upstreams.
    id: usize,
    /// Distinct for every `Upstream` value: the key of its [`Affinity`] slots and idle pools.
    key: u64,
    /// `Host` for requests to it: the host, and the port unless it is the scheme's default.
    host: HeaderValue,
    /// `scheme://authority`, for the pooled client.
    origin: Uri,
    /// New connections for the lean HTTP/1.1 client.
    dialer: Dialer,
    /// The pooled client HTTP/2 client connections share.
    pooled: Client<Connector, UpstreamBody>,
}

/// The upstream connections one HTTP/1.1 client connection holds, at most one per upstream.
/// A connection is taken out while a request uses it and goes back once the response body has
/// been read whole (the client connection sends its next request only after that); one whose
/// exchange ended any other way is closed, never reused in an unknown state. When the client
/// connection ends, the idle ones go to its worker's idle pool.
#[derive(Default)]
pub struct Affinity {
    held: Arc<Held>,
}

impl Affinity {
    /// The upstream connections a request of `version` uses: this client connection's own for
    /// HTTP/1 (its requests come one after another), none — the shared pool — for HTTP/2,
    /// whose streams run at once.
    pub fn for_version(&self, version: Version) -> Option<&Affinity> {
        (version < Version::HTTP_2).then_some(self)
    }
}

/// A distinct key per [`Upstream`] value, for [`Affinity`] slots and idle pools.
static NEXT_UPSTREAM_KEY: AtomicU64 = AtomicU64::new(0);

impl Upstream {
    fn new(id: usize, config: UpstreamConfig) -> Result<Upstream, UpstreamError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = config.scheme == Scheme::HTTPS;
        let tls = if https {
            crate::tls::client_config(config.ca_file.as_deref())?
        } else {
            // Never used for an http:// upstream; no roots needed.
            rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        };
        let default_port = if https { 443 } else { 80 };
        let dialer = Dialer::new(
            config.authority.host(),
            config.authority.port_u16().unwrap_or(default_port),
            config.connect_timeout,
            https.then(|| tls.clone()),
        )?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pooled = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        let host = match config.authority.port_u16() {
            Some(port) if port != default_port => config.authority.as_str(),
            _ => config.authority.host(),
        };
        let host = HeaderValue::from_str(host)?;
        let origin = Uri::builder()
            .scheme(config.scheme.clone())
            .authority(config.authority.clone())
            .path_and_query("/")
            .build()?;
        Ok(Upstream {
            name: config.name.as_str().into(),
            config,
            id,
            key: NEXT_UPSTREAM_KEY.fetch_add(1, Ordering::Relaxed),
            host,
            origin,
            dialer,
            pooled,
        })
    }

    /// Index among the configured upstreams.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The upstream path and query for a request's canonical path and its target (whose
    /// query goes as it came).
    pub fn path_for(
        &self,
        canonical: &CanonicalPath,
        target: &Uri,
    ) -> Result<PathAndQuery, GatewayError> {
        // Nearly always the request's own path is canonical already and the upstream is at its
        // root: then the target's parsed path and query is the upstream's, shared rather than
        // copied into a new string and checked again byte by byte.
        let canonical_path = match canonical {
            CanonicalPath::Target(pq) if self.config.base_path.is_empty() => {
                return Ok(pq.clone());
            }
            canonical => canonical.as_str(),
        };
        let query = target.query();
        let mut pq = String::with_capacity(
            self.config.base_path.len() + canonical_path.len() + 1 + query.map_or(0, str::len),
        );
        pq.push_str(&self.config.base_path);
        pq.push_str(canonical_path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        PathAndQuery::try_from(pq).map_err(|e| GatewayError::Internal(e.to_string()))
    }

    /// The request for `path` (from [`Upstream::path_for`]) made ready to send, with `Host`
    /// and `fields` set: encoded for the lean client when `lean` (an HTTP/1 client
    /// connection's own upstream connections, [`Affinity::for_version`]), else readied for the
    /// pooled client. Encoded, nothing of `req` is kept but its body and method: its head's
    /// fields are slices of the buffer hyper reads the client connection into (see
    /// `Gateway::handle`). The pooled client takes the request whole.
    pub fn prepare(
        &self,
        mut req: Request<UpstreamBody>,
        path: PathAndQuery,
        fields: &GatewayFields<'_>,
        lean: bool,
    ) -> Result<Prepared, GatewayError> {
        if lean {
            let host = std::iter::once((&HOST, &self.host));
            return Ok(Prepared::Lean(h1::Outgoing::new(
                req,
                path.as_str(),
                &LEFT_OUT,
                host.chain(fields.iter()),
            )));
        }
        fields.insert_into(req.headers_mut());
        req.headers_mut().insert(HOST, self.host.clone());
        *req.version_mut() = Version::HTTP_11;
        let mut parts = self.origin.clone().into_parts();
        parts.path_and_query = Some(path);
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|e| GatewayError::Internal(e.to_string()))?;
        Ok(Prepared::Pooled(Box::new(req)))
    }

    /// Sends `req` (from [`Upstream::prepare`]): an encoded one on the client connection's
    /// own upstream connection (`affinity`), else through the shared pool. The response
    /// headers must arrive within the response timeout of `sent` (else 504) and before the
    /// request's deadline (else 408). Connection failures are 502.
    ///
    /// `sent` is the caller's reading of the clock as it sends, which also times the
    /// exchange for the metrics: one reading serves both.
    pub fn send<'a>(
        &'a self,
        req: Prepared,
        affinity: &'a Affinity,
        sent: tokio::time::Instant,
        request_deadline: tokio::time::Instant,
    ) -> impl Future<Output = Result<Response<Body>, GatewayError>> + use<'a> {
        // Whichever comes first: the upstream's response timeout (504) or the request's own
        // deadline (408).
        let response_deadline = sent + self.config.response_timeout;
        let (deadline, expiry) = if request_deadline < response_deadline {
            (request_deadline, Expiry::Request)
        } else {
            (response_deadline, Expiry::Response)
        };
        // Two futures, one for each way: each keeps only what its exchange needs.
        match req {
            Prepared::Lean(mut out) => Either::Left(async move {
                let resp = self.send_on(affinity, &mut out, deadline, expiry).await?;
                refuse_upgrade(resp.map(Body::Upstream))
            }),
            Prepared::Pooled(req) => {
                let pending = tokio::time::timeout_at(deadline, self.pooled.request(*req));
                Either::Right(async move {
                    let resp = pending
                        .await
                        .map_err(|_| expiry.error())?
                        .map_err(classify)?;
                    refuse_upgrade(resp.map(Body::Pooled))
                })
            }
        }
    }

    /// Sends on the connection `affinity` holds for this upstream, else on an idle one of
    /// this worker's, else on a new one; the response head must arrive by `deadline`. A
    /// reused connection that the upstream turns out to have closed meanwhile (not a byte of
    /// response) is replaced, and the request sent again when that is safe
    /// ([`h1::Outgoing::may_retry`]).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice"
    )]
    fn send_on<'a>(
        &'a self,
        affinity: &'a Affinity,
        out: &'a mut h1::Outgoing<UpstreamBody>,
        deadline: tokio::time::Instant,
        expiry: Expiry,
    ) -> impl Future<Output = Result<Response<h1::ResponseBody>, GatewayError>> + 'a {
        async move {
            let home = || Home::new(Arc::clone(&affinity.held), self.key);
            let failed = |failed: h1::Failed| match failed.error {
                h1::Error::TimedOut => expiry.error(),
                error => classify(error),
            };
            // Taken in a statement of its own: taken in the `if let`, the emptied `Option`
            // would keep a place of its own in the future beside the connection.
            let idle = affinity
                .held
                .take(self.key)
                .and_then(h1::Connection::usable);
            if let Some(conn) = idle {
                match h1::send(conn, out, home(), deadline).await {
                    Ok(resp) => return Ok(resp),
                    Err(f) if f.closed_unanswered() && out.may_retry() => {}
                    Err(f) => return Err(failed(f)),
                }
            }
            // Boxed: connecting is rare and its future large; inline it would enlarge (and be
            // copied with) every request's future. The exchange's own timer starts after it,
            // so the deadline covers connecting here.
            let conn = Box::pin(tokio::time::timeout_at(deadline, self.dialer.connect()))
                .await
                .map_err(|_| expiry.error())?
                .map_err(|e| classify(ConnectError(e)))?;
            h1::send(conn, out, home(), deadline).await.map_err(failed)
        }
    }
}

/// Which deadline bounds an exchange, and so the error its passing is.
#[derive(Clone, Copy)]
enum Expiry {
    /// The request's own (408).
    Request,
    /// The upstream's response timeout (504).
    Response,
}

impl Expiry {
    fn error(self) -> GatewayError {
        match self {
            Expiry::Request => GatewayError::RequestTimeout,
            Expiry::Response => GatewayError::UpstreamTimeout,
        }
    }
}

/// A failure to open an upstream connection.
#[derive(Debug, thiserror::Error)]
#[error("connecting: {0}")]
struct ConnectError(#[source] std::io::Error);

/// A `101 Switching Protocols` from an upstream is always unsolicited: the gateway removes
/// `Upgrade` from every request. What follows it on the connection is not HTTP, so it is a
/// failed exchange (502), and the connection is not reused.
fn refuse_upgrade<B>(resp: Response<B>) -> Result<Response<B>, GatewayError> {
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(GatewayError::UpstreamUnavailable(
            "the upstream switched protocols unasked (101)".into(),
        ));
    }
    Ok(resp)
}

/// A failed exchange with an upstream as the client sees it, decided by the error's type and
/// cause chain (never its message): a request body over its limit is 413, a timeout (the
/// connector's `TimedOut`, hyper's own timeouts) 504, anything else 502.
fn classify<E: std::error::Error + 'static>(e: E) -> GatewayError {
    classify_boxed(&e)
}

fn classify_boxed(e: &(dyn std::error::Error + 'static)) -> GatewayError {
    let causes = || std::iter::successors(Some(e), |c| c.source());
    if causes().any(|c| c.is::<http_body_util::LengthLimitError>()) {
        return GatewayError::BodyTooLarge;
    }
    let timed_out = causes().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || c.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            || c.is::<tokio::time::error::Elapsed>()
    });
    if timed_out {
        GatewayError::UpstreamTimeout
    } else {
        GatewayError::UpstreamUnavailable(error_chain(e))
    }
}

/// An error and its causes, for the log.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// All upstreams, in the order of the `upstreams:` map: each one's id is its place, which the
/// routes of the same config hold ([`crate::routes::Route::upstream_index`]).
#[derive(Debug, Clone, Default)]
pub struct Upstreams(Vec<Arc<Upstream>>);

impl Upstreams {
    pub fn new<'a>(
        configs: impl IntoIterator<Item = &'a UpstreamConfig>,
    ) -> Result<Upstreams, UpstreamError> {
        Upstreams::default().reconfigured(configs)
    }

    /// The upstreams of a reloaded config: an upstream whose settings (and place in the
    /// list) did not change is this one's, kept with its connections, so that a reload costs
    /// the client connections of the others only; any other is new.
    pub fn reconfigured<'a>(
        &self,
        configs: impl IntoIterator<Item = &'a UpstreamConfig>,
    ) -> Result<Upstreams, UpstreamError> {
        let mut list = Vec::new();
        for (id, c) in configs.into_iter().enumerate() {
            let upstream = match self.0.get(id) {
                Some(old) if old.config == *c => Arc::clone(old),
                _ => Arc::new(Upstream::new(id, c.clone())?),
            };
            list.push(upstream);
        }
        Ok(Upstreams(list))
    }

    /// The upstream at `index` (a route's `upstream_index`).
    pub fn get(&self, index: usize) -> Option<&Upstream> {
        self.0.get(index).map(|u| &**u)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Upstream> {
        self.0.iter().map(|u| &**u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a cause, as connectors and clients wrap theirs.
    #[derive(Debug)]
    struct Wrapped(&'static str, Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.1)
        }
    }

    fn config(name: &str, authority: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            scheme: Scheme::HTTP,
            authority: authority.parse().unwrap(),
            base_path: String::new(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            ca_file: None,
        }
    }

    /// A reload keeps an unchanged upstream (its key, so its client connections' upstream
    /// connections and its idle pool stay in use) and makes a new one for a changed one.
    #[test]
    fn a_reload_keeps_unchanged_upstreams() {
        let a = config("a", "127.0.0.1:1");
        let b = config("b", "127.0.0.1:2");
        let old = Upstreams::new([&a, &b]).unwrap();
        let moved = config("b", "127.0.0.1:3");
        let new = old.reconfigured([&a, &moved]).unwrap();
        let key = |u: &Upstreams, i: usize| u.get(i).unwrap().key;
        assert_eq!(key(&new, 0), key(&old, 0), "a kept");
        assert_ne!(key(&new, 1), key(&old, 1), "b moved");
        // Another place in the list is another metrics slot: a new upstream.
        let reordered = old.reconfigured([&b, &a]).unwrap();
        assert_eq!(reordered.get(1).unwrap().name, old.get(0).unwrap().name);
        assert_ne!(key(&reordered, 1), key(&old, 0), "a, in another place");
        assert_ne!(key(&reordered, 0), key(&old, 1), "b, in another place");
    }

    /// The upstream's target: the base path, the canonical path, the query as it came —
    /// whether the request's own target is reused or a new one built.
    #[test]
    fn upstream_targets() {
        // (base path, request target, canonical path, upstream target)
        let cases: &[(&str, &str, &str, &str)] = &[
            ("", "/api/x", "/api/x", "/api/x"),
            ("", "/api/x?a=1&b=%20", "/api/x", "/api/x?a=1&b=%20"),
            ("", "/api/x?", "/api/x", "/api/x?"),
            ("", "http://gw.example/api/x?q", "/api/x", "/api/x?q"),
            ("", "/api//x/./y?q", "/api/x/y", "/api/x/y?q"),
            ("", "/api/%7Ex", "/api/~x", "/api/~x"),
            ("/legacy", "/api/x", "/api/x", "/legacy/api/x"),
            ("/legacy", "/api/x?q=1", "/api/x", "/legacy/api/x?q=1"),
            (
                "/legacy",
                "http://gw.example/api/x",
                "/api/x",
                "/legacy/api/x",
            ),
        ];
        for &(base, target, canonical, want) in cases {
            let mut cfg = config("app", "127.0.0.1:1");
            cfg.base_path = base.into();
            let upstreams = Upstreams::new([&cfg]).unwrap();
            let target: Uri = target.parse().unwrap();
            let path =
                CanonicalPath::of(&target, crate::routes::canonicalize(target.path()).unwrap());
            assert_eq!(path.as_str(), canonical, "{target}");
            let got = upstreams.get(0).unwrap().path_for(&path, &target).unwrap();
            assert_eq!(got.as_str(), want, "{base:?} {target} {canonical}");
        }
    }

    #[test]
    fn failures_are_classified_by_type_not_text() {
        use std::io::{Error, ErrorKind};
        let wrap = |e: Box<dyn std::error::Error + Send + Sync>| Wrapped("tcp connect error", e);
        let cases: Vec<(Wrapped, &str)> = vec![
            (
                wrap(Box::new(Error::new(ErrorKind::TimedOut, "connect"))),
                "504",
            ),
            (
                wrap(Box::new(Error::from(ErrorKind::ConnectionRefused))),
                "502",
            ),
            // A message that merely says "timed out" is not a timeout.
            (
                wrap(Box::new(Error::other("the upstream timed out, it says"))),
                "502",
            ),
            (
                wrap(Box::new(Wrapped(
                    "deeper",
                    Box::new(Error::new(ErrorKind::TimedOut, "x")),
                ))),
                "504",
            ),
        ];
        for (e, want) in cases {
            let got = match classify(e) {
                GatewayError::UpstreamTimeout => "504",
                GatewayError::UpstreamUnavailable(_) => "502",
                GatewayError::BodyTooLarge => "413",
                other => panic!("{other:?}"),
            };
            assert_eq!(got, want);
        }
    }
}
