//! The guard and the proxy over real HTTP: RFC 6750 challenges, routing, header hygiene,
//! streaming, HTTP/2, upstream failures, metrics and health endpoints.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Harness, Options};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn the_core_flow() {
    let h = Harness::start().await;
    let token = h.password_token("read").await;
    let access = token["access_token"].as_str().unwrap();

    let r = h.get("/api/users/1?fields=name&x=%20", Some(access)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["path"], "/api/users/1");
    assert_eq!(seen["query"], "fields=name&x=%20", "query string kept");
    assert_eq!(r.upstream_saw("x-auth-user").as_deref(), Some("alice"));
    assert_eq!(
        r.upstream_saw("x-auth-client").as_deref(),
        Some(h.client.id.as_str())
    );
    assert_eq!(r.upstream_saw("x-auth-scopes").as_deref(), Some("read"));
    assert_eq!(
        r.upstream_saw("authorization"),
        None,
        "credentials are not forwarded"
    );
    assert_eq!(
        r.upstream_saw("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(r.upstream_saw("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(r.upstream_saw("x-forwarded-host"), Some(h.addr.to_string()));
    assert_eq!(
        r.upstream_saw("host"),
        Some(h.upstream.addr.to_string()),
        "the upstream's own Host, not the client's"
    );

    let forbidden = h
        .send(
            Method::POST,
            "/api/users",
            &[("authorization", &format!("Bearer {access}"))],
            b"{}",
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(
        forbidden.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\", error=\"insufficient_scope\", scope=\"write\"")
    );
    assert_eq!(forbidden.json()["error"], "insufficient_scope");
    h.shutdown().await;
}

#[tokio::test]
async fn rfc6750_challenges() {
    let h = Harness::start().await;
    let missing = h.get("/api/users", None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\"")
    );

    let basic = h
        .send(
            Method::GET,
            "/api/users",
            &[("authorization", "Basic YTpi")],
            b"",
        )
        .await;
    assert_eq!(
        basic.header("www-authenticate"),
        Some("Bearer realm=\"portcullis\"")
    );

    let unknown = format!("pcat_{}", "A".repeat(43));
    for bad in ["garbage!", "short", unknown.as_str(), ""] {
        let r = h
            .send(
                Method::GET,
                "/api/users",
                &[("authorization", &format!("Bearer {bad}"))],
                b"",
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        let challenge = r.header("www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"portcullis\", error=\"invalid_token\""),
            "{challenge}"
        );
        assert_eq!(r.json()["error"], "invalid_token");
    }

    // RFC 6750 §2.1 only: a token in the query string or a form body is refused, not
    // silently accepted or forwarded, on every proxied route.
    let access = h.access_token("read write").await;
    for path in [
        format!("/api/users?access_token={access}"),
        format!("/public/x?a=1&access%5Ftoken={access}"),
    ] {
        let r = h.get(&path, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(r.json()["error"], "invalid_request");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("error=\"invalid_request\"")
        );
        assert!(!r.text().contains(&access));
    }
    let form = h
        .send(
            Method::POST,
            "/api/users",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &format!("Bearer {access}")),
            ],
            format!("name=x&access_token={access}").as_bytes(),
        )
        .await;
    assert_eq!(form.status, StatusCode::BAD_REQUEST);
    let plain_form = h
        .send(
            Method::POST,
            "/api/users",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &format!("Bearer {access}")),
            ],
            b"name=x&token=y",
        )
        .await;
    assert_eq!(plain_form.status, StatusCode::OK);
    assert_eq!(
        plain_form.json()["body_bytes"],
        14,
        "a form body is forwarded whole"
    );

    // Expired, after the token was cached by a successful request: the cache hit is checked
    // against the clock too.
    assert_eq!(
        h.get("/api/users", Some(&access)).await.status,
        StatusCode::OK
    );
    h.clock.advance(1201);
    let expired = h.get("/api/users", Some(&access)).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert!(
        expired
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );

    // Route scopes: groups needs the groups scope.
    h.clock.advance(-1201);
    let r = h.get("/api/groups", Some(&access)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .ends_with("scope=\"groups\"")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn default_deny_and_longest_prefix() {
    let h = Harness::start().await;
    let rw = h.access_token("read write").await;
    let auth = format!("Bearer {rw}");
    let cases: &[(Method, &str, StatusCode)] = &[
        (Method::GET, "/apix", StatusCode::NOT_FOUND),
        (Method::GET, "/api", StatusCode::NOT_FOUND),
        (Method::GET, "/", StatusCode::NOT_FOUND),
        (Method::GET, "/api/usersx", StatusCode::NOT_FOUND),
        (Method::GET, "/api/users", StatusCode::OK),
        (Method::HEAD, "/api/users/7", StatusCode::OK),
        (Method::POST, "/api/users", StatusCode::OK),
        (Method::DELETE, "/api/x", StatusCode::OK),
        (Method::POST, "/api/groups", StatusCode::FORBIDDEN),
        (Method::GET, "/o/nothing-here/", StatusCode::NOT_FOUND),
        (Method::GET, "/api/../admin", StatusCode::NOT_FOUND),
        (
            Method::GET,
            "/api/users/%2e%2e/%2e%2e/admin",
            StatusCode::NOT_FOUND,
        ),
        (Method::GET, "/api/users/%2fadmin", StatusCode::BAD_REQUEST),
        (Method::GET, "//api//users", StatusCode::OK),
    ];
    for (method, path, want) in cases {
        let r = h
            .send(method.clone(), path, &[("authorization", &auth)], b"")
            .await;
        assert_eq!(r.status, *want, "{method} {path}: {}", r.text());
        if *want == StatusCode::NOT_FOUND {
            assert_eq!(r.json()["error"], "not_found");
        }
    }
    let dotted = h
        .send(
            Method::GET,
            "/api/users/x/../1",
            &[("authorization", &auth)],
            b"",
        )
        .await;
    assert_eq!(
        dotted.json()["path"],
        "/api/users/1",
        "the canonical path is what is forwarded"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn public_routes_and_header_hygiene() {
    let h = Harness::start().await;
    let r = h
        .send(
            Method::GET,
            "/public/info",
            &[
                ("x-auth-user", "root"),
                ("X_Auth_User", "root"),
                ("x-auth-scopes", "write"),
                ("x-auth_client", "evil"),
                ("authorization", "Bearer whatever"),
                ("connection", "keep-alive, x-forwarded-for, x-keep-me-not"),
                ("x-keep-me-not", "1"),
                ("x-forwarded-for", "203.0.113.9"),
                ("te", "trailers"),
                ("x-custom", "kept"),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let headers = r.json()["headers"].clone();
    for gone in [
        "x-auth-user",
        "x_auth_user",
        "x-auth-scopes",
        "x-auth_client",
        "x-auth-client",
        "authorization",
        "x-keep-me-not",
        "te",
    ] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the upstream: {headers}"
        );
    }
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "a Connection-listed header was dropped before ours was set"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let h = Harness::start().await;
    let rw = h.access_token("write").await;
    let big = vec![b'x'; 3 * 1024 * 1024 + 17];
    let r = h
        .send(
            Method::PUT,
            "/api/blob",
            &[("authorization", &format!("Bearer {rw}"))],
            &big,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["body_bytes"], big.len());
    h.shutdown().await;
}

#[tokio::test]
async fn http2_clients_are_served() {
    let h = Harness::start().await;
    let access = h.access_token("read").await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::get(h.url("/api/users/2"))
        .header("authorization", format!("Bearer {access}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["headers"]["x-auth-user"], "alice");
    assert_eq!(
        body["headers"]["x-forwarded-host"],
        h.addr.to_string(),
        ":authority becomes X-Forwarded-Host"
    );
    assert_eq!(body["headers"]["host"], h.upstream.addr.to_string());
    // The pooled client sends the request's map: the credential must be out of it.
    assert!(
        body["headers"]["authorization"].is_null(),
        "credentials are not forwarded over the pooled client either: {body}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn upstream_down_is_502() {
    // Bind then drop a listener: nothing listens on that port now.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = with_upstream(format!("http://127.0.0.1:{port}"), "").await;
    let r = h.get("/public/x", None).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"], "bad_gateway");
    h.shutdown().await;
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    // An upstream that accepts and reads but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = silent.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    let h = with_upstream(format!("http://{addr}"), "").await;
    let r = tokio::time::timeout(Duration::from_secs(10), h.get("/public/slow", None))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["error"], "gateway_timeout");
    h.shutdown().await;
}

#[tokio::test]
async fn metrics_and_health() {
    let h = Harness::start().await;
    let access = h.access_token("read").await;
    h.get("/api/users", Some(&access)).await;
    h.mixed_traffic(&access).await;

    let m = h.metrics().await;
    for line in [
        r#"portcullis_auth_decisions_total{route="GET,HEAD /api/users",decision="allow",reason="token"} 2"#,
        r#"portcullis_auth_decisions_total{route="GET,HEAD /api/users",decision="deny",reason="missing_token"} 1"#,
        r#"portcullis_auth_decisions_total{route="/api/groups",decision="deny",reason="insufficient_scope"} 1"#,
        r#"portcullis_auth_decisions_total{route="none",decision="deny",reason="no_route"} 1"#,
        r#"portcullis_token_issued_total{grant_type="password",outcome="issued"} 1"#,
        r#"portcullis_token_issued_total{grant_type="password",outcome="invalid_grant"} 1"#,
        r#"portcullis_token_cache_misses_total 1"#,
        r#"portcullis_token_cache_hits_total 2"#,
        r#"portcullis_upstream_request_duration_seconds_count{upstream="legacy",status_class="2xx"} 2"#,
    ] {
        assert!(m.contains(line), "missing {line}\n{m}");
    }
    assert!(!m.contains(&access));

    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/nope", 404)] {
        let resp = h
            .http
            .get(format!("http://{}{path}", h.admin).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
    }
    // The admin endpoints are not on the proxy port.
    assert_eq!(h.get("/metrics", None).await.status, StatusCode::NOT_FOUND);
    h.shutdown().await;
}

/// Removing a user takes their tokens along: a refresh token issued to them stops working.
#[tokio::test]
async fn removing_a_user_ends_their_refresh_tokens() {
    let h = Harness::start().await;
    h.add_user("bob").await;
    let r = h
        .token(
            &h.client,
            &[
                ("grant_type", "password"),
                ("username", "bob"),
                ("password", common::PASSWORD),
            ],
        )
        .await;
    let refresh = common::field(&r.json(), "refresh_token");
    portcullis::manage::remove_user(&h.store, "bob")
        .await
        .unwrap();
    let again = h.refresh(&h.client, &refresh).await;
    assert_eq!(
        again.json()["error"],
        "invalid_grant",
        "tokens go with the user"
    );
    h.shutdown().await;
}

/// `cache.ttl_seconds` bounds how long a cached token is trusted: a token deleted behind the
/// gateway's back (no revocation, no log entry) keeps working from the cache, then stops
/// once its entry has lived the TTL.
#[tokio::test]
async fn a_token_deleted_behind_the_gateway_fails_after_the_cache_ttl() {
    let h = Harness::with(Options {
        extra: "cache: { ttl_seconds: 3, revocation_poll_ms: 3600000 }".into(),
        ..Options::default()
    })
    .await;
    let access = h.access_token("read").await;
    h.get_ok("/api/users/1", Some(&access)).await;
    assert_eq!(h.behind_its_back("DELETE FROM access_tokens"), 1);
    h.get_ok("/api/users/1", Some(&access)).await;
    common::eventually("the cached token outlives the TTL", || async {
        let status = h.get("/api/users/1", Some(&access)).await.status;
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    // An upstream that says when a request reached it, then answers after 300 ms (the
    // harness allows upstreams 500 ms).
    let slow = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = slow.local_addr().unwrap();
    let (arrived, mut reached) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = slow.accept().await {
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = arrived.send(());
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow",
                    )
                    .await;
            });
        }
    });
    let h = with_upstream(format!("http://{addr}"), "").await;
    let url = h.url("/public/slow");
    let in_flight = tokio::spawn(async move {
        let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
        common::fetch(&common::http_client(), req).await
    });
    reached
        .recv()
        .await
        .expect("the request reaches the upstream");
    // Shutdown is signalled while the request waits for the upstream; it finishes first.
    h.shutdown().await;
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "slow");
}

/// The stop reaches every connection at once: a connection that has sent nothing yet and a
/// kept-alive one between requests are both closed while a request on a third still waits
/// for its upstream, and that request's response, sent after, tells its client the
/// connection closes.
#[tokio::test]
async fn shutdown_closes_idle_connections_at_once_and_ends_busy_ones_after_their_response() {
    // An upstream that answers at once, but for `/busy`, which it reports and answers only
    // when told to.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    let (arrived, mut reached) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (answer, answer_now) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            let (arrived, mut answer_now) = (arrived.clone(), answer_now.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let body: &[u8] = if buf[..n].starts_with(b"GET /public/busy ") {
                        let _ = arrived.send(());
                        let _ = answer_now.wait_for(|now| *now).await;
                        b"busy"
                    } else {
                        b"fast"
                    };
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    if s.write_all(&[head.as_bytes(), body].concat())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let h = with_upstream(format!("http://{addr}"), "").await;
    let gateway = h.local_addr();

    let mut silent = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let mut kept = tokio::net::TcpStream::connect(gateway).await.unwrap();
    kept.write_all(b"GET /public/fast HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = Vec::new();
    while !first.ends_with(b"fast") {
        let mut buf = [0u8; 4096];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(n > 0, "the kept connection answers its first request");
        first.extend_from_slice(&buf[..n]);
    }
    let mut busy = tokio::net::TcpStream::connect(gateway).await.unwrap();
    busy.write_all(b"GET /public/busy HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    reached
        .recv()
        .await
        .expect("the request reaches the upstream");

    let stopping = tokio::spawn(h.shutdown());
    for (name, conn) in [("silent", &mut silent), ("kept", &mut kept)] {
        let mut rest = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
        assert!(
            matches!(end, Ok(Ok(0))),
            "the {name} connection is closed while the busy one still waits: {end:?}"
        );
    }

    answer.send(true).unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut response))
        .await
        .expect("the busy connection ends after its response")
        .unwrap();
    let response = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(response.contains("connection: close"), "{response}");
    assert!(response.ends_with("busy"), "{response}");
    drop(stopping.await.unwrap());
}

