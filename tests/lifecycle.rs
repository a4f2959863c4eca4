//! Token lifecycle over real HTTP: revocation (RFC 7009), introspection (RFC 7662), refresh
//! reuse detection, the revocation log, the sweeper, and the RFC 8414 metadata.

mod common;

use common::{Harness, Options, TestClient, basic};
use http::{Method, StatusCode};
use portcullis::store::{GrantType, TokenOwner};

async fn revoke(h: &Harness, client: &TestClient, form: &[(&str, &str)]) -> common::Resp {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let auth = basic(&client.id, &client.secret);
    h.send(
        Method::POST,
        "/o/revoke_token/",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &auth),
        ],
        body.as_bytes(),
    )
    .await
}

async fn introspect(h: &Harness, authorization: &str, form: &[(&str, &str)]) -> common::Resp {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    h.send(
        Method::POST,
        "/o/introspect/",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", authorization),
        ],
        body.as_bytes(),
    )
    .await
}

#[tokio::test]
async fn revoked_access_token_fails_on_the_very_next_request() {
    let h = Harness::start().await;
    let pair = h.password_token("read").await;
    let access = common::field(&pair, "access_token");
    // Cached by a successful request first: revocation must invalidate, not wait for expiry.
    assert_eq!(
        h.get("/api/users", Some(&access)).await.status,
        StatusCode::OK
    );
    let r = revoke(&h, &h.client, &[("token", &access)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let after = h.get("/api/users", Some(&access)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert!(
        after
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    // The refresh token survives an access-token revocation (as in django-oauth-toolkit).
    let refreshed = h
        .refresh(&h.client, &common::field(&pair, "refresh_token"))
        .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    // Revoking again, or an unknown token, still answers 200.
    assert_eq!(
        revoke(&h, &h.client, &[("token", &access)]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        revoke(&h, &h.client, &[("token", "pcat_never-issued")])
            .await
            .status,
        StatusCode::OK
    );
    let m = h.metrics().await;
    assert!(
        m.contains(r#"portcullis_revocation_requests_total{outcome="revoked"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"portcullis_revocation_requests_total{outcome="unknown_token"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"portcullis_tokens_revoked_total{kind="access",cause="endpoint"} 1"#),
        "{m}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn revoking_a_refresh_token_takes_its_access_tokens_along() {
    let h = Harness::start().await;
    let pair = h.password_token("read").await;
    let (access, refresh) = (
        common::field(&pair, "access_token"),
        common::field(&pair, "refresh_token"),
    );
    assert_eq!(
        h.get("/api/users", Some(&access)).await.status,
        StatusCode::OK
    );
    // A wrong hint is not trusted: the refresh token is still found.
    let r = revoke(
        &h,
        &h.client,
        &[("token", &refresh), ("token_type_hint", "access_token")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        h.get("/api/users", Some(&access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = h.refresh(&h.client, &refresh).await;
    assert_eq!(again.json()["error"], "invalid_grant");
    h.shutdown().await;
}

#[tokio::test]
async fn a_client_cannot_revoke_another_clients_token() {
    let h = Harness::start().await;
    let access = h.access_token("read").await;
    let other = h
        .new_client(&[GrantType::ClientCredentials], &["read"])
        .await;
    let r = revoke(&h, &other, &[("token", &access)]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "no oracle for whether the token exists"
    );
    assert_eq!(
        h.get("/api/users", Some(&access)).await.status,
        StatusCode::OK,
        "still valid"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn revocation_request_errors() {
    let h = Harness::start().await;
    let bad = TestClient {
        id: h.client.id.clone(),
        secret: "pccs_wrong".into(),
    };
    let r = revoke(&h, &bad, &[("token", "x")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "invalid_client");
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    let r = revoke(&h, &h.client, &[("token_type_hint", "access_token")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_request");
    let r = h.send(Method::GET, "/o/revoke_token/", &[], b"").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    // Client authentication in the body works here too.
    let access = h.access_token("read").await;
    let r = h
        .send(
            Method::POST,
            "/o/revoke_token",
            &[("content-type", "application/x-www-form-urlencoded")],
            format!(
                "token={access}&client_id={}&client_secret={}",
                h.client.id, h.client.secret
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        h.get("/api/users", Some(&access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    h.shutdown().await;
}

#[tokio::test]
async fn introspection_claims_and_visibility() {
    let h = Harness::start().await;
    let pair = h.password_token("read write").await;
    let access = common::field(&pair, "access_token");
    let own = basic(&h.client.id, &h.client.secret);

    let r = introspect(&h, &own, &[("token", &access)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let j = r.json();
    assert_eq!(j["active"], true);
    assert_eq!(j["scope"], "read write");
    assert_eq!(j["client_id"], h.client.id.as_str());
    assert_eq!(j["username"], "alice");
    assert_eq!(j["token_type"], "Bearer");
    let (iat, exp) = (j["iat"].as_i64().unwrap(), j["exp"].as_i64().unwrap());
    assert_eq!(iat, h.clock_now());
    assert_eq!(exp - iat, 1200);

    let refresh = introspect(
        &h,
        &own,
        &[
            ("token", &common::field(&pair, "refresh_token")),
            ("token_type_hint", "refresh_token"),
        ],
    )
    .await;
    assert_eq!(refresh.json()["active"], true);
    assert_eq!(refresh.json()["token_type"], "refresh_token");

    // An ordinary client sees only its own tokens.
    let stranger = h
        .new_client(&[GrantType::ClientCredentials], &["read"])
        .await;
    let r = introspect(
        &h,
        &basic(&stranger.id, &stranger.secret),
        &[("token", &access)],
    )
    .await;
    assert_eq!(r.json(), serde_json::json!({"active": false}));

    // A client registered with the introspection scope sees every token.
    let resource = h
        .new_client(&[GrantType::ClientCredentials], &["introspection"])
        .await;
    let r = introspect(
        &h,
        &basic(&resource.id, &resource.secret),
        &[("token", &access)],
    )
    .await;
    assert_eq!(r.json()["active"], true);

    // So does a bearer token holding the introspection scope...
    let cc = h
        .token(
            &resource,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "introspection"),
            ],
        )
        .await;
    let bearer = format!("Bearer {}", common::field(&cc.json(), "access_token"));
    let r = introspect(&h, &bearer, &[("token", &access)]).await;
    assert_eq!(r.json()["username"], "alice");
    // ...but not one without it.
    let reader = format!("Bearer {access}");
    let r = introspect(&h, &reader, &[("token", &access)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "invalid_client");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));

    // Unknown, revoked and expired tokens are inactive.
    let r = introspect(&h, &own, &[("token", "pcat_unknown")]).await;
    assert_eq!(r.json(), serde_json::json!({"active": false}));
    let other = h.access_token("read").await;
    revoke(&h, &h.client, &[("token", &other)]).await;
    assert_eq!(
        introspect(&h, &own, &[("token", &other)]).await.json()["active"],
        false
    );
    h.clock.advance(1201);
    assert_eq!(
        introspect(&h, &own, &[("token", &access)]).await.json()["active"],
        false
    );

    // Bad caller credentials.
    let r = introspect(&h, &basic(&h.client.id, "pccs_nope"), &[("token", &access)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "invalid_client");
    let m = h.metrics().await;
    for line in [
        r#"portcullis_introspections_total{outcome="active"} 4"#,
        r#"portcullis_introspections_total{outcome="inactive"} 4"#,
        r#"portcullis_introspections_total{outcome="invalid_client"} 2"#,
    ] {
        assert!(m.contains(line), "missing {line}\n{m}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn reuse_after_the_grace_period_revokes_the_family() {
    let h = Harness::start().await;
    let first = h.password_token("read").await;
    let r = h
        .refresh(&h.client, &common::field(&first, "refresh_token"))
        .await;
    let second = r.json();
    let access2 = common::field(&second, "access_token");
    assert_eq!(
        h.get("/api/users", Some(&access2)).await.status,
        StatusCode::OK
    );
    // An unrelated grant of the same user and client is another family and is spared.
    let unrelated = h.access_token("read").await;

    h.clock.advance(6); // past the default 5-second grace period
    let reuse = h
        .refresh(&h.client, &common::field(&first, "refresh_token"))
        .await;
    assert_eq!(reuse.json()["error"], "invalid_grant");
    // The whole family is gone: the successor pair too, at once.
    assert_eq!(
        h.get("/api/users", Some(&access2)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let successor = h
        .refresh(&h.client, &common::field(&second, "refresh_token"))
        .await;
    assert_eq!(successor.json()["error"], "invalid_grant");
    assert_eq!(
        h.get("/api/users", Some(&unrelated)).await.status,
        StatusCode::OK
    );
    let m = h.metrics().await;
    assert!(
        m.contains("portcullis_refresh_reuse_detected_total 1"),
        "{m}"
    );
    assert!(
        m.contains(r#"portcullis_tokens_revoked_total{kind="refresh",cause="reuse"} 1"#),
        "{m}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn reuse_protection_can_be_turned_off() {
    let h = Harness::with(Options {
        extra_oauth: "  refresh_token_reuse_protection: false".into(),
        ..Options::default()
    })
    .await;
    let first = h.password_token("read").await;
    let second = h
        .refresh(&h.client, &common::field(&first, "refresh_token"))
        .await
        .json();
    h.clock.advance(6);
    let reuse = h
        .refresh(&h.client, &common::field(&first, "refresh_token"))
        .await;
    assert_eq!(reuse.json()["error"], "invalid_grant");
    assert_eq!(
        h.get("/api/users", Some(&common::field(&second, "access_token")))
            .await
            .status,
        StatusCode::OK
    );
    h.shutdown().await;
}

#[tokio::test]
async fn out_of_process_revocations_reach_the_cache_through_the_log() {
    let h = Harness::with(Options {
        extra: "cache: { revocation_poll_ms: 50 }".into(),
        ..Options::default()
    })
    .await;
    let access = h.access_token("read").await;
    assert_eq!(
        h.get("/api/users", Some(&access)).await.status,
        StatusCode::OK
    );
    // What `portcullis tokens revoke --user alice` does, from another process: the store
    // changes, this gateway's cache is not told directly.
    let revoked = h
        .store
        .revoke_tokens_of(TokenOwner::User("alice".into()), h.clock_now())
        .await
        .unwrap();
    assert_eq!(revoked.access.len(), 1);
    common::eventually("the revocation log is followed", || async {
        let status = h.get("/api/users", Some(&access)).await.status;
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn sweeper_deletes_expired_and_revoked_tokens_in_batches() {
    let h = Harness::start().await;
    let keep = h.access_token("read").await;
    let mut expiring = Vec::new();
    for _ in 0..5 {
        let r = h
            .token(&h.client, &[("grant_type", "client_credentials")])
            .await;
        expiring.push(common::field(&r.json(), "access_token"));
    }
    let rotated = h.password_token("read").await;
    h.refresh(&h.client, &common::field(&rotated, "refresh_token"))
        .await;
    revoke(&h, &h.client, &[("token", &keep)]).await;

    let swept = portcullis::lifecycle::sweep_all(&h.store, h.clock_now(), 2, None)
        .await
        .unwrap();
    // Revoked: `keep` and the access token of the rotated pair. The rotated refresh token
    // stays until it expires, for reuse detection.
    assert_eq!((swept.access, swept.refresh), (2, 0));
    h.clock.advance(1201);
    let swept = portcullis::lifecycle::sweep_all(&h.store, h.clock_now(), 2, None)
        .await
        .unwrap();
    assert_eq!(
        swept.access,
        5 + 1,
        "five client_credentials tokens and the rotated pair's successor"
    );
    h.clock.advance(3600);
    let swept = portcullis::lifecycle::sweep_all(&h.store, h.clock_now(), 2, None)
        .await
        .unwrap();
    assert_eq!(
        swept.refresh, 3,
        "both refresh tokens of the first grant and the rotated pair's"
    );
    let live = h.store.live_tokens(h.clock_now()).await.unwrap();
    assert_eq!((live.access, live.refresh), (0, 0));
    h.shutdown().await;
}

#[tokio::test]
async fn background_sweeper_runs_and_reports() {
    let h = Harness::with(Options {
        extra: "cleanup: { interval_seconds: 1, batch_size: 10 }".into(),
        ..Options::default()
    })
    .await;
    let access = h.access_token("read").await;
    assert_eq!(
        h.get("/api/users", Some(&access)).await.status,
        StatusCode::OK
    );
    h.clock.advance(4000);
    // The sweep and the gauge update after it happen in the background: wait for both.
    let wanted = [
        r#"portcullis_tokens_swept_total{kind="access"} 1"#,
        r#"portcullis_tokens_swept_total{kind="refresh"} 1"#,
        r#"portcullis_store_live_tokens{kind="access"} 0"#,
        r#"portcullis_store_live_tokens{kind="refresh"} 0"#,
        // The expired token left the cache too, without being asked for again.
        "portcullis_token_cache_entries 0",
    ];
    common::eventually("the sweeper reports", || async {
        let m = h.metrics().await;
        wanted.iter().all(|w| m.contains(w)).then_some(())
    })
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn authorization_server_metadata() {
    let h = Harness::start().await;
    let r = h
        .send(
            Method::GET,
            "/.well-known/oauth-authorization-server",
            &[],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    let issuer = format!("http://{}", h.addr);
    assert_eq!(j["issuer"], issuer.as_str());
    assert_eq!(j["token_endpoint"], format!("{issuer}/o/token/"));
    assert_eq!(
        j["revocation_endpoint"],
        format!("{issuer}/o/revoke_token/")
    );
    assert_eq!(
        j["introspection_endpoint"],
        format!("{issuer}/o/introspect/")
    );
    assert_eq!(
        j["grant_types_supported"],
        serde_json::json!([
            "authorization_code",
            "password",
            "client_credentials",
            "refresh_token"
        ])
    );
    assert_eq!(
        j["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(
        j["introspection_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(
        j["scopes_supported"],
        serde_json::json!(["groups", "introspection", "read", "write"])
    );
    let post = h
        .send(
            Method::POST,
            "/.well-known/oauth-authorization-server",
            &[],
            b"",
        )
        .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);

    let configured = Harness::with(Options {
        extra_oauth: "  issuer: https://auth.example.com/".into(),
        ..Options::default()
    })
    .await;
    let j = configured
        .send(
            Method::GET,
            "/.well-known/oauth-authorization-server",
            &[],
            b"",
        )
        .await
        .json();
    assert_eq!(j["issuer"], "https://auth.example.com");
    assert_eq!(j["token_endpoint"], "https://auth.example.com/o/token/");
    h.shutdown().await;
    configured.shutdown().await;
}
