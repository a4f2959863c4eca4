//! The hardened request path, each class of attack sent as a hostile request over a real
//! socket: path confusion, identity spoofing, smuggling, unbounded input, brute force,
//! credentials outside the Authorization header, and cache confusion.

mod common;

use std::time::Duration;

use common::{Harness, Options, PASSWORD, basic};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn status_line(raw: &str) -> &str {
    raw.lines().next().unwrap_or("")
}

fn responses(raw: &str) -> usize {
    raw.matches("HTTP/1.1 ").count()
}

#[tokio::test]
async fn ambiguous_request_targets_are_refused() {
    let h = Harness::start().await;
    let cases: &[(&str, &str)] = &[
        ("GET /public/%2e%2e/%2e%2e/x HTTP/1.1", "400"),
        ("GET /public/a%2fb HTTP/1.1", "400"),
        ("GET /public/a%5Cb HTTP/1.1", "400"),
        ("GET /public\\a HTTP/1.1", "400"),
        ("GET /public;jsessionid=1 HTTP/1.1", "400"),
        ("GET /public/a%00 HTTP/1.1", "400"),
        ("GET /public/a%0d%0aX-Injected:%201 HTTP/1.1", "400"),
        ("GET http://example.com/public/x HTTP/1.1", "400"),
        ("CONNECT example.com:443 HTTP/1.1", "400"),
        ("OPTIONS * HTTP/1.1", "400"),
        ("GET /public/x\x01 HTTP/1.1", "400"),
        ("GET /Public/x HTTP/1.1", "404"),
        ("GET /public/x HTTP/1.1", "200"),
    ];
    for (line, want) in cases {
        let raw = h
            .raw(format!("{line}\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes())
            .await;
        assert!(
            status_line(&raw).contains(want),
            "{line:?} -> {:?}",
            status_line(&raw)
        );
    }
    // A raw `#` is cut off by the HTTP parser with what follows: neither routing nor the
    // upstream ever sees the fragment, so the matched and the forwarded path stay one.
    let raw = h
        .raw(b"GET /public/a#/../../admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    assert!(raw.contains("\"path\":\"/public/a\""), "{raw}");
    let m = h.metrics().await;
    assert!(m.contains(r#"reason="bad_path""#), "{m}");
    h.shutdown().await;
}

#[tokio::test]
async fn routes_can_opt_into_legacy_path_forms() {
    let h = Harness::with(Options {
        extra_routes:
            "  - { path: /files, auth: none, upstream: legacy, allow_encoded_slashes: true }
  - { path: /jsp, auth: none, upstream: legacy, allow_semicolons: true }
  - { path: /Legacy/API, auth: none, upstream: legacy, case_insensitive: true }"
                .into(),
        ..Options::default()
    })
    .await;
    let cases: &[(&str, StatusCode, Option<&str>)] = &[
        ("/files/a%2fb/c", StatusCode::OK, Some("/files/a%2Fb/c")),
        ("/files/a%5cb", StatusCode::OK, Some("/files/a%5Cb")),
        // Dot-segments are resolved before routing: this points at /y, which no route serves.
        ("/files/x/../%2e%2e/y", StatusCode::NOT_FOUND, None),
        (
            "/jsp;jsessionid=1/view",
            StatusCode::OK,
            Some("/jsp;jsessionid=1/view"),
        ),
        (
            "/legacy/api/users",
            StatusCode::OK,
            Some("/legacy/api/users"),
        ),
        ("/LEGACY/Api", StatusCode::OK, Some("/LEGACY/Api")),
        // The opt-ins are the route's alone.
        ("/public/a%2fb", StatusCode::BAD_REQUEST, None),
        ("/jsp/a%2fb", StatusCode::BAD_REQUEST, None),
        ("/files;x", StatusCode::BAD_REQUEST, None),
        ("/files/%00", StatusCode::BAD_REQUEST, None),
    ];
    for (path, status, seen) in cases {
        let r = h.get(path, None).await;
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        if let Some(seen) = seen {
            assert_eq!(r.json()["path"], *seen, "{path}");
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn only_the_real_method_and_target_decide() {
    let h = Harness::start().await;
    let read = h.access_token("read").await;
    // A read token cannot turn a GET into a write with override headers, nor reach another
    // path through X-Original-URL and friends: the upstream never sees those headers.
    let r = h
        .send(
            Method::GET,
            "/api/users/1",
            &[
                ("authorization", &format!("Bearer {read}")),
                ("x-http-method-override", "DELETE"),
                ("X_HTTP_Method", "DELETE"),
                ("x-original-url", "/api/admin"),
                ("x-rewrite-url", "/api/admin"),
                ("x-forwarded-uri", "/api/admin"),
                ("x-forwarded-prefix", "/admin"),
                ("x-real-ip", "10.0.0.1"),
                ("x-forwarded-user", "root"),
                ("forwarded", "for=10.0.0.1;host=evil"),
                ("x-forwarded-host", "evil"),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = r.json()["headers"].clone();
    for gone in [
        "x-http-method-override",
        "x_http_method",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-uri",
        "x-forwarded-prefix",
        "x-real-ip",
        "x-forwarded-user",
        "forwarded",
    ] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the upstream: {seen}"
        );
    }
    assert_eq!(seen["x-forwarded-host"], h.addr.to_string());
    assert_eq!(r.json()["method"], "GET");
    h.shutdown().await;
}

#[tokio::test]
async fn smuggling_attempts_are_refused_or_defused() {
    let h = Harness::start().await;
    // CL + TE: read as chunked (RFC 9112 §6.3), Content-Length dropped, the connection closed
    // after the response: the "smuggled" second request is never read, let alone forwarded.
    let raw = h
        .raw(
            b"POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n\
0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await;
    assert_eq!(responses(&raw), 1, "{raw}");
    assert!(raw.contains("\"path\":\"/public/a\""), "{raw}");
    assert!(!raw.contains("smuggled"), "{raw}");

    let refused: &[&[u8]] = &[
        // Transfer-Encoding whose last coding is not chunked.
        b"POST /public/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"POST /public/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        // Conflicting Content-Length values.
        b"POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd",
        b"POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        // obs-fold.
        b"GET /public/a HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n",
        // Whitespace before the colon.
        b"GET /public/a HTTP/1.1\r\nHost: a\r\nContent-Length : 0\r\n\r\n",
        // Transfer-Encoding in HTTP/1.0.
        b"POST /public/a HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for req in refused {
        let raw = h.raw(req).await;
        assert!(
            status_line(&raw).contains("400"),
            "{:?} -> {raw:?}",
            String::from_utf8_lossy(req)
        );
        assert_eq!(responses(&raw), 1, "and the connection is closed");
    }
    let m = h.metrics().await;
    assert!(!m.contains("smuggled"));
    h.shutdown().await;
}

#[tokio::test]
async fn header_and_body_limits() {
    let h = Harness::with(Options {
        extra_routes: "  - { path: /small, auth: none, upstream: legacy, max_body_bytes: 1024 }"
            .into(),
        extra: "limits: { max_header_bytes: 16384, max_headers: 50, max_body_bytes: 4096 }".into(),
        ..Options::default()
    })
    .await;
    let big = "x".repeat(20_000);
    let raw = h
        .raw(format!("GET /public/a HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    assert!(status_line(&raw).contains("431"), "{}", status_line(&raw));
    let many: String = (0..60).map(|i| format!("X-H{i}: v\r\n")).collect();
    let raw = h
        .raw(format!("GET /public/a HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes())
        .await;
    assert!(status_line(&raw).contains("431"), "{}", status_line(&raw));

    // Declared too large: refused before a byte is forwarded.
    let r = h
        .send(Method::POST, "/small/x", &[], &vec![b'a'; 2000])
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = h
        .send(Method::POST, "/public/x", &[], &vec![b'a'; 5000])
        .await;
    assert_eq!(
        r.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "the global default applies elsewhere"
    );
    let r = h
        .send(Method::POST, "/small/x", &[], &vec![b'a'; 1000])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Streamed (chunked) past the limit: cut off with 413.
    let chunk = "a".repeat(600);
    let raw = h
        .raw(
            format!(
                "POST /small/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert!(status_line(&raw).contains("413"), "{raw}");
    h.shutdown().await;
}

#[tokio::test]
async fn slow_idle_and_stuck_clients_are_cut_off() {
    let h = Harness::with(Options {
        extra: "limits: { header_read_timeout_seconds: 1, idle_timeout_seconds: 1 }".into(),
        ..Options::default()
    })
    .await;
    // Slow headers (slowloris).
    let mut slow = TcpStream::connect(h.local_addr()).await.unwrap();
    slow.write_all(b"GET /public/a HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    assert!(
        common::closed_within(&mut slow, Duration::from_secs(10)).await,
        "slow client still connected"
    );
    // Idle keep-alive connection after a request.
    let mut idle = TcpStream::connect(h.local_addr()).await.unwrap();
    idle.write_all(b"GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(
        common::closed_within(&mut idle, Duration::from_secs(10)).await,
        "idle connection still open"
    );
    // A silent connection that never sends anything.
    let mut silent = TcpStream::connect(h.local_addr()).await.unwrap();
    assert!(common::closed_within(&mut silent, Duration::from_secs(10)).await);
    h.shutdown().await;
}

#[tokio::test]
async fn request_timeout_is_408() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    // The harness gives upstreams 500 ms; this one gets longer than the request may take.
    let dir = tempfile::tempdir().unwrap();
    let yaml = common::replaced(
        &common::config_yaml(
            &format!("http://{addr}"),
            "",
            "limits: { request_timeout_seconds: 1 }",
        ),
        "response_timeout_ms: 500",
        "response_timeout_ms: 30000",
    );
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = portcullis::config::Config::load(&path).unwrap();
    let store = portcullis::app::open_store(&config).await.unwrap();
    let running = portcullis::app::start(
        config,
        store,
        std::sync::Arc::new(portcullis::clock::SystemClock),
    )
    .await
    .unwrap();
    let raw =
        common::raw_exchange(running.addr, b"GET /public/x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(status_line(&raw).contains("408"), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("connection: close"),
        "{raw}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn connections_are_capped() {
    let h = Harness::with(Options {
        extra: "limits: { max_connections: 2 }".into(),
        ..Options::default()
    })
    .await;
    let mut a = TcpStream::connect(h.local_addr()).await.unwrap();
    let _b = TcpStream::connect(h.local_addr()).await.unwrap();
    a.write_all(b"GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    a.read_exact(&mut buf).await.unwrap();
    // A third connection waits in the kernel's backlog: no answer while two are open.
    let mut c = TcpStream::connect(h.local_addr()).await.unwrap();
    c.write_all(b"GET /public/c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(500), c.read_exact(&mut first)).await;
    assert!(early.is_err(), "served beyond max_connections");
    drop(a);
    let later = tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut first)).await;
    assert!(later.is_ok(), "not served once a connection closed");
    assert_eq!(&first, b"HTTP/1.1 200");
    h.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_rate_limits_and_backoff() {
    let h = Harness::with(Options {
        extra_oauth: "  rate_limits: { per_user_per_minute: 3, failures_before_backoff: 2, max_backoff_seconds: 60 }".into(),
        ..Options::default()
    })
    .await;
    h.add_user("bob").await;
    let pw = |user: &'static str, pass: &'static str| {
        vec![
            ("grant_type", "password"),
            ("username", user),
            ("password", pass),
        ]
    };
    // Per-user budget: three attempts a minute, whatever their outcome.
    for _ in 0..3 {
        assert_eq!(
            h.token(&h.client, &pw("alice", PASSWORD)).await.status,
            StatusCode::OK
        );
    }
    let limited = h.token(&h.client, &pw("alice", PASSWORD)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(limited.json()["error"], "too_many_requests");

    // Back-off: after two failures for bob, even the right password waits.
    for _ in 0..2 {
        let r = h.token(&h.client, &pw("bob", "wrong")).await;
        assert_eq!(r.json()["error"], "invalid_grant");
    }
    let held = h.token(&h.client, &pw("bob", PASSWORD)).await;
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(held.header("retry-after").is_some());

    // Bob's failures held bob alone: alice (budget permitting) and the client are untouched.
    // Wrong client secrets back off that client.
    let other = h
        .new_client(&portcullis::store::GrantType::ALL, &["read"])
        .await;
    let wrong = common::TestClient {
        id: other.id.clone(),
        secret: "pccs_nope".into(),
    };
    for _ in 0..2 {
        assert_eq!(
            h.token(&wrong, &[("grant_type", "client_credentials")])
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = h
        .token(&other, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);

    let m = h.metrics().await;
    assert!(
        m.contains(r#"portcullis_token_throttled_total{key="user",cause="rate"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"cause="backoff""#), "{m}");
    h.shutdown().await;
}

#[tokio::test]
async fn per_address_limit() {
    let h = Harness::with(Options {
        extra_oauth: "  rate_limits: { per_address_per_minute: 2 }".into(),
        ..Options::default()
    })
    .await;
    let cc = [("grant_type", "client_credentials")];
    assert_eq!(h.token(&h.client, &cc).await.status, StatusCode::OK);
    assert_eq!(h.token(&h.client, &cc).await.status, StatusCode::OK);
    let other = h
        .new_client(&portcullis::store::GrantType::ALL, &["read"])
        .await;
    let r = h.token(&other, &cc).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the address is out of budget, whatever the client"
    );
    let m = h.metrics().await;
    assert!(
        m.contains(r#"portcullis_token_throttled_total{key="address",cause="rate"} 1"#),
        "{m}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn plain_http_token_endpoint_on_a_public_address_needs_an_opt_in() {
    let h = Harness::with(Options {
        listen: Some("0.0.0.0:0".into()),
        ..Options::default()
    })
    .await;
    let r = h
        .token(&h.client, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_request");
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("TLS")
    );
    h.shutdown().await;

    let h = Harness::with(Options {
        listen: Some("0.0.0.0:0".into()),
        extra_oauth: "  allow_plain_http: true".into(),
        ..Options::default()
    })
    .await;
    let r = h
        .token(&h.client, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test]
async fn authenticated_responses_vary_on_authorization() {
    let h = Harness::start().await;
    let access = h.access_token("read").await;
    let r = h.get("/api/users/1", Some(&access)).await;
    assert_eq!(r.header("vary"), Some("Authorization"));
    let public = h.get("/public/x", None).await;
    assert_eq!(public.header("vary"), None);
    h.shutdown().await;
}

#[tokio::test]
async fn basic_credentials_in_errors_are_never_echoed() {
    let h = Harness::start().await;
    let secret = "pccs_this-secret-must-not-echo";
    let r = h
        .token_raw(
            Some(&basic(&h.client.id, secret)),
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "pw-must-not-echo"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.text().contains(secret) && !r.text().contains("pw-must-not-echo"));
    let m = h.metrics().await;
    assert!(!m.contains(secret) && !m.contains("pw-must-not-echo") && !m.contains("alice"));
    h.shutdown().await;
}

/// Client ids and usernames are not secret (RFC 6749 §2.2): failures a stranger causes back
/// off the stranger's address, never the real client or user elsewhere. Failures from many
/// addresses trip an identity-wide ceiling, which spares the addresses the identity has
/// succeeded from.
#[tokio::test]
async fn strangers_cannot_lock_out_a_client_or_a_user() {
    use std::net::IpAddr;
    let h = Harness::with(Options {
        extra_oauth: "  rate_limits: { failures_before_backoff: 3, identity_failures_before_backoff: 6, max_backoff_seconds: 300 }".into(),
        ..Options::default()
    })
    .await;
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let (owner, attacker, helper, newcomer) = (
        ip("127.0.0.1"),
        ip("127.0.0.66"),
        ip("127.0.0.67"),
        ip("127.0.0.9"),
    );
    let cc = [("grant_type", "client_credentials")];
    let right = basic(&h.client.id, &h.client.secret);
    let wrong = basic(&h.client.id, "pccs_guess");
    let from = |source: IpAddr, auth: String, form: Vec<(&'static str, &'static str)>| {
        let addr = h.local_addr();
        async move {
            let raw = common::raw_exchange_from(
                source,
                addr,
                &common::raw_form_request("/o/token/", Some(&auth), &form),
            )
            .await;
            common::raw_status(&raw)
        }
    };
    assert_eq!(from(owner, right.clone(), cc.to_vec()).await, 200);
    for _ in 0..3 {
        assert_eq!(from(attacker, wrong.clone(), cc.to_vec()).await, 401);
    }
    assert_eq!(
        from(attacker, right.clone(), cc.to_vec()).await,
        429,
        "the attacker's address is backed off, even with the right secret"
    );
    assert_eq!(
        from(owner, right.clone(), cc.to_vec()).await,
        200,
        "the owner is not locked out"
    );
    assert_eq!(from(newcomer, right.clone(), cc.to_vec()).await, 200);

    // Wrong passwords for alice, from another address through a client of the attacker's
    // own: alice keeps working from her address.
    let guesser = ip("127.0.0.77");
    let own = h
        .new_client(&portcullis::store::GrantType::ALL, &["read"])
        .await;
    let own = basic(&own.id, &own.secret);
    let password = |pw: &'static str| {
        vec![
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", pw),
        ]
    };
    for _ in 0..3 {
        assert_eq!(from(guesser, own.clone(), password("guess")).await, 400);
    }
    assert_eq!(from(guesser, own.clone(), password(PASSWORD)).await, 429);
    assert_eq!(from(owner, right.clone(), password(PASSWORD)).await, 200);

    // A second attacking address takes the client's failures to the identity-wide ceiling
    // (six): a new address waits, the owner's known address does not.
    for _ in 0..3 {
        assert_eq!(from(helper, wrong.clone(), cc.to_vec()).await, 401);
    }
    assert_eq!(
        from(newcomer, right.clone(), cc.to_vec()).await,
        200,
        "known since its success"
    );
    let stranger = ip("127.0.0.10");
    assert_eq!(from(stranger, right.clone(), cc.to_vec()).await, 429);
    assert_eq!(from(owner, right.clone(), cc.to_vec()).await, 200);
    let m = h.metrics().await;
    assert!(
        m.contains(r#"portcullis_token_throttled_total{key="client",cause="identity_backoff"} 1"#),
        "{m}"
    );
    h.shutdown().await;
}