/// How the numbered upstream treats its connections.
#[derive(Clone, Copy, PartialEq)]
enum UpstreamMode {
    /// Keep-alive: answer every request.
    KeepAlive,
    /// Close each connection after its first response without announcing it (as an
    /// upstream's keep-alive timeout does); each close is reported.
    CloseAfterOne,
    /// Never answer on the first connection; answer on the others.
    FirstConnectionHangs,
    /// Never answer a request for a path that ends in `/slow`, on any connection.
    SlowPathHangs,
}

/// An upstream that answers every request with the number of the connection it came on
/// (`conn-N`), its connections treated as `mode` says.
async fn numbered_upstream(
    mode: UpstreamMode,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let hangs = match mode {
                        UpstreamMode::FirstConnectionHangs => n == 0,
                        UpstreamMode::SlowPathHangs => buf.starts_with(b"GET /public/slow "),
                        _ => false,
                    };
                    if hangs {
                        // Read on (so a close is seen) but never answer.
                        while let Ok(k) = s.read(&mut chunk).await {
                            if k == 0 {
                                let _ = closed_tx.send(());
                                return;
                            }
                        }
                        return;
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let body = format!("conn-{n}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    if mode == UpstreamMode::CloseAfterOne {
                        drop(s);
                        let _ = closed_tx.send(());
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), closed_rx)
}

