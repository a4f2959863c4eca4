//! What reaches an upstream, and what the OAuth surface answers, is unambiguous: each case is
//! a hostile request (or a hostile upstream) over a real socket. Double-encoded and overlong
//! escapes, every spelling of `/o/`, `Host` and `:authority`, repeated fields, `;` query
//! separators, upstream framing conflicts and unsolicited upgrades, 401 challenges, and the
//! token endpoint's parsing cost.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Harness, Options, basic, raw_form_request, raw_status};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncWriteExt;

fn catch_all() -> Options {
    Options {
        // A catch-all route with every legacy opt-in: the worst case for the /o/ namespace.
        extra_routes: "  - { path: /, auth: none, upstream: legacy, allow_encoded_slashes: true, allow_semicolons: true, allow_double_encoding: true, case_insensitive: true }".into(),
        ..Options::default()
    }
}

#[tokio::test]
async fn double_encoded_and_overlong_escapes_are_refused() {
    let h = Harness::with(Options {
        extra_routes:
            "  - { path: /legacy, auth: none, upstream: legacy, allow_double_encoding: true }"
                .into(),
        ..Options::default()
    })
    .await;
    let token = h.access_token("read").await;
    let refused = [
        "/public/%252e%252e/admin/users",
        "/public/%252E%252E/api/users",
        "/public/%252f..%252fadmin",
        "/public/a%255c..",
        "/public/%2525252e",
        "/public/a%250d%250aX-Injected:1",
        "/public/%c0%ae%c0%ae/admin",
        "/public/%C0%AF",
        "/public/%e0%80%ae",
        "/public/%25%32%65%25%32%65/admin",
        "/api/users/%252e%252e/%252e%252e/admin",
    ];
    for path in refused {
        let r = h.get(path, Some(&token)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text());
        assert_eq!(r.json()["error"], "bad_request", "{path}");
        assert!(
            r.json().get("service").is_none(),
            "{path} reached the upstream"
        );
    }
    // The opt-in is the route's alone, and keeps the escapes as sent.
    let r = h.get("/legacy/%252e%252e/x", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["path"], "/legacy/%252e%252e/x");
    let r = h.get("/legacy/%c0%ae", None).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "overlong UTF-8 has no opt-in"
    );
    // A literal percent sign and real UTF-8 pass.
    for (path, seen) in [
        ("/public/100%25", "/public/100%25"),
        ("/public/%e2%82%ac", "/public/%E2%82%AC"),
    ] {
        let r = h.get(path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.json()["path"], seen);
    }
    h.shutdown().await;
}

/// With a catch-all route, no spelling of an `/o/` path is ever proxied: the spellings that
/// canonicalize to an endpoint are served by it, the others are refused.
#[tokio::test]
async fn the_oauth_namespace_is_never_proxied() {
    let h = Harness::with(catch_all()).await;
    let auth = basic(&h.client.id, &h.client.secret);
    let form = [("grant_type", "client_credentials")];
    for path in [
        "/o/token/",
        "//o/token/",
        "/./o/token/",
        "/x/../o/token/",
        "/%6f/token/",
        "/o//token/",
        "/o/token",
        "/o/./token/",
    ] {
        let raw = h.raw(&raw_form_request(path, Some(&auth), &form)).await;
        assert_eq!(raw_status(&raw), 200, "{path}: {raw}");
        assert!(
            raw.contains("\"access_token\""),
            "{path} was not the token endpoint: {raw}"
        );
    }
    for (path, status) in [
        ("/O/token/", 404),
        ("/o/nothing-here", 404),
        ("/o", 404),
        ("/o%2ftoken/", 400),
        ("/o%2Ftoken/", 400),
        ("/o%5ctoken/", 400),
        ("/o;jsessionid=1/token/", 400),
        ("/%6F;x/token/", 400),
    ] {
        let raw = h.raw(&raw_form_request(path, Some(&auth), &form)).await;
        assert_eq!(raw_status(&raw), status, "{path}: {raw}");
        assert!(
            !raw.contains("sample legacy API"),
            "{path} reached the upstream: {raw}"
        );
    }
    // The metadata document too, in any spelling.
    let r = h
        .get("//.well-known/./oauth-authorization-server", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json().get("issuer").is_some(), "{}", r.text());
    // Everything else still reaches the catch-all upstream.
    let r = h.get("/anything/else", None).await;
    assert_eq!(r.json()["service"], "sample legacy API");
    h.shutdown().await;
}

