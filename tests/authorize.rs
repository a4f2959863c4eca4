//! The person-facing flow over HTTP (RFC 6749 §4.1, RFC 7636, RFC 9700): sign-in, consent,
//! the code's exchange, every error where it must be shown (a page, never a redirect, for an
//! unknown client or redirect URI; back to the client otherwise), consent memory, sessions,
//! CSRF, and the pages' security headers.

mod common;

use common::{
    CookieClient, Harness, Options, PASSWORD, REDIRECT_URI, TestClient, basic, pkce, query_param,
};
use http::StatusCode;
use portcullis::manage::{self, ClientSpec};
use portcullis::store::GrantType;

/// An authorization request's query.
fn authorize_url(client_id: &str, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", "read")
        .append_pair("state", "af0ifjsldkj")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    format!("/o/authorize/?{}", q.finish())
}

/// Signs in and approves the consent page; returns the redirect's Location.
async fn approve(b: &mut CookieClient, url: &str) -> String {
    let consent = b.get(url).await;
    if consent.status == StatusCode::FOUND {
        return consent.header("location").unwrap().to_owned();
    }
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.text());
    let mut form = common::hidden_fields(&consent.text(), "/o/authorize/");
    form.push(("allow".into(), "Authorize".into()));
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let answer = b.post("/o/authorize/", &pairs).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.text());
    answer.header("location").unwrap().to_owned()
}

async fn exchange(h: &Harness, client: &TestClient, code: &str, verifier: &str) -> common::Resp {
    h.token(
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ],
    )
    .await
}