/// A gateway in front of `url`, with `extra` top-level config.
async fn with_upstream(url: String, extra: &str) -> Harness {
    Harness::with(Options {
        upstream_url: Some(url),
        extra: extra.into(),
        ..Options::default()
    })
    .await
}

async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
) -> (StatusCode, String) {
    let r = common::get_on(sender, path, None).await;
    (r.status, r.text())
}

#[tokio::test]
async fn each_client_connection_has_its_own_upstream_connection() {
    let (url, _) = numbered_upstream(UpstreamMode::KeepAlive).await;
    let h = with_upstream(url, "").await;
    let mut a = common::one_connection(h.addr).await;
    let mut b = common::one_connection(h.addr).await;
    let (status, first) = get_on(&mut a, "/public/1").await;
    assert_eq!(status, StatusCode::OK);
    for i in 2..6 {
        assert_eq!(
            get_on(&mut a, &format!("/public/{i}")).await,
            (StatusCode::OK, first.clone()),
            "requests on one client connection reuse its upstream connection"
        );
    }
    let (status, other) = get_on(&mut b, "/public/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(other, first, "another client connection never shares it");
    assert_eq!(get_on(&mut b, "/public/2").await.1, other);
    h.shutdown().await;
}

#[tokio::test]
async fn an_upstream_connection_closed_while_idle_is_replaced() {
    let (url, mut closed) = numbered_upstream(UpstreamMode::CloseAfterOne).await;
    let h = with_upstream(url, "").await;
    let mut client = common::one_connection(h.addr).await;
    let mut seen = Vec::new();
    for i in 0..3 {
        let (status, body) = get_on(&mut client, &format!("/public/{i}")).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        seen.push(body);
        // The upstream has closed its end; let the gateway read the close before the next
        // request (were it still in flight, the request would meet a closed connection).
        // Nothing outside the gateway can observe that read, so this is a settling pause,
        // not a wait on something the test could be told.
        closed.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen,
        ["conn-0", "conn-1", "conn-2"],
        "a new upstream connection each time"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn an_upstream_connection_abandoned_mid_request_is_closed_not_reused() {
    let (url, mut closed) = numbered_upstream(UpstreamMode::FirstConnectionHangs).await;
    // The test config gives the upstream `response_timeout_ms: 500`: the hanging request is 504.
    let h = with_upstream(url, "").await;
    let mut client = common::one_connection(h.addr).await;
    let (status, _) = get_on(&mut client, "/public/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    closed
        .recv()
        .await
        .expect("the gateway closes the abandoned upstream connection");
    assert_eq!(
        get_on(&mut client, "/public/next").await,
        (StatusCode::OK, "conn-1".to_owned()),
        "the next request goes out on a new upstream connection"
    );
    h.shutdown().await;
}

/// An upstream connection keeps one response timer, which each exchange moves on: neither a
/// connection's earlier exchanges nor its timer running out while the connection sat idle
/// changes a later exchange's deadline.
#[tokio::test]
async fn the_response_timeout_holds_on_a_reused_upstream_connection() {
    let (url, mut closed) = numbered_upstream(UpstreamMode::SlowPathHangs).await;
    // The test config gives the upstream `response_timeout_ms: 500`.
    let h = with_upstream(url, "").await;
    let mut client = common::one_connection(h.addr).await;
    let ok = |conn: &str| (StatusCode::OK, conn.to_owned());
    assert_eq!(get_on(&mut client, "/public/1").await, ok("conn-0"));
    // Idle for longer than the response timeout, so that the timer the first exchange left
    // armed runs out meanwhile: what is waited for is time itself.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        get_on(&mut client, "/public/2").await,
        ok("conn-0"),
        "an exchange cut short by a timer that ran out while idle"
    );
    assert_eq!(get_on(&mut client, "/public/3").await, ok("conn-0"));
    // A moved-on timer still fires.
    let (status, _) = get_on(&mut client, "/public/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    closed
        .recv()
        .await
        .expect("the gateway closes the timed-out upstream connection");
    assert_eq!(get_on(&mut client, "/public/4").await, ok("conn-1"));
    h.shutdown().await;
}

#[tokio::test]
async fn an_ended_client_connection_leaves_its_upstream_connection_to_the_next() {
    let (url, _) = numbered_upstream(UpstreamMode::KeepAlive).await;
    // One worker: the idle upstream connections of a worker are reused on that worker.
    let h = with_upstream(url, "workers: 1").await;
    let mut first = common::one_connection(h.addr).await;
    assert_eq!(
        get_on(&mut first, "/public/1").await,
        (StatusCode::OK, "conn-0".to_owned())
    );
    drop(first);
    // Once the gateway has seen the client leave, its upstream connection is idle and a later
    // client connection takes it: a client opening a connection per request does not cost an
    // upstream connection each. (Asked until then: the leaving is not observable outside.) A
    // client that asks before the gateway has seen `first` leave gets a fresh upstream
    // connection, which then becomes the newest idle one and is the one taken next (the pool is
    // last in, first out), so what must happen is that some upstream connection is reused.
    let seen = std::cell::RefCell::new(vec!["conn-0".to_owned()]);
    common::eventually(
        "a later client connection reuses an upstream connection",
        || async {
            let mut next = common::one_connection(h.addr).await;
            let (status, conn) = get_on(&mut next, "/public/2").await;
            assert_eq!(status, StatusCode::OK);
            let mut seen = seen.borrow_mut();
            if seen.contains(&conn) {
                return Some(());
            }
            seen.push(conn);
            None
        },
    )
    .await;
    h.shutdown().await;
}

/// `X-Request-Id`: a well-formed one from the client is kept, anything else (missing, two,
/// malformed, or shaped like one of our credentials) replaced by a generated one; the same id
/// goes upstream and comes back on the response, denials and `/o/` answers included.
#[tokio::test]
async fn request_ids_are_kept_or_made_and_sent_upstream() {
    let h = Harness::start().await;
    let token = h.access_token("read").await;
    let bearer = format!("Bearer {token}");
    let id_of = |r: &common::Resp| r.headers["x-request-id"].to_str().unwrap().to_owned();

    let r = h
        .send(
            Method::GET,
            "/api/users/1",
            &[
                ("authorization", &bearer),
                ("x-request-id", "trace-abc-123"),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(id_of(&r), "trace-abc-123");
    assert_eq!(r.json()["headers"]["x-request-id"], "trace-abc-123");

    for sent in [None, Some("has space"), Some("pcat_looks-like-a-token")] {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(sent.map(|s| ("x-request-id", s)));
        let r = h.send(Method::GET, "/api/users/1", &headers, b"").await;
        let id = id_of(&r);
        assert_eq!(id.len(), 32, "{sent:?}: generated, got {id}");
        assert_eq!(
            r.json()["headers"]["x-request-id"],
            id.as_str(),
            "the same id upstream"
        );
    }
    let twice = h
        .send(
            Method::GET,
            "/api/users/1",
            &[
                ("authorization", &bearer),
                ("x-request-id", "a"),
                ("x-request-id", "b"),
            ],
            b"",
        )
        .await;
    assert_eq!(id_of(&twice).len(), 32);

    let denied = h.get("/api/users/1", None).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(id_of(&denied).len(), 32);
    let own = h
        .send(
            Method::GET,
            "/.well-known/oauth-authorization-server",
            &[("x-request-id", "meta-1")],
            b"",
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(id_of(&own), "meta-1");
    h.shutdown().await;
}
