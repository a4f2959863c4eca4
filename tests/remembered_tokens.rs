//! A client connection remembers the last token it presented and the cache's answer for it
//! (`store::cache::LastToken`). These tests hold one keep-alive connection and check that
//! what it remembers is never the answer for another token, nor outlives a revocation made
//! elsewhere or the token's expiry.

mod common;

use bytes::Bytes;
use common::{Harness, Resp};
use http::StatusCode;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;

async fn get_with(conn: &mut SendRequest<Full<Bytes>>, token: &str) -> Resp {
    common::get_on(conn, "/api/users/1", Some(token)).await
}

fn assert_refused(r: &Resp, why: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}: {}", r.text());
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.contains("error=\"invalid_token\"")),
        "{why}: {:?}",
        r.header("www-authenticate")
    );
}

#[tokio::test]
async fn each_request_on_a_connection_is_answered_for_its_own_token() {
    let h = Harness::start().await;
    let alice = h.access_token("read").await;
    let issued = h
        .token(
            &h.client,
            &[("grant_type", "client_credentials"), ("scope", "read")],
        )
        .await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.text());
    let service = common::field(&issued.json(), "access_token");
    // Same length and prefix as alice's token, one character changed.
    let mut forged = alice.clone();
    let last = if alice.ends_with('A') { "B" } else { "A" };
    forged.replace_range(alice.len() - 1.., last);

    let mut conn = common::one_connection(h.addr).await;
    for (token, user, why) in [
        (&alice, Some("alice"), "alice's token"),
        (&alice, Some("alice"), "alice's token again, as remembered"),
        (
            &service,
            None,
            "the client's own token on the same connection",
        ),
        (&alice, Some("alice"), "alice's token after another"),
    ] {
        let r = get_with(&mut conn, token).await;
        assert_eq!(r.status, StatusCode::OK, "{why}: {}", r.text());
        assert_eq!(r.upstream_saw("x-auth-user").as_deref(), user, "{why}");
    }
    assert_refused(
        &get_with(&mut conn, &forged).await,
        "a token that differs from the remembered one in its last character",
    );
    let r = get_with(&mut conn, &alice).await;
    assert_eq!(r.status, StatusCode::OK, "a refusal is not remembered");
    h.shutdown().await;
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_revoked_elsewhere_or_expired() {
    let h = Harness::start().await;
    let alice = h.access_token("read").await;
    let other = h.access_token("read").await;
    let mut conn = common::one_connection(h.addr).await;
    for _ in 0..2 {
        let r = get_with(&mut conn, &alice).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }

    // Revoked over another connection: the next request on this one is refused.
    let revoked = h.revoke(&h.client, &alice).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    assert_refused(
        &get_with(&mut conn, &alice).await,
        "revoked while remembered",
    );

    // Expired while remembered (the clock moves past its lifetime, nothing else happens).
    for _ in 0..2 {
        let r = get_with(&mut conn, &other).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    h.clock.advance(1_200);
    assert_refused(
        &get_with(&mut conn, &other).await,
        "expired while remembered",
    );
    h.shutdown().await;
}