#[tokio::test]
async fn sign_in_consent_code_and_token() {
    let h = Harness::start().await;
    let (verifier, challenge) = pkce();
    let url = authorize_url(&h.client.id, &challenge, &[]);
    let mut b = CookieClient::new(&h);

    // Not signed in: to the sign-in page, which comes back to the request.
    let first = b.get(&url).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    let to_login = first.header("location").unwrap().to_owned();
    assert!(to_login.starts_with("/o/login/?next="), "{to_login}");
    let signed = b.sign_in("alice", PASSWORD, &url).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.text());
    assert_eq!(signed.header("location"), Some(url.as_str()));
    let cookie = signed
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("portcullis_session="))
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/o/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "no TLS on this listener: {cookie}"
    );

    // The consent page: the application, each scope with its description, two buttons.
    let consent = b.get(&url).await;
    assert_eq!(consent.status, StatusCode::OK);
    let page = consent.text();
    assert!(page.contains("Authorize test client"), "{page}");
    assert!(page.contains("<strong>read</strong>: Read scope"), "{page}");
    assert!(page.contains("name=\"allow\"") && page.contains("name=\"deny\""));
    let csp = consent.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("form-action 'self' http://127.0.0.1"), "{csp}");
    assert_eq!(consent.header("x-frame-options"), Some("DENY"));
    assert_eq!(consent.header("cache-control"), Some("no-store"));

    let location = approve(&mut b, &url).await;
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    assert_eq!(
        query_param(&location, "state").as_deref(),
        Some("af0ifjsldkj")
    );
    assert!(query_param(&location, "iss").is_some());
    assert!(!location.contains("access_token"), "no token in a redirect");
    let code = query_param(&location, "code").unwrap();
    assert!(code.starts_with("pcac_"));

    let tokens = exchange(&h, &h.client, &code, &verifier).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    let access = common::field(&tokens.json(), "access_token");
    assert_eq!(tokens.json()["scope"], "read");
    let refresh = common::field(&tokens.json(), "refresh_token");
    let seen = h.get_ok("/api/users/1", Some(&access)).await;
    assert_eq!(seen["headers"]["x-auth-user"], "alice");

    // The refresh token joins the usual rotation.
    let rotated = h.refresh(&h.client, &refresh).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    let access2 = common::field(&rotated.json(), "access_token");

    // A second use of the code: refused, and everything issued from it revoked.
    let again = exchange(&h, &h.client, &code, &verifier).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.json()["error"], "invalid_grant");
    for token in [&access, &access2] {
        assert_eq!(
            h.get("/api/users/1", Some(token)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let m = h.metrics().await;
    assert!(
        m.contains(r#"portcullis_authorizations_total{outcome="approved"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"portcullis_sign_ins_total{outcome="signed_in"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"cause="code_reuse""#), "{m}");
    h.shutdown().await;
}

#[tokio::test]
async fn codes_are_bound_to_client_redirect_verifier_and_time() {
    let h = Harness::start().await;
    let other = h.new_client(&GrantType::ALL, &["read"]).await;
    let mut b = CookieClient::new(&h);
    b.sign_in("alice", PASSWORD, "/o/applications/").await;
    let code_for = async |b: &mut CookieClient| {
        let (verifier, challenge) = pkce();
        let location = approve(b, &authorize_url(&h.client.id, &challenge, &[])).await;
        (query_param(&location, "code").unwrap(), verifier)
    };
    let (code, verifier) = code_for(&mut b).await;
    let (other_verifier, _) = pkce();
    let refused: Vec<(&TestClient, Vec<(&str, &str)>)> = vec![
        (
            &other,
            vec![("code_verifier", &verifier), ("redirect_uri", REDIRECT_URI)],
        ),
        (
            &h.client,
            vec![
                ("code_verifier", &other_verifier),
                ("redirect_uri", REDIRECT_URI),
            ],
        ),
        (
            &h.client,
            vec![
                ("code_verifier", &verifier),
                ("redirect_uri", "http://127.0.0.1/other"),
            ],
        ),
        (
            &h.client,
            vec![("code_verifier", "short"), ("redirect_uri", REDIRECT_URI)],
        ),
    ];
    for (client, extra) in refused {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
        ];
        form.extend(extra);
        let r = h.token(client, &form).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{form:?}: {}", r.text());
        assert_eq!(r.json()["error"], "invalid_grant");
    }
    let no_verifier = h
        .token(
            &h.client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
            ],
        )
        .await;
    assert_eq!(no_verifier.json()["error"], "invalid_request");
    // None of those used the code: the right request still works.
    assert_eq!(
        exchange(&h, &h.client, &code, &verifier).await.status,
        StatusCode::OK
    );

    // A code lives oauth.authorization_code_expire_seconds (60).
    let (code, verifier) = code_for(&mut b).await;
    h.clock.advance(61);
    let late = exchange(&h, &h.client, &code, &verifier).await;
    assert_eq!(late.json()["error"], "invalid_grant");
    h.shutdown().await;
}

#[tokio::test]
async fn errors_the_client_cannot_be_trusted_with_stay_on_a_page() {
    let h = Harness::start().await;
    let (_, challenge) = pkce();
    let mut b = CookieClient::new(&h);
    b.sign_in("alice", PASSWORD, "/o/applications/").await;
    let mut evil = authorize_url(&h.client.id, &challenge, &[]);
    evil = evil.replace(
        &form_urlencoded::byte_serialize(REDIRECT_URI.as_bytes()).collect::<String>(),
        "https%3A%2F%2Fevil.example%2Fcb",
    );
    assert!(evil.contains("evil.example"));
    let pages = [
        authorize_url("no-such-client", &challenge, &[]),
        evil,
        format!("/o/authorize/?response_type=code&client_id={}", h.client.id),
        format!(
            "{}&state=again",
            authorize_url(&h.client.id, &challenge, &[])
        ),
    ];
    for url in pages {
        let r = b.get(&url).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.text());
        assert!(r.header("location").is_none(), "{url} redirected");
        assert!(
            r.text().contains("<h1>Authorization request refused</h1>"),
            "{}",
            r.text()
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn other_errors_go_back_to_the_client_with_the_state() {
    let h = Harness::start().await;
    let (_, challenge) = pkce();
    let mut b = CookieClient::new(&h);
    b.sign_in("alice", PASSWORD, "/o/applications/").await;
    let password_only = h.new_client(&[GrantType::Password], &["read"]).await;
    let cases: Vec<(String, &str)> = vec![
        (
            authorize_url(&h.client.id, &challenge, &[])
                .replace("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
        (authorize_url(&h.client.id, "", &[]), "invalid_request"),
        (
            authorize_url(&h.client.id, &challenge, &[]).replace("S256", "plain"),
            "invalid_request",
        ),
        (
            authorize_url(&h.client.id, &challenge, &[]).replace("code_challenge_method=S256", ""),
            "invalid_request",
        ),
        (
            authorize_url(&h.client.id, "not-a-challenge", &[]),
            "invalid_request",
        ),
        (
            authorize_url(&h.client.id, &challenge, &[]).replace("scope=read", "scope=admin"),
            "invalid_scope",
        ),
        (
            authorize_url(&h.client.id, &challenge, &[]).replace("scope=read", "scope=groups"),
            "invalid_scope",
        ),
    ];
    for (url, error) in cases {
        let r = b.get(&url).await;
        assert_eq!(r.status, StatusCode::FOUND, "{url}: {}", r.text());
        let location = r.header("location").unwrap();
        assert!(location.starts_with(REDIRECT_URI), "{location}");
        assert_eq!(
            query_param(location, "error").as_deref(),
            Some(error),
            "{url}"
        );
        assert_eq!(
            query_param(location, "state").as_deref(),
            Some("af0ifjsldkj")
        );
        assert!(query_param(location, "code").is_none());
    }
    // A client registered without authorization_code has no redirect URI to go back to.
    let r = b
        .get(&authorize_url(&password_only.id, &challenge, &[]))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Deny: access_denied, the state, no code.
    let url = authorize_url(&h.client.id, &challenge, &[]);
    let consent = b.get(&url).await;
    let form = common::hidden_fields(&consent.text(), "/o/authorize/");
    let mut pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.push(("deny", "Cancel"));
    let denied = b.post("/o/authorize/", &pairs).await;
    assert_eq!(denied.status, StatusCode::FOUND);
    let location = denied.header("location").unwrap();
    assert_eq!(
        query_param(location, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(
        query_param(location, "state").as_deref(),
        Some("af0ifjsldkj")
    );
    assert!(query_param(location, "code").is_none());
    h.shutdown().await;
}

#[tokio::test]
async fn consent_is_remembered_or_skipped() {
    let h = Harness::start().await;
    let (_, challenge) = pkce();
    let mut b = CookieClient::new(&h);
    b.sign_in("alice", PASSWORD, "/o/applications/").await;
    let url = authorize_url(&h.client.id, &challenge, &[]);
    approve(&mut b, &url).await;
    // The same scopes again: no consent page, straight back with a code.
    let again = b.get(&url).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.text());
    assert!(query_param(again.header("location").unwrap(), "code").is_some());
    // More scopes than granted: asked again.
    let wider = b.get(&url.replace("scope=read", "scope=read+write")).await;
    assert_eq!(wider.status, StatusCode::OK);
    assert!(wider.text().contains("Authorize test client"));

    // A first-party client is never asked.
    let spec = ClientSpec {
        name: "first party".into(),
        grants: vec![GrantType::AuthorizationCode],
        scopes: vec!["read".into()],
        redirect_uris: vec![REDIRECT_URI.into()],
        skip_consent: true,
        ..ClientSpec::default()
    };
    let first_party = manage::add_client(&h.store, &h.config.oauth, spec)
        .await
        .unwrap();
    let r = b
        .get(&authorize_url(
            &first_party.client.client_id,
            &challenge,
            &[],
        ))
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    h.shutdown().await;

    // approval_prompt: force asks every time.
    let h = Harness::with(Options {
        extra_oauth: "  approval_prompt: force".into(),
        ..Options::default()
    })
    .await;
    let mut b = CookieClient::new(&h);
    b.sign_in("alice", PASSWORD, "/o/applications/").await;
    let url = authorize_url(&h.client.id, &challenge, &[]);
    approve(&mut b, &url).await;
    assert_eq!(b.get(&url).await.status, StatusCode::OK, "asked again");
    h.shutdown().await;
}

#[tokio::test]
async fn public_clients_exchange_with_their_id_and_the_verifier() {
    let h = Harness::start().await;
    let spec = ClientSpec {
        name: "spa".into(),
        grants: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        scopes: vec!["read".into()],
        redirect_uris: vec![REDIRECT_URI.into()],
        public: true,
        ..ClientSpec::default()
    };
    let spa = manage::add_client(&h.store, &h.config.oauth, spec)
        .await
        .unwrap();
    assert!(spa.secret.is_none());
    let id = spa.client.client_id;
    let (verifier, challenge) = pkce();
    let mut b = CookieClient::new(&h);
    b.sign_in("alice", PASSWORD, "/o/applications/").await;
    let location = approve(&mut b, &authorize_url(&id, &challenge, &[])).await;
    let code = query_param(&location, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", id.as_str()),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", verifier.as_str()),
    ];
    // A public client presenting a secret is refused (it has none).
    let with_secret = h
        .token_raw(Some(&basic(&id, "pccs_made-up")), &form[..1])
        .await;
    assert_eq!(with_secret.status, StatusCode::UNAUTHORIZED);
    let r = h.token_raw(None, &form).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let refresh = common::field(&r.json(), "refresh_token");
    let refreshed = h
        .token_raw(
            None,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &id),
                ("refresh_token", &refresh),
            ],
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    // A public client cannot introspect.
    let intro = h
        .send(
            http::Method::POST,
            "/o/introspect/",
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("client_id={id}&token=x").as_bytes(),
        )
        .await;
    assert_eq!(intro.status, StatusCode::UNAUTHORIZED);
    h.shutdown().await;
}

#[tokio::test]
async fn sign_in_is_csrf_checked_throttled_and_says_nothing_about_users() {
    let h = Harness::with(Options {
        extra_oauth: "  rate_limits: { failures_before_backoff: 3 }".into(),
        ..Options::default()
    })
    .await;
    let mut b = CookieClient::new(&h);
    // No CSRF cookie: refused.
    let r = b
        .post(
            "/o/login/",
            &[("csrf", "x"), ("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!b.jar.contains_key("portcullis_session"));
    // Unknown user and wrong password look alike.
    let unknown = b.sign_in("nobody", "whatever", "/o/applications/").await;
    let wrong = b.sign_in("alice", "wrong", "/o/applications/").await;
    b.sign_in("alice", "wrong again", "/o/applications/").await;
    b.sign_in("alice", "and again", "/o/applications/").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    for r in [&unknown, &wrong] {
        assert!(
            r.text().contains("Invalid username or password."),
            "{}",
            r.text()
        );
    }
    // Backed off after three failures (per user and address), then held even with the
    // right password.
    let held = b.sign_in("alice", PASSWORD, "/o/applications/").await;
    assert_eq!(
        held.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        held.text()
    );
    assert!(held.header("retry-after").is_some());
    // Passwords only in POST bodies: a GET with one signs nobody in.
    let get = b.get("/o/login/?username=alice&password=x").await;
    assert_eq!(get.status, StatusCode::OK);
    assert!(!b.jar.contains_key("portcullis_session"));
    h.shutdown().await;
}

#[tokio::test]
async fn forms_need_their_csrf_token_and_sign_out_ends_the_session() {
    let h = Harness::start().await;
    let (_, challenge) = pkce();
    let mut b = CookieClient::new(&h);
    b.sign_in("alice", PASSWORD, "/o/applications/").await;
    let url = authorize_url(&h.client.id, &challenge, &[]);
    let consent = b.get(&url).await;
    let mut form: Vec<(String, String)> = common::hidden_fields(&consent.text(), "/o/authorize/")
        .into_iter()
        .filter(|(k, _)| k != "csrf")
        .collect();
    form.push(("allow".into(), "Authorize".into()));
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let forged = b.post("/o/authorize/", &pairs).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.text());
    assert!(forged.header("location").is_none());

    let csrf = common::hidden(&consent.text(), "csrf").unwrap();
    let out = b.post("/o/logout/", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(!b.jar.contains_key("portcullis_session"));
    // The old session id no longer works either.
    assert_eq!(b.get(&url).await.status, StatusCode::SEE_OTHER);
    h.shutdown().await;
}

#[tokio::test]
async fn discovery_lists_the_authorization_endpoint() {
    let h = Harness::start().await;
    let m = h
        .get("/.well-known/oauth-authorization-server", None)
        .await
        .json();
    let issuer = m["issuer"].as_str().unwrap();
    assert_eq!(
        m["authorization_endpoint"],
        format!("{issuer}/o/authorize/")
    );
    assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        m["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert!(
        m["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("authorization_code"))
    );
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    h.shutdown().await;
}

/// The registration form of `/o/applications/register/`, filled in.
fn registration<'a>(
    csrf: &'a str,
    name: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("csrf", csrf),
        ("name", name),
        ("client_type", "confidential"),
        ("grant_authorization_code", "on"),
        ("grant_refresh_token", "on"),
        ("redirect_uris", REDIRECT_URI),
        ("scope_read", "on"),
    ];
    form.extend_from_slice(extra);
    form
}

#[tokio::test]
async fn users_register_and_manage_their_own_applications() {
    let h = Harness::start().await;
    h.add_user("bob").await;
    let mut alice = CookieClient::new(&h);
    alice.sign_in("alice", PASSWORD, "/o/applications/").await;
    let page = alice.get("/o/applications/register/").await;
    assert_eq!(page.status, StatusCode::OK);
    for label in [
        "<label for=\"name\">",
        "<label for=\"redirect_uris\">",
        "<label for=\"scope-read\">",
    ] {
        assert!(page.text().contains(label), "{label}");
    }
    assert!(
        !page.text().contains("skip_consent"),
        "not offered to a non-administrator"
    );
    let csrf = common::hidden(&page.text(), "csrf").unwrap();

    // Invalid input comes back with the reason, nothing registered.
    let bad = alice
        .post(
            "/o/applications/register/",
            &registration(&csrf, "Bad", &[])
                .into_iter()
                .map(|(k, v)| {
                    if k == "redirect_uris" {
                        (k, "http://evil.example/cb")
                    } else {
                        (k, v)
                    }
                })
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.text().contains("https, or http on a loopback address"),
        "{}",
        bad.text()
    );

    // Registered: the secret is shown once, on this page only; skip_consent is ignored.
    let made = alice
        .post(
            "/o/applications/register/",
            &registration(&csrf, "Alice's <app>", &[("skip_consent", "on")]),
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.text());
    let html = made.text();
    assert!(
        html.contains("Alice&#39;s &#60;app&#62;") || html.contains("Alice&#x27;s &lt;app&gt;"),
        "escaped: {html}"
    );
    let secret = common::input_value(&html, "client_secret").unwrap();
    let client_id = common::code_text(&html, "client_id").unwrap();
    let stored = h.store.client(&client_id).await.unwrap().unwrap();
    assert_eq!(stored.owner.as_deref(), Some("alice"));
    assert!(
        !stored.skip_consent,
        "only administrators make applications first-party"
    );
    assert!(secret.starts_with("pccs_"), "{html}");
    let detail = alice.get(&format!("/o/applications/{client_id}/")).await;
    assert!(!detail.text().contains(&secret), "shown once");
    // The secret works at the token endpoint.
    let app = TestClient {
        id: client_id.clone(),
        secret,
    };
    let (verifier, challenge) = pkce();
    let location = approve(&mut alice, &authorize_url(&client_id, &challenge, &[])).await;
    let code = query_param(&location, "code").unwrap();
    assert_eq!(
        exchange(&h, &app, &code, &verifier).await.status,
        StatusCode::OK
    );

    // Listed for alice, invisible to bob (not found, not forbidden).
    assert!(
        alice
            .get("/o/applications/")
            .await
            .text()
            .contains(&client_id)
    );
    let mut bob = CookieClient::new(&h);
    bob.sign_in("bob", PASSWORD, "/o/applications/").await;
    assert!(
        !bob.get("/o/applications/")
            .await
            .text()
            .contains(&client_id)
    );
    assert_eq!(
        bob.get(&format!("/o/applications/{client_id}/"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let bob_csrf = common::hidden(&bob.get("/o/applications/").await.text(), "csrf").unwrap();
    let stolen = bob
        .post(
            &format!("/o/applications/{client_id}/delete/"),
            &[("csrf", &bob_csrf)],
        )
        .await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND);

    // Edited, then deleted by its owner.
    let edited = alice
        .post(
            &format!("/o/applications/{client_id}/update/"),
            &registration(&csrf, "Renamed", &[]),
        )
        .await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER, "{}", edited.text());
    assert_eq!(
        h.store.client(&client_id).await.unwrap().unwrap().name,
        "Renamed"
    );
    let confirm = alice
        .get(&format!("/o/applications/{client_id}/delete/"))
        .await;
    assert!(confirm.text().contains("<h1>Delete Renamed?</h1>"));
    let gone = alice
        .post(
            &format!("/o/applications/{client_id}/delete/"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER);
    assert!(h.store.client(&client_id).await.unwrap().is_none());
    h.shutdown().await;
}

#[tokio::test]
async fn administrators_see_every_application() {
    let h = Harness::start().await;
    let hasher = portcullis::crypto::PasswordHasher::new(1).unwrap();
    manage::add_user_as(&h.store, &hasher, "root", PASSWORD, true)
        .await
        .unwrap();
    let mut root = CookieClient::new(&h);
    root.sign_in("root", PASSWORD, "/o/applications/").await;
    let list = root.get("/o/applications/").await.text();
    assert!(list.contains("<h1>All applications</h1>"), "{list}");
    assert!(
        list.contains(&h.client.id),
        "the command line's clients too"
    );
    let form = root.get("/o/applications/register/").await.text();
    assert!(form.contains("name=\"skip_consent\""));
    let csrf = common::hidden(&form, "csrf").unwrap();
    let made = root
        .post(
            "/o/applications/register/",
            &registration(&csrf, "First party", &[("skip_consent", "on")]),
        )
        .await;
    let client_id = common::code_text(&made.text(), "client_id").unwrap();
    assert!(
        h.store
            .client(&client_id)
            .await
            .unwrap()
            .unwrap()
            .skip_consent
    );
    h.shutdown().await;
}

#[tokio::test]
async fn revoking_an_authorized_application_ends_its_access_at_once() {
    let h = Harness::start().await;
    let mut b = CookieClient::new(&h);
    b.sign_in("alice", PASSWORD, "/o/applications/").await;
    let (verifier, challenge) = pkce();
    let location = approve(&mut b, &authorize_url(&h.client.id, &challenge, &[])).await;
    let code = query_param(&location, "code").unwrap();
    let tokens = exchange(&h, &h.client, &code, &verifier).await;
    let access = common::field(&tokens.json(), "access_token");
    h.get_ok("/api/users/1", Some(&access)).await;
    let page = b.get("/o/authorized_tokens/").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(
        html.contains("test client") && html.contains("<td>read</td>"),
        "{html}"
    );
    let csrf = common::hidden(&html, "csrf").unwrap();
    let revoked = b
        .post(
            &format!("/o/authorized_tokens/{}/delete/", h.client.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    // The very next API call fails (the cache was invalidated), and consent is asked again.
    assert_eq!(
        h.get("/api/users/1", Some(&access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        b.get("/o/authorized_tokens/")
            .await
            .text()
            .contains("No application holds a live token")
    );
    let (_, challenge) = pkce();
    assert_eq!(
        b.get(&authorize_url(&h.client.id, &challenge, &[]))
            .await
            .status,
        StatusCode::OK
    );
    // Someone else's form cannot do it: the CSRF token is checked.
    let refused = b
        .post(
            &format!("/o/authorized_tokens/{}/delete/", h.client.id),
            &[("csrf", "forged")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    h.shutdown().await;
}
