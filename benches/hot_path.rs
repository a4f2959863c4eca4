//! Microbenchmarks of what every request pays: path canonicalization and route matching on a
//! 50-route table, the guard's decision on a cache hit and on a connection's remembered token,
//! token generation and digest, the scope check, the token endpoint's form and Basic parsing,
//! its rate limits' check of an attempt they let through, and a browser's request headers
//! cleared for the upstream.
//!
//! `cargo bench --bench hot_path`; figures and how to read them: benches/README.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use portcullis::clock::{Clock, SystemClock};
use portcullis::config::{CacheConfig, Config};
use portcullis::crypto::{ACCESS_TOKEN_PREFIX, Digest, generate_secret};
use portcullis::guard::{bearer_token, check_scopes};
use portcullis::metrics::Metrics;
use portcullis::oauth::form::{Form, parse_basic};
use portcullis::oauth::throttle::{Key, Throttle};
use portcullis::proxy::strip_request_headers;
use portcullis::routes::{RouteTable, canonicalize};
use portcullis::scope::ScopeSet;
use portcullis::store::cache::{LastToken, TokenCache};
use portcullis::store::sqlite::SqliteStore;
use portcullis::store::{AccessTokenRecord, ClientRecord, GrantType, SharedStore};

/// 50 routes the shape of a real API: versions, services, method splits, a public tree.
fn route_table() -> RouteTable {
    let mut routes = String::new();
    for i in 0..24 {
        routes.push_str(&format!(
            "  - {{ path: /api/v{}/service{i}, methods: [GET, HEAD], scopes: [read], upstream: legacy }}\n",
            1 + i % 2
        ));
        routes.push_str(&format!(
            "  - {{ path: /api/v{}/service{i}, methods: [POST, PUT, PATCH, DELETE], scopes: [write], upstream: legacy }}\n",
            1 + i % 2
        ));
    }
    routes.push_str("  - { path: /public, auth: none, upstream: legacy }\n");
    routes.push_str("  - { path: /api/v1/service3/admin, scopes: [admin], upstream: legacy }\n");
    let yaml = format!(
        "listen: 127.0.0.1:0\nstore: {{ sqlite: x.db }}\n\
         oauth: {{ scopes: {{ read: r, write: w, admin: a }} }}\n\
         upstreams: {{ legacy: {{ url: http://127.0.0.1:9 }} }}\nroutes:\n{routes}"
    );
    let config = Config::parse(&yaml, "bench.yaml".as_ref(), "/".as_ref()).expect("valid");
    assert_eq!(config.routes.len(), 50);
    config.routes
}

fn routing(c: &mut Criterion) {
    let table = route_table();
    let paths = [
        "/api/v2/service23/items/42",
        "/api/v1/service0",
        "/api/v1/service3/admin/users",
        "/public/index.html",
        "/api/v2/service11/orders/2024/11/27",
    ];
    c.bench_function(
        "route: canonicalize + match (50 routes, canonical path)",
        |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % paths.len();
                let path = canonicalize(black_box(paths[i])).unwrap();
                black_box(table.find(&Method::GET, &path).map(|r| &r.id));
            })
        },
    );
    c.bench_function(
        "route: canonicalize + match (50 routes, dot-segments and escapes)",
        |b| {
            b.iter(|| {
                let path =
                    canonicalize(black_box("/api/v2//service23/./items/%34%32/../42")).unwrap();
                black_box(table.find(&Method::GET, &path).map(|r| &r.id));
            })
        },
    );
    c.bench_function("route: no match (default deny)", |b| {
        b.iter(|| {
            let path = canonicalize(black_box("/internal/metrics")).unwrap();
            black_box(table.find(&Method::GET, &path).is_none());
        })
    });
}

fn guard(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = generate_secret(ACCESS_TOKEN_PREFIX);
    let cache = rt.block_on(async {
        let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("bench.db")).unwrap());
        let now = SystemClock.now();
        store
            .add_client(ClientRecord {
                client_id: "bench-client".into(),
                name: "bench".into(),
                secret_digest: Some(Digest::of("x")),
                grants: vec![GrantType::Password],
                scopes: portcullis::scope::ScopeSet::parse("read write").unwrap(),
                created_at: now,
                redirect_uris: Vec::new(),
                skip_consent: false,
                owner: None,
                imported_secret: None,
            })
            .await
            .unwrap();
        let digest = Digest::of(&token);
        store
            .insert_tokens(
                AccessTokenRecord {
                    meta: portcullis::store::TokenMeta {
                        digest,
                        client_id: "bench-client".into(),
                        username: None,
                        scopes: portcullis::scope::ScopeSet::parse("read write").unwrap(),
                        issued_at: now,
                        expires_at: now + 3600,
                        revoked_at: None,
                    },
                    refresh: None,
                    family: digest,
                },
                None,
            )
            .await
            .unwrap();
        let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
        let config = CacheConfig {
            max_entries: 1_000_000,
            ttl: None,
            revocation_poll: std::time::Duration::from_secs(1),
        };
        let cache = TokenCache::new(store, Arc::new(SystemClock), metrics, &config);
        assert!(
            cache.principal(digest).await.unwrap().is_some(),
            "warm the cache"
        );
        cache
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let required = ScopeSet::parse("read").unwrap();
    c.bench_function(
        "guard: bearer parse + digest + cache hit + scope check",
        |b| {
            b.to_async(&rt).iter(|| async {
                let token = bearer_token(black_box(&headers), false).unwrap();
                let principal = cache.principal(Digest::of(token)).await.unwrap().unwrap();
                black_box(check_scopes(&principal, &required).is_ok());
            })
        },
    );
    // A keep-alive connection presenting the token it presented last, as the request path
    // asks (at the call, without waiting: `principal_cached`).
    let last = LastToken::default();
    c.bench_function(
        "guard: bearer parse + the connection's last token + scope check",
        |b| {
            b.iter(|| {
                let token = bearer_token(black_box(&headers), false).unwrap();
                let principal = cache.principal_cached(token, &last).ok().unwrap().unwrap();
                black_box(check_scopes(&principal, &required).is_ok());
            })
        },
    );
}

