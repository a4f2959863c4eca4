//! Test harness: the real gateway (library entry point) on ephemeral loopback ports, a real
//! upstream (the sample API, which echoes what it received), and a real HTTP client.
#![allow(dead_code)]

pub mod ca;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::app::{self, Running};
use portcullis::clock::{ManualClock, SharedClock};
use portcullis::config::Config;
use portcullis::crypto::PasswordHasher;
use portcullis::manage;
use portcullis::store::{GrantType, SharedStore};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const PASSWORD: &str = "correct horse battery staple";

/// The redirect URI of the harness's clients that may use `authorization_code`.
pub const REDIRECT_URI: &str = "http://127.0.0.1/callback";

/// The issue's example routes, pointing at `{upstream}`.
pub fn config_yaml(upstream: &str, extra_oauth: &str, extra: &str) -> String {
    config_yaml_with(upstream, extra_oauth, "", extra, "127.0.0.1:0", "")
}

/// The example config plus routes, top-level keys, and a listen address of the caller's.
pub fn config_yaml_with(
    upstream: &str,
    extra_oauth: &str,
    extra_routes: &str,
    extra: &str,
    listen: &str,
    extra_store: &str,
) -> String {
    format!(
        r#"
listen: {listen}
admin_listen: 127.0.0.1:0
store:
  sqlite: data/portcullis.db{extra_store}
oauth:
  scopes: {{ read: Read scope, write: Write scope, groups: Access to your groups, introspection: Introspect tokens }}
  default_scopes: [read]
  access_token_expire_seconds: 1200
  refresh_token_expire_seconds: 3600
{extra_oauth}
upstreams:
  legacy: {{ url: {upstream}, response_timeout_ms: 500 }}
routes:
  - {{ path: /api/users, methods: [GET, HEAD], scopes: [read], upstream: legacy }}
  - {{ path: /api, methods: [POST, PUT, PATCH, DELETE], scopes: [write], upstream: legacy }}
  - {{ path: /api/groups, scopes: [groups], upstream: legacy }}
  - {{ path: /public, auth: none, upstream: legacy }}
{extra_routes}
{extra}
identity_headers: {{ user: X-Auth-User, client: X-Auth-Client, scopes: X-Auth-Scopes }}
"#
    )
}