/// RFC 7235 §3.1: every 401 carries a challenge, however the client authenticated.
#[tokio::test]
async fn every_invalid_client_answer_carries_a_challenge() {
    let h = Harness::with(Options {
        extra_oauth: "  rate_limits: { failures_before_backoff: 100 }".into(),
        ..Options::default()
    })
    .await;
    let wrong_basic = basic(&h.client.id, "pccs_wrong");
    let params = [("grant_type", "client_credentials"), ("token", "x")];
    let mut in_body = params.to_vec();
    in_body.extend([
        ("client_id", h.client.id.as_str()),
        ("client_secret", "pccs_wrong"),
    ]);
    for path in ["/o/token/", "/o/revoke_token/", "/o/introspect/"] {
        for (how, auth, form) in [
            ("in the body", None, &in_body[..]),
            ("with HTTP Basic", Some(wrong_basic.as_str()), &params[..]),
            ("not at all", None, &params[..]),
        ] {
            let raw = h.raw(&raw_form_request(path, auth, form)).await;
            assert_eq!(raw_status(&raw), 401, "{path}, credentials {how}: {raw}");
            assert!(raw.contains("invalid_client"), "{raw}");
            assert!(
                raw.to_ascii_lowercase()
                    .contains("www-authenticate: basic realm=\"portcullis\""),
                "{path}, credentials {how}: {raw}"
            );
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn the_authority_is_validated() {
    let h = Harness::start().await;
    let cases: &[(&str, u16)] = &[
        ("GET /public/a HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        (
            "GET /public/a HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /public/a HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /public/a HTTP/1.1\r\nHost: user@evil.example\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /public/a HTTP/1.1\r\nHost: evil.example/path\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /public/a HTTP/1.1\r\nHost: a:b:c\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /public/a HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "POST /o/token/ HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            400,
        ),
        ("GET /public/a HTTP/1.0\r\n\r\n", 200),
        (
            "GET /public/a HTTP/1.1\r\nHost: api.example:8443\r\nConnection: close\r\n\r\n",
            200,
        ),
    ];
    for (request, status) in cases {
        let raw = h.raw(request.as_bytes()).await;
        assert_eq!(raw_status(&raw), *status, "{request:?}: {raw}");
        if *status == 400 {
            assert!(!raw.contains("sample legacy API"), "{raw}");
        }
    }
    let raw = h
        .raw(b"GET /public/a HTTP/1.1\r\nHost: api.example:8443\r\nConnection: close\r\n\r\n")
        .await;
    assert!(
        raw.contains("\"x-forwarded-host\":\"api.example:8443\""),
        "{raw}"
    );

    // HTTP/2: a `host` that disagrees with `:authority` is malformed (RFC 9113 §8.3.1).
    let mut sender = h2_connect(h.local_addr()).await;
    let authority = h.local_addr().to_string();
    for (host, status, seen) in [
        (Some("evil.example"), StatusCode::BAD_REQUEST, None),
        (
            Some(authority.as_str()),
            StatusCode::OK,
            Some(authority.as_str()),
        ),
        (None, StatusCode::OK, Some(authority.as_str())),
    ] {
        let mut req = Request::get(format!("http://{authority}/public/a"));
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "host {host:?}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if let Some(seen) = seen {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["headers"]["x-forwarded-host"], seen);
        }
    }
    h.shutdown().await;
}

/// An HTTP/2 (prior knowledge) connection to `addr`.
async fn h2_connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn what_the_upstream_receives_is_unambiguous() {
    let h = Harness::start().await;
    let token = h.access_token("read").await;
    // HTTP/2 cookie fields become one `Cookie`, joined with "; ".
    let mut sender = h2_connect(h.local_addr()).await;
    let req = Request::get(format!("http://{}/public/a", h.local_addr()))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["headers"]["cookie"], "a=1; b=2");

    // Two Content-Type fields.
    let raw = h
        .raw(b"POST /public/a HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\nConnection: close\r\n\r\naccess_token=x")
        .await;
    assert_eq!(raw_status(&raw), 400, "{raw}");
    assert!(!raw.contains("sample legacy API"));

    // `;` as a query separator carrying a credential is refused like `&`.
    for query in ["a=1;access_token=x", "a=1;access%5Ftoken=x"] {
        let r = h.get(&format!("/api/users/1?{query}"), Some(&token)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text());
        assert_eq!(r.json()["error"], "invalid_request");
    }
    let r = h.get("/api/users/1?a=1;b=2", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["query"], "a=1;b=2");
    h.shutdown().await;
}

#[tokio::test]
async fn hostile_upstream_framing_is_not_relayed() {
    // Both Content-Length (stale) and chunked Transfer-Encoding: the chunked body wins and the
    // length must not reach the client (RFC 9112 §6.3).
    let both = common::scripted_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n".to_vec(),
        Vec::new(),
        0,
    )
    .await;
    let h = Harness::with(Options {
        upstream_url: Some(format!("http://{both}")),
        ..Options::default()
    })
    .await;
    let r = h.get("/public/a", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "hello world");
    assert_ne!(r.header("content-length"), Some("5"));
    h.shutdown().await;

    // An unsolicited 101: the gateway removed `Upgrade`, so nothing may switch protocols.
    let upgrade = common::scripted_upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: evil\r\n\r\nnot http at all".to_vec(),
        Vec::new(),
        0,
    )
    .await;
    let h = Harness::with(Options {
        upstream_url: Some(format!("http://{upgrade}")),
        ..Options::default()
    })
    .await;
    for request in [
        &b"GET /public/a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
        &b"GET /public/a HTTP/1.1\r\nHost: a\r\nConnection: upgrade, close\r\nUpgrade: evil\r\n\r\n"[..],
    ] {
        let raw = h.raw(request).await;
        assert_eq!(raw_status(&raw), 502, "{raw}");
        assert!(!raw.contains("not http at all"), "{raw}");
    }
    h.shutdown().await;
}