fn tokens(c: &mut Criterion) {
    c.bench_function("token: generate (OS CSPRNG) + SHA-256 digest", |b| {
        b.iter(|| {
            let t = generate_secret(ACCESS_TOKEN_PREFIX);
            black_box(Digest::of(&t));
        })
    });
    let principal = portcullis::principal::Principal::new(
        portcullis::principal::Identity::new(
            "c".into(),
            Some("alice".into()),
            ScopeSet::parse("read write groups").unwrap(),
        ),
        0,
    );
    let required = ScopeSet::parse("write groups").unwrap();
    c.bench_function("scope: check two required of three held", |b| {
        b.iter(|| black_box(check_scopes(black_box(&principal), &required).is_ok()))
    });
}

fn token_endpoint_parsing(c: &mut Criterion) {
    let body = b"grant_type=password&username=alice%40example.com&password=correct+horse+battery+staple&scope=read+write";
    let basic = b"Basic Y2xpZW50LWlkLTEyMzQ1Njc4OTA6cGNjc19hYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODk=";
    c.bench_function("oauth: form body + Basic credentials", |b| {
        b.iter(|| {
            let form = Form::parse(black_box(body)).unwrap();
            black_box(form.get("grant_type"));
            black_box(parse_basic(black_box(basic)).unwrap());
        })
    });
    // A hostile 16 KB body of ~2,700 distinct empty keys: refused at the parameter bound, in
    // time linear in what was read (it was quadratic before the bound).
    let mut hostile = String::new();
    let mut i = 0;
    while hostile.len() < 16 * 1024 - 8 {
        hostile.push_str(&format!("k{i}=&"));
        i += 1;
    }
    c.bench_function(
        "oauth: hostile 16 KB form of distinct keys (refused)",
        |b| b.iter(|| black_box(Form::parse(black_box(hostile.as_bytes())).is_err())),
    );
}

/// Every token request takes from its address's and its client's budgets before anything
/// else; an attempt within them should cost next to nothing. (A fresh rate-limiter clock per
/// check, which runs CPUID, a trap to the hypervisor on a virtual machine, showed only end to
/// end, in `benches/load/issuance.sh`: this profile's code generation sinks that clock into
/// the refusal path, where the release build's did not.)
fn throttle(c: &mut Criterion) {
    let yaml = "listen: 127.0.0.1:0\nstore: { sqlite: x.db }\n\
                oauth: { scopes: { read: r }, rate_limits: { per_client_per_minute: 100000000, per_user_per_minute: 100000000, per_address_per_minute: 100000000 } }\n\
                upstreams: { legacy: { url: http://127.0.0.1:9 } }\nroutes: []\n";
    let config = Config::parse(yaml, "bench.yaml".as_ref(), "/".as_ref()).expect("valid");
    let throttle = Throttle::new(config.oauth.rate_limits.clone());
    let keys = [Key::Client(Arc::from("client-id-1234567890"))];
    let address = std::net::IpAddr::from([192, 0, 2, 7]);
    c.bench_function("oauth: rate limits let an attempt through", |b| {
        b.iter(|| {
            throttle.check_address(black_box(address)).unwrap();
            throttle
                .check(black_box(&keys), black_box(address))
                .unwrap();
        })
    });
}

/// What every proxied request's fields cost to clear for the upstream (hop-by-hop, spoofable
/// and identity fields out), for the fields a browser sends with an API call: each is
/// checked against the spoofable names and the identity headers.
fn header_rewriting(c: &mut Criterion) {
    let mut sent = HeaderMap::new();
    for (name, value) in [
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-GB,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        (
            "authorization",
            "Bearer pcat_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
        ),
        ("origin", "https://app.example.com"),
        ("referer", "https://app.example.com/orders"),
        ("cookie", "theme=dark; lang=en"),
        ("x-requested-with", "XMLHttpRequest"),
        ("sec-fetch-mode", "cors"),
        ("connection", "keep-alive"),
    ] {
        sent.append(name, HeaderValue::from_static(value));
    }
    let identity = Config::parse(
        "listen: 127.0.0.1:0\nstore: { sqlite: x.db }\noauth: { scopes: { read: r } }\n\
         upstreams: { a: { url: http://127.0.0.1:9 } }\nroutes: []\n",
        "bench.yaml".as_ref(),
        "/".as_ref(),
    )
    .expect("valid")
    .identity_headers;
    c.bench_function(
        "headers: a browser's 12 request fields cleared for the upstream",
        |b| {
            b.iter_batched_ref(
                || sent.clone(),
                |headers| strip_request_headers(black_box(headers), &identity),
                criterion::BatchSize::SmallInput,
            )
        },
    );
}

criterion_group!(
    benches,
    routing,
    guard,
    tokens,
    token_endpoint_parsing,
    throttle,
    header_rewriting
);
criterion_main!(benches);