/// A sample-API upstream on an ephemeral port, counting the requests it served.
pub struct Upstream {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        tokio::spawn(portcullis::demo::sample_api(listener, rx));
        Upstream { addr, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct TestClient {
    pub id: String,
    pub secret: String,
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub store: SharedStore,
    pub config: Config,
    pub clock: ManualClock,
    pub upstream: Upstream,
    pub http: Client<HttpConnector, Full<Bytes>>,
    /// A client with every grant and the read and write scopes.
    pub client: TestClient,
}

#[derive(Default)]
pub struct Options {
    pub extra_oauth: String,
    pub extra: String,
    /// Replaces the upstream URL (for unreachable-upstream tests).
    pub upstream_url: Option<String>,
    /// More entries of the `routes:` list (each line starting with `  - `).
    pub extra_routes: String,
    /// Replaces `listen: 127.0.0.1:0`.
    pub listen: Option<String>,
    /// More keys of the `store:` section, each on a line of its own that this text starts
    /// (`"\n  busy_timeout_ms: 500"`).
    pub extra_store: String,
    /// Replaces the store's `sqlite: data/portcullis.db` line (`postgres: URL`).
    pub store: Option<String>,
}

impl Options {
    /// A gateway on a fresh PostgreSQL database, or `None` when the PostgreSQL tests skip.
    pub fn postgres() -> Option<Options> {
        let url = fresh_postgres_database(&postgres_server()?);
        Some(Options {
            store: Some(format!("postgres: {url}")),
            ..Options::default()
        })
    }
}

/// Whether `PORTCULLIS_TEST_STORE=postgres` asks for the gateway suites to run on a fresh
/// PostgreSQL database per gateway instead of an SQLite file.
pub fn suites_on_postgres() -> bool {
    match std::env::var("PORTCULLIS_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("PORTCULLIS_TEST_STORE is sqlite or postgres, not {other:?}"),
    }
}

static NEXT_USER: AtomicUsize = AtomicUsize::new(0);

impl Harness {
    pub async fn start() -> Harness {
        Harness::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> Harness {
        // Logs of a failing test are shown with its output.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .try_init();
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let url = opts.upstream_url.clone().unwrap_or_else(|| upstream.url());
        let listen = opts.listen.as_deref().unwrap_or("127.0.0.1:0");
        let yaml = config_yaml_with(
            &url,
            &opts.extra_oauth,
            &opts.extra_routes,
            &opts.extra,
            listen,
            &opts.extra_store,
        );
        // The gateway suites run on PostgreSQL too (`.ci/run`); a test that sets SQLite keys
        // of its own stays on SQLite.
        let store = match &opts.store {
            Some(store) => Some(store.clone()),
            None if opts.extra_store.is_empty() && suites_on_postgres() => {
                let server = postgres_server()
                    .expect("PORTCULLIS_TEST_STORE=postgres needs PORTCULLIS_TEST_DATABASE_URL");
                Some(format!("postgres: {}", fresh_postgres_database(&server)))
            }
            None => None,
        };
        let yaml = match &store {
            Some(store) => replaced(&yaml, "sqlite: data/portcullis.db", store),
            None => yaml,
        };
        let path = dir.path().join("portcullis.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let config = Config::load(&path).unwrap();
        let store = app::open_store(&config).await.unwrap();
        let clock = ManualClock::new(1_800_000_000);
        let shared: SharedClock = Arc::new(clock.clone());
        let running = app::start(config.clone(), Arc::clone(&store), shared)
            .await
            .unwrap();
        let hasher = PasswordHasher::new(1).unwrap();
        manage::add_user(&store, &hasher, "alice", PASSWORD)
            .await
            .unwrap();
        let client = add_client(&store, &config, &GrantType::ALL, &["read", "write"]).await;
        Harness {
            addr: running.addr,
            admin: running.admin_addr.unwrap(),
            running: Some(running),
            dir,
            store,
            config,
            clock,
            upstream,
            http: http_client(),
            client,
        }
    }

    /// Another gateway with this one's config file, store and clock (a replica, when the
    /// store is PostgreSQL): the same users and clients, its own token cache.
    pub async fn replica(&self) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.yaml");
        std::fs::copy(self.dir.path().join("portcullis.yaml"), &path).unwrap();
        let config = Config::load(&path).unwrap();
        let store = app::open_store(&config).await.unwrap();
        let clock = self.clock.clone();
        let running = app::start(config.clone(), Arc::clone(&store), Arc::new(clock.clone()))
            .await
            .unwrap();
        Harness {
            addr: running.addr,
            admin: running.admin_addr.unwrap(),
            running: Some(running),
            dir,
            store,
            config,
            clock,
            // Unused: the copied config still forwards to the first gateway's upstream.
            upstream: Upstream::start().await,
            http: http_client(),
            client: self.client.clone(),
        }
    }

    pub fn clock_now(&self) -> i64 {
        use portcullis::clock::Clock as _;
        self.clock.now()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data/portcullis.db")
    }

    /// Runs `sql` on the gateway's database behind its back, as another program would,
    /// whichever the backend; returns the rows it changed.
    pub fn behind_its_back(&self, sql: &str) -> u64 {
        match &self.config.store {
            portcullis::config::StoreConfig::Sqlite { path, .. } => {
                let db = rusqlite::Connection::open(path).unwrap();
                db.execute(sql, []).unwrap() as u64
            }
            portcullis::config::StoreConfig::Postgres(pg) => {
                let (url, sql) = (pg.url.clone(), sql.to_owned());
                // The synchronous client must not run on the test's runtime.
                std::thread::spawn(move || {
                    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    db.execute(&sql, &[]).unwrap()
                })
                .join()
                .unwrap()
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.local_addr(), path)
    }

    /// The proxy address to connect to (loopback even when listening on 0.0.0.0).
    pub fn local_addr(&self) -> SocketAddr {
        let mut a = self.addr;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        a
    }

    /// Writes `request` on a fresh connection and reads until the server closes it (or 10 s).
    pub async fn raw(&self, request: &[u8]) -> String {
        raw_exchange(self.local_addr(), request).await
    }

    pub async fn add_user(&self, name: &str) {
        let hasher = PasswordHasher::new(1).unwrap();
        manage::add_user(&self.store, &hasher, name, PASSWORD)
            .await
            .unwrap();
    }

    pub async fn new_client(&self, grants: &[GrantType], scopes: &[&str]) -> TestClient {
        add_client(&self.store, &self.config, grants, scopes).await
    }

    /// Sends a request and returns status, headers and body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        fetch(&self.http, req).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.send(Method::GET, path, &headers, b"").await
    }

    /// POSTs a form to /o/token/ with HTTP Basic client authentication.
    pub async fn token(&self, client: &TestClient, form: &[(&str, &str)]) -> Resp {
        let basic = basic(&client.id, &client.secret);
        self.token_raw(Some(&basic), form).await
    }

    /// Revokes `token` at `/o/revoke_token/` (RFC 7009) as `client`.
    pub async fn revoke(&self, client: &TestClient, token: &str) -> Resp {
        let headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &*basic(&client.id, &client.secret)),
        ];
        let body = format!("token={token}");
        self.send(Method::POST, "/o/revoke_token/", &headers, body.as_bytes())
            .await
    }

    /// A `refresh_token` grant.
    pub async fn refresh(&self, client: &TestClient, refresh_token: &str) -> Resp {
        self.token(
            client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    pub async fn token_raw(&self, authorization: Option<&str>, form: &[(&str, &str)]) -> Resp {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(a) = authorization {
            headers.push(("authorization", a));
        }
        self.send(Method::POST, "/o/token/", &headers, body.as_bytes())
            .await
    }

    /// A password-grant token pair for alice with `scope`.
    pub async fn password_token(&self, scope: &str) -> Value {
        let r = self
            .token(
                &self.client,
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", PASSWORD),
                    ("scope", scope),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// A password-grant access token for alice with `scope`.
    pub async fn access_token(&self, scope: &str) -> String {
        field(&self.password_token(scope).await, "access_token")
    }

    /// A little of every kind of decision the metrics count: allowed, missing token, lacking
    /// scope, no route, a failed password grant.
    pub async fn mixed_traffic(&self, access: &str) {
        self.get("/api/users", Some(access)).await;
        self.get("/api/users", None).await;
        self.get("/api/groups", Some(access)).await;
        self.get("/nowhere", None).await;
        let bad = [
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "bad"),
        ];
        self.token(&self.client, &bad).await;
    }

    /// GETs `path` with `token`, which must be let through: the upstream's JSON echo.
    pub async fn get_ok(&self, path: &str, token: Option<&str>) -> Value {
        let r = self.get(path, token).await;
        assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.text());
        r.json()
    }

    pub async fn metrics(&self) -> String {
        let resp = self
            .http
            .get(format!("http://{}/metrics", self.admin).parse().unwrap())
            .await
            .unwrap();
        String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    /// Stops the gateway, draining connections; returns the data folder for inspection.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.dir
    }
}

pub async fn add_client(
    store: &SharedStore,
    config: &Config,
    grants: &[GrantType],
    scopes: &[&str],
) -> TestClient {
    let n = NEXT_USER.fetch_add(1, Ordering::Relaxed);
    let redirect_uris = if grants.contains(&GrantType::AuthorizationCode) {
        vec![REDIRECT_URI.to_owned()]
    } else {
        Vec::new()
    };
    let spec = manage::ClientSpec {
        name: format!("test client {n}"),
        grants: grants.to_vec(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        redirect_uris,
        ..manage::ClientSpec::default()
    };
    let new = manage::add_client(store, &config.oauth, spec)
        .await
        .unwrap();
    TestClient {
        id: new.client.client_id,
        secret: new.secret.expect("a confidential client"),
    }
}

/// Writes `request` to `addr` and reads until the server closes the connection (or 10 s).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Like [`raw_exchange`], from the loopback address `source` (any of 127.0.0.0/8), so that a
/// test can play clients at several addresses.
pub async fn raw_exchange_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    request: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP/1.1 request for a form body, closing the connection after the response.
pub fn raw_form_request(path: &str, authorization: Option<&str>, form: &[(&str, &str)]) -> Vec<u8> {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The status code of a raw HTTP/1.1 response.
pub fn raw_status(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// An upstream that answers every request with `response`, byte for byte, then `body_repeat`
/// copies of `chunk` (for large bodies), and closes the connection. It reads the request
/// head first.
pub async fn scripted_upstream(
    response: Vec<u8>,
    chunk: Vec<u8>,
    body_repeat: usize,
) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (response, chunk) = (Arc::new(response), Arc::new(chunk));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (response, chunk) = (Arc::clone(&response), Arc::clone(&chunk));
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if s.write_all(&response).await.is_err() {
                    return;
                }
                for _ in 0..body_repeat {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// True once the peer closes `stream` (reading and discarding what it sends), false if it is
/// still open after `limit`.
pub async fn closed_within(stream: &mut tokio::net::TcpStream, limit: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A plain HTTP/1.1 client.
pub fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One client connection to the gateway, for requests that must share it.
pub async fn one_connection(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// GETs `path` on the connection of `sender`, with `token` as a bearer token if given.
pub async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    token: Option<&str>,
) -> Resp {
    let mut req = Request::get(path).header("host", "gateway.test");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    fetch_on(sender, req.body(Full::new(Bytes::new())).unwrap()).await
}

/// Sends `req` on the connection of `sender` and reads the whole response.
pub async fn fetch_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Resp {
    sender.ready().await.expect("the connection stays open");
    read_whole(sender.send_request(req).await.expect("the server answers")).await
}

/// Sends `req` and reads the whole response.
pub async fn fetch(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Resp {
    read_whole(client.request(req).await.expect("the server answers")).await
}

async fn read_whole(resp: http::Response<hyper::body::Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Polls `check` every 20 ms until it gives `Some`, for at most 10 s: for what the gateway does
/// in the background (a revocation log followed, a certificate reloaded), whose end no
/// request can observe directly. Panics with `what` if it never happens.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `text` with `from` replaced by `to`; `from` must be there (a test that edits a config must
/// fail when the edit does not apply, not test the unedited file).
pub fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the text to edit");
    text.replace(from, to)
}

/// A string field of a JSON response, which must be there.
pub fn field(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .to_owned()
}

pub fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// For a proxied request: the headers the sample API received.
    pub fn upstream_saw(&self, header: &str) -> Option<String> {
        self.json()["headers"][header].as_str().map(str::to_owned)
    }
}

/// Looks for `needle` anywhere in the files of `dir` (database, WAL, logs).
pub fn dir_contains(dir: &Path, needle: &str) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                return true;
            }
        }
    }
    false
}

/// A client that keeps cookies, for the pages under `/o/` (a browser without the browser).
pub struct CookieClient {
    pub base: String,
    pub jar: std::collections::BTreeMap<String, String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl CookieClient {
    pub fn new(h: &Harness) -> CookieClient {
        CookieClient::at(&format!("http://{}", h.local_addr()))
    }

    /// A client of the gateway at `base` (`http://host:port`).
    pub fn at(base: &str) -> CookieClient {
        CookieClient {
            base: base.to_owned(),
            jar: Default::default(),
            http: http_client(),
        }
    }

    fn remember(&mut self, resp: &Resp) {
        for v in resp.headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attrs.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    async fn send(&mut self, method: Method, path: &str, body: Option<String>) -> Resp {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = Request::builder().method(method).uri(url);
        if !self.jar.is_empty() {
            let cookie: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", cookie.join("; "));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                b
            }
            None => String::new(),
        };
        let resp = fetch(&self.http, req.body(Full::new(Bytes::from(body))).unwrap()).await;
        self.remember(&resp);
        resp
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(Method::POST, path, Some(body)).await
    }

    /// Signs in as `user` through the sign-in page; returns where it sent the browser.
    pub async fn sign_in(&mut self, user: &str, password: &str, next: &str) -> Resp {
        let page = self
            .get(&format!(
                "/o/login/?next={}",
                form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            ))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let csrf = hidden(&page.text(), "csrf").expect("a CSRF field");
        let next = hidden(&page.text(), "next").unwrap();
        self.post(
            "/o/login/",
            &[
                ("csrf", &csrf),
                ("next", &next),
                ("username", user),
                ("password", password),
            ],
        )
        .await
    }
}

/// The value of hidden input `name` in a page, unescaped.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(unescape(&html[start..end]))
}

/// The value of the input with id `id`, unescaped.
pub fn input_value(html: &str, id: &str) -> Option<String> {
    let start = html.find(&format!("id=\"{id}\""))?;
    let tag_end = html[start..].find('>')? + start;
    let tag = &html[start..tag_end];
    let v = tag.find("value=\"")? + "value=\"".len();
    let v_end = tag[v..].find('"')? + v;
    Some(unescape(&tag[v..v_end]))
}

/// The text of the `<code>` element with id `id`, unescaped.
pub fn code_text(html: &str, id: &str) -> Option<String> {
    let marker = format!("<code id=\"{id}\">");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('<')? + start;
    Some(unescape(&html[start..end]))
}

/// Every hidden input of the form posting to `action`, unescaped, in order.
pub fn hidden_fields(html: &str, action: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let marker = format!("action=\"{action}\"");
    let Some(start) = html.find(&marker) else {
        return out;
    };
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    let mut rest = &html[start..end];
    while let Some(i) = rest.find("<input type=\"hidden\" name=\"") {
        rest = &rest[i + "<input type=\"hidden\" name=\"".len()..];
        let name_end = rest.find('"').unwrap();
        let name = rest[..name_end].to_owned();
        let v = rest.find("value=\"").unwrap() + "value=\"".len();
        let v_end = rest[v..].find('"').unwrap() + v;
        out.push((name, unescape(&rest[v..v_end])));
    }
    out
}

/// HTML entities decoded: the named ones askama writes and numeric ones.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A PKCE pair: a verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let verifier = portcullis::crypto::generate_secret("verifier-");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The PostgreSQL server for the PostgreSQL tests (`PORTCULLIS_TEST_DATABASE_URL`), or `None`
/// after saying that they skip; under CI (`CI` set) a missing server is a failure, so that
/// these tests never skip silently there.
pub fn postgres_server() -> Option<String> {
    match std::env::var("PORTCULLIS_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the PostgreSQL tests: set PORTCULLIS_TEST_DATABASE_URL (.ci/run does)"
            );
            notice(
                "skipped: the PostgreSQL tests need PORTCULLIS_TEST_DATABASE_URL \
                 (for example postgres://postgres@127.0.0.1:5432/test)",
            );
            None
        }
    }
}

/// Creates an empty database on `server` for one test and returns its URL. Names start with
/// `portcullis_test_` (`.ci/run` drops those of earlier runs). Runs on a thread of its own:
/// the synchronous client must not run on a test's runtime.
pub fn fresh_postgres_database(server: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "portcullis_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    );
    let admin_url = server.to_owned();
    let create = name.clone();
    std::thread::spawn(move || {
        let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls)
            .expect("connect to the PostgreSQL test server");
        admin
            .batch_execute(&format!("CREATE DATABASE {create}"))
            .expect("create a test database");
    })
    .join()
    .unwrap();
    // The same URL (user, password, host, options) with the new database's name.
    let (base, query) = server.split_once('?').unwrap_or((server, ""));
    let authority = base
        .strip_prefix("postgres://")
        .or_else(|| base.strip_prefix("postgresql://"))
        .expect("a postgres:// URL");
    let authority = authority.split_once('/').map_or(authority, |(a, _)| a);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("postgres://{authority}/{name}{query}")
}

/// Says why a test skips (or retries) where `cargo test` shows it: straight to standard error, which the
/// test harness does not capture (it captures only the print macros).
pub fn notice(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{message}");
}