/// A form of thousands of tiny distinct keys is refused at once, and the source address's
/// limit is checked before a body is even read.
#[tokio::test]
async fn token_requests_are_parsed_cheaply_and_limited_first() {
    let h = Harness::with(Options {
        extra_oauth: "  rate_limits: { per_address_per_minute: 3 }".into(),
        extra: "limits: { header_read_timeout_seconds: 30 }".into(),
        ..Options::default()
    })
    .await;
    let mut many = String::new();
    let mut i = 0;
    while many.len() < 16_000 {
        many.push_str(&format!("k{i}=&"));
        i += 1;
    }
    assert!(i > 2_000);
    let raw = h
        .raw(
            format!(
                "POST /o/token/ HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{many}",
                many.len()
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(raw_status(&raw), 400, "{raw}");
    assert!(raw.contains("too many parameters"), "{raw}");
    // Two more requests use up the address's budget of three...
    for _ in 0..2 {
        let raw = h
            .raw(&raw_form_request(
                "/o/token/",
                None,
                &[("grant_type", "client_credentials")],
            ))
            .await;
        assert_eq!(raw_status(&raw), 401, "{raw}");
    }
    // ...so a fourth is refused on its head alone: its body never comes, and it need not.
    let mut s = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    s.write_all(b"POST /o/token/ HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant")
        .await
        .unwrap();
    let head = read_head(&mut s, Duration::from_secs(10)).await;
    assert_eq!(raw_status(&head), 429, "{head}");
    h.shutdown().await;
}

/// Reads until the end of a response head (or `limit`).
async fn read_head(s: &mut tokio::net::TcpStream, limit: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(limit, async {
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn two_content_types_at_the_token_endpoint_are_refused() {
    let h = Harness::start().await;
    let r = h
        .send(
            Method::POST,
            "/o/token/",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-type", "application/json"),
                ("authorization", &basic(&h.client.id, &h.client.secret)),
            ],
            b"grant_type=client_credentials",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    h.shutdown().await;
}

/// A token outside the `Authorization` header is a denial wherever it is found: in the query
/// or in a form body, counted alike (`deny`, `credential_in_request`), never forwarded.
#[tokio::test]
async fn a_credential_outside_the_header_is_one_denial() {
    let h = Harness::start().await;
    let token = h.access_token("read write").await;
    let auth = format!("Bearer {token}");
    let r = h
        .send(
            Method::POST,
            "/api/users",
            &[
                ("authorization", &auth),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            format!("name=x&access_token={token}").as_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = h
        .get(&format!("/api/users/1?access_token={token}"), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let m = h.metrics().await;
    for route in ["POST,PUT,PATCH,DELETE /api", "GET,HEAD /api/users"] {
        assert!(
            m.contains(&format!(
                r#"portcullis_auth_decisions_total{{route="{route}",decision="deny",reason="credential_in_request"}} 1"#
            )),
            "{route}: {m}"
        );
    }
    assert!(
        !m.contains(r#"route="POST,PUT,PATCH,DELETE /api",decision="allow",reason="token"} 1"#),
        "{m}"
    );
    h.shutdown().await;
}
