//! POST /o/token/ over real HTTP: grants, client authentication, scopes, rotation, and every
//! RFC 6749 §5.2 error shape.

mod common;

use common::{Harness, Options, PASSWORD, basic};
use http::{Method, StatusCode};
use portcullis::store::GrantType;

fn assert_oauth_error(r: &common::Resp, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["error"], code, "{}", r.text());
    assert!(r.json()["error_description"].is_string());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn password_grant_success_shape() {
    let h = Harness::start().await;
    for path in ["/o/token/", "/o/token"] {
        let body = format!(
            "grant_type=password&username=alice&password={}&scope=read+write",
            PASSWORD.replace(' ', "+")
        );
        let auth = basic(&h.client.id, &h.client.secret);
        let r = h
            .send(
                Method::POST,
                path,
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("authorization", &auth),
                ],
                body.as_bytes(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("pragma"), Some("no-cache"));
        let j = r.json();
        assert_eq!(j["token_type"], "Bearer");
        assert_eq!(j["expires_in"], 1200);
        assert_eq!(j["scope"], "read write");
        let access = j["access_token"].as_str().unwrap();
        let refresh = j["refresh_token"].as_str().unwrap();
        assert!(
            access.starts_with("pcat_") && access.len() == 48,
            "{access}"
        );
        assert!(
            refresh.starts_with("pcrt_") && refresh.len() == 48,
            "{refresh}"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn tokens_are_stored_only_as_digests() {
    let h = Harness::start().await;
    let j = h.password_token("read").await;
    let access = common::field(&j, "access_token");
    let refresh = common::field(&j, "refresh_token");
    assert_eq!(
        h.get("/api/users", Some(&access)).await.status,
        StatusCode::OK
    );
    let secret = h.client.secret.clone();
    let needles = [&access, &refresh, &secret, &PASSWORD.to_owned()];
    // Whatever the backend: every stored record, as the store reads it back.
    let digest = portcullis::crypto::Digest::of(&access);
    let stored = h.store.export(0).await.unwrap();
    assert!(stored.access.iter().any(|t| t.digest == digest));
    let stored = format!("{stored:?}");
    for needle in needles {
        assert!(!stored.contains(needle.as_str()), "a raw secret was stored");
    }
    let on_sqlite = matches!(
        h.config.store,
        portcullis::config::StoreConfig::Sqlite { .. }
    );
    let tmp = h.shutdown().await;
    if !on_sqlite {
        return;
    }
    // On SQLite, the bytes on disk.
    let dir = tmp.path();
    for needle in needles {
        assert!(
            !common::dir_contains(dir, needle),
            "a raw secret was written to disk"
        );
    }
    // The digests are there: the test above would be vacuous if nothing was stored.
    let db = std::fs::read(dir.join("data/portcullis.db")).unwrap_or_default();
    let wal = std::fs::read(dir.join("data/portcullis.db-wal")).unwrap_or_default();
    let found = |b: &[u8]| b.windows(32).any(|w| w == digest.0);
    assert!(
        found(&db) || found(&wal),
        "the access token digest is stored"
    );
}

#[tokio::test]
async fn client_authentication_by_basic_or_body_not_both() {
    let h = Harness::start().await;
    let base = [("grant_type", "client_credentials")];

    let by_body = h
        .token_raw(
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &h.client.id),
                ("client_secret", &h.client.secret),
            ],
        )
        .await;
    assert_eq!(by_body.status, StatusCode::OK, "{}", by_body.text());

    let both = h
        .token_raw(
            Some(&basic(&h.client.id, &h.client.secret)),
            &[
                ("grant_type", "client_credentials"),
                ("client_secret", &h.client.secret),
            ],
        )
        .await;
    assert_oauth_error(&both, StatusCode::BAD_REQUEST, "invalid_request");

    let wrong_basic = h
        .token_raw(Some(&basic(&h.client.id, "pccs_wrong")), &base)
        .await;
    assert_oauth_error(&wrong_basic, StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(
        wrong_basic
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic ")
    );

    let unknown_basic = h
        .token_raw(Some(&basic("nobody", "pccs_wrong")), &base)
        .await;
    assert_oauth_error(&unknown_basic, StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(
        unknown_basic.json(),
        wrong_basic.json(),
        "unknown client and wrong secret look alike"
    );

    let wrong_body = h
        .token_raw(
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &h.client.id),
                ("client_secret", "nope"),
            ],
        )
        .await;
    assert_oauth_error(&wrong_body, StatusCode::UNAUTHORIZED, "invalid_client");
    // Every 401 carries a challenge (RFC 7235 §3.1), body credentials too.
    assert_eq!(
        wrong_body.header("www-authenticate"),
        Some("Basic realm=\"portcullis\"")
    );

    let none = h.token_raw(None, &base).await;
    assert_oauth_error(&none, StatusCode::UNAUTHORIZED, "invalid_client");

    let garbage = h.token_raw(Some("Basic !!!"), &base).await;
    assert_oauth_error(&garbage, StatusCode::UNAUTHORIZED, "invalid_client");
    h.shutdown().await;
}

#[tokio::test]
async fn every_error_shape() {
    let h = Harness::start().await;
    let cc_only = h
        .new_client(&[GrantType::ClientCredentials], &["read"])
        .await;
    let pw = |user: &'static str, pass: &'static str| {
        vec![
            ("grant_type", "password"),
            ("username", user),
            ("password", pass),
        ]
    };
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no grant_type",
            vec![("username", "alice")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown grant",
            vec![("grant_type", "magic")],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            "no username",
            vec![("grant_type", "password"), ("password", "x")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "wrong password",
            pw("alice", "wrong"),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "unknown user",
            pw("mallory", "wrong"),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "unknown scope",
            vec![("grant_type", "client_credentials"), ("scope", "admin")],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            "scope not allowed to client",
            vec![
                ("grant_type", "client_credentials"),
                ("scope", "read groups"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            "repeated parameter",
            vec![
                ("grant_type", "client_credentials"),
                ("scope", "read"),
                ("scope", "write"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "refresh without token",
            vec![("grant_type", "refresh_token")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown refresh token",
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "pcrt_nope"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
    ];
    for (name, form, status, code) in cases {
        let r = h.token(&h.client, &form).await;
        assert_eq!(r.status, status, "{name}: {}", r.text());
        assert_oauth_error(&r, status, code);
    }

    let r = h.token(&cc_only, &pw("alice", PASSWORD)).await;
    assert_oauth_error(&r, StatusCode::BAD_REQUEST, "unauthorized_client");

    let auth = basic(&h.client.id, &h.client.secret);
    let json_body = h
        .send(
            Method::POST,
            "/o/token/",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            br#"{"grant_type":"client_credentials"}"#,
        )
        .await;
    assert_oauth_error(&json_body, StatusCode::BAD_REQUEST, "invalid_request");

    let get = h.send(Method::GET, "/o/token/", &[], b"").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.header("allow"), Some("POST"));

    let huge = vec![b'a'; 64 * 1024];
    let too_large = h
        .send(
            Method::POST,
            "/o/token/",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &auth),
            ],
            &huge,
        )
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    h.shutdown().await;
}

#[tokio::test]
async fn omitted_scope_gives_allowed_defaults() {
    let h = Harness::start().await;
    let r = h
        .token(
            &h.client,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.json()["scope"], "read");
    let write_only = h
        .new_client(&[GrantType::ClientCredentials], &["write"])
        .await;
    let r = h
        .token(&write_only, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(
        r.json()["error"],
        "invalid_scope",
        "read is default but not allowed to this client"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn client_credentials_has_no_refresh_token_and_no_user() {
    let h = Harness::start().await;
    let r = h
        .token(
            &h.client,
            &[("grant_type", "client_credentials"), ("scope", "read")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert!(j.get("refresh_token").is_none(), "{j}");
    let api = h
        .send(
            Method::GET,
            "/api/users/1",
            &[
                (
                    "authorization",
                    &format!("Bearer {}", j["access_token"].as_str().unwrap()),
                ),
                ("x-auth-user", "admin"),
            ],
            b"",
        )
        .await;
    assert_eq!(api.status, StatusCode::OK);
    assert_eq!(
        api.upstream_saw("x-auth-user"),
        None,
        "no user, and the spoofed one is gone"
    );
    assert_eq!(
        api.upstream_saw("x-auth-client").as_deref(),
        Some(h.client.id.as_str())
    );
    h.shutdown().await;
}

#[tokio::test]
async fn refresh_rotates_and_never_widens() {
    let h = Harness::start().await;
    let first = h.password_token("read write").await;
    let refresh1 = common::field(&first, "refresh_token");
    let access1 = common::field(&first, "access_token");
    assert_eq!(
        h.get("/api/users", Some(&access1)).await.status,
        StatusCode::OK
    );

    // Narrow to read.
    let r = h
        .token(
            &h.client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh1),
                ("scope", "read"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let second = r.json();
    assert_eq!(second["scope"], "read");
    let refresh2 = common::field(&second, "refresh_token");
    assert_ne!(refresh2, refresh1);

    // The rotated-out refresh token's access token is dead at once; the refresh token itself,
    // presented again within the grace period, replays the same new pair (a retry).
    assert_eq!(
        h.get("/api/users", Some(&access1)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let retry = h.refresh(&h.client, &refresh1).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text());
    assert_eq!(retry.json()["access_token"], second["access_token"]);
    assert_eq!(retry.json()["refresh_token"], second["refresh_token"]);
    assert_eq!(retry.json()["scope"], "read");

    // The new refresh token keeps the original grant's scope: write can come back...
    let r = h
        .token(
            &h.client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh2),
                ("scope", "write"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let refresh3 = common::field(&r.json(), "refresh_token");
    // ...but never more than the original grant.
    let r = h
        .token(
            &h.client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh3),
                ("scope", "read groups"),
            ],
        )
        .await;
    assert_eq!(r.json()["error"], "invalid_scope");

    // Another client cannot use this refresh token.
    let other = h.new_client(&GrantType::ALL, &["read", "write"]).await;
    let r = h.refresh(&other, &refresh3).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    h.shutdown().await;
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_refresh_token() {
    let h = Harness::with(Options {
        extra_oauth: "  rotate_refresh_token: false".into(),
        ..Options::default()
    })
    .await;
    let first = h.password_token("read").await;
    let refresh = common::field(&first, "refresh_token");
    for _ in 0..2 {
        let r = h.refresh(&h.client, &refresh).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.json().get("refresh_token").is_none());
        let access = common::field(&r.json(), "access_token");
        assert_eq!(
            h.get("/api/users", Some(&access)).await.status,
            StatusCode::OK
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn expired_refresh_token_is_invalid_grant() {
    let h = Harness::start().await;
    let refresh = common::field(&h.password_token("read").await, "refresh_token");
    h.clock.advance(3601);
    let r = h.refresh(&h.client, &refresh).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    h.shutdown().await;
}

#[tokio::test]
async fn parallel_refreshes_yield_exactly_one_new_pair() {
    let h = std::sync::Arc::new(Harness::start().await);
    let refresh = common::field(&h.password_token("read").await, "refresh_token");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = std::sync::Arc::clone(&h);
        let refresh = refresh.clone();
        tasks.push(tokio::spawn(
            async move { h.refresh(&h.client, &refresh).await },
        ));
    }
    // Within the grace period every racer gets the one new pair: never a 500, never two
    // live families.
    let mut pairs = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let j = r.json();
        pairs.insert((
            common::field(&j, "access_token"),
            common::field(&j, "refresh_token"),
        ));
    }
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    let (access, refresh) = pairs.into_iter().next().unwrap();
    assert_eq!(
        h.get("/api/users", Some(&access)).await.status,
        StatusCode::OK
    );
    let next = h.refresh(&h.client, &refresh).await;
    assert_eq!(next.status, StatusCode::OK);
}

#[tokio::test]
async fn parallel_refreshes_without_grace_leave_no_two_families() {
    let h = std::sync::Arc::new(
        Harness::with(Options {
            extra_oauth: "  refresh_token_grace_period_seconds: 0".into(),
            ..Options::default()
        })
        .await,
    );
    let refresh = common::field(&h.password_token("read").await, "refresh_token");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = std::sync::Arc::clone(&h);
        let refresh = refresh.clone();
        tasks.push(tokio::spawn(
            async move { h.refresh(&h.client, &refresh).await },
        ));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::OK => winners.push(r.json()),
            StatusCode::BAD_REQUEST => assert_eq!(r.json()["error"], "invalid_grant"),
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert!(winners.len() <= 1, "{winners:?}");
    // At most one family, and a same-second repeat is within a zero grace period (replayed)
    // or, once later, revokes it: either way no second live family exists.
    let live = h.store.live_tokens(h.clock_now()).await.unwrap();
    assert!(live.refresh <= 1, "{live:?}");
}
