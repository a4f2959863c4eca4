//! The pages in a real headless Chromium, driven over WebDriver (chromedriver, fantoccini):
//! sign in, consent and land on the redirect URI with a code that exchanges for a working
//! token; deny; register an application; revoke an authorization and see the next API call
//! fail. Each page is saved as a screenshot under `target/screenshots/` for a person to look
//! at. Without Chromium and chromedriver (Debian's `chromium`, `chromium-driver`) the tests
//! skip with a message — except under CI (`CI` set), where a missing browser is a failure.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::{Harness, PASSWORD, pkce, query_param};
use fantoccini::{Client, ClientBuilder, Locator};
use http::StatusCode;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver and the browser session it drives; both end when this is dropped.
struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
    /// One browser at a time: on a two-CPU machine several Chromiums starting together can
    /// miss chromedriver's start-up deadline.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A headless Chromium, or `None` (with a message) where none is installed.
async fn browser() -> Option<Browser> {
    let installed =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and chromium-driver (.ci/run does)"
        );
        common::notice(&format!(
            "skipping the browser tests: {CHROMIUM} or {CHROMEDRIVER} is not installed \
             (apt-get install chromium chromium-driver)"
        ));
        return None;
    }
    let turn = ONE_AT_A_TIME.lock().await;
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    common::eventually("chromedriver listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1000,800",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    // A session starts Chromium; a start that fails under load is tried again, twice.
    let mut attempts = 0;
    let client = loop {
        attempts += 1;
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) if attempts < 3 => {
                common::notice(&format!("a WebDriver session failed ({e}); trying again"))
            }
            Err(e) => panic!("no WebDriver session after {attempts} attempts: {e}"),
        }
    };
    Some(Browser {
        client: Some(client),
        driver,
        _profile: profile,
        _turn: turn,
    })
}

impl Browser {
    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Saves what the browser shows as `target/screenshots/NAME.png`.
    async fn screenshot(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.c().screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Waits until the page's heading satisfies `want` (a click's navigation may still be
    /// under way: the previous page's heading does not count); returns it.
    async fn heading_where(&self, want: impl Fn(&str) -> bool) -> String {
        let c = self.c();
        common::eventually("the expected page", || async {
            let text = c.find(Locator::Css("h1")).await.ok()?.text().await.ok()?;
            want(&text).then_some(text)
        })
        .await
    }

    async fn heading_is(&self, heading: &str) {
        self.heading_where(|h| h == heading).await;
    }

    async fn fill(&self, css: &str, text: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
    }

    async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Signs in on the sign-in page the browser is showing.
    async fn sign_in(&self, user: &str, password: &str) {
        self.heading_is("Sign in").await;
        self.fill("#username", user).await;
        self.fill("#password", password).await;
        self.click("button[type=submit]").await;
    }

    /// Waits until the browser is at a URL starting with `prefix`; returns it.
    async fn at(&self, prefix: &str) -> String {
        let c = self.c();
        common::eventually(&format!("the browser reaches {prefix}"), || async {
            let url = c.current_url().await.ok()?.to_string();
            url.starts_with(prefix).then_some(url)
        })
        .await
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

/// The authorization URL for the harness's client, sending the browser back to the test
/// upstream (a loopback redirect URI: its port is the RFC 8252 exemption).
fn authorize(h: &Harness, challenge: &str) -> (String, String) {
    let redirect = format!("http://127.0.0.1:{}/callback", h.upstream.addr.port());
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &h.client.id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", "read")
        .append_pair("state", "browser-state")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    (h.url(&format!("/o/authorize/?{query}")), redirect)
}

/// Signs in, approves, and exchanges the code: the access token.
async fn authorized_token(h: &Harness, b: &Browser, shots: bool) -> String {
    let (verifier, challenge) = pkce();
    let (url, redirect) = authorize(h, &challenge);
    b.c().goto(&url).await.unwrap();
    if shots {
        b.heading_is("Sign in").await;
        b.screenshot("1-sign-in").await;
    }
    b.sign_in("alice", PASSWORD).await;
    b.heading_where(|h| h.starts_with("Authorize test client"))
        .await;
    if shots {
        b.screenshot("2-consent").await;
    }
    b.click("button[name=allow]").await;
    let landed = b.at(&redirect).await;
    if shots {
        b.screenshot("3-redirect-uri").await;
    }
    assert_eq!(
        query_param(&landed, "state").as_deref(),
        Some("browser-state")
    );
    let code = query_param(&landed, "code").expect("a code");
    let tokens = h
        .token(
            &h.client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    common::field(&tokens.json(), "access_token")
}

#[tokio::test]
async fn sign_in_consent_and_a_working_token() {
    let Some(b) = browser().await else { return };
    let h = Harness::start().await;
    let access = authorized_token(&h, &b, true).await;
    let seen = h.get_ok("/api/users/1", Some(&access)).await;
    assert_eq!(seen["headers"]["x-auth-user"], "alice");
    b.close().await;
    h.shutdown().await;
}

#[tokio::test]
async fn deny_sends_access_denied_back() {
    let Some(b) = browser().await else { return };
    let h = Harness::start().await;
    let (_, challenge) = pkce();
    let (url, redirect) = authorize(&h, &challenge);
    b.c().goto(&url).await.unwrap();
    b.sign_in("alice", PASSWORD).await;
    b.heading_where(|h| h.starts_with("Authorize")).await;
    b.click("button[name=deny]").await;
    let landed = b.at(&redirect).await;
    assert_eq!(
        query_param(&landed, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(
        query_param(&landed, "state").as_deref(),
        Some("browser-state")
    );
    assert!(query_param(&landed, "code").is_none());
    b.close().await;
    h.shutdown().await;
}

#[tokio::test]
async fn an_application_registered_in_the_browser() {
    let Some(b) = browser().await else { return };
    let h = Harness::start().await;
    b.c()
        .goto(&h.url("/o/applications/register/"))
        .await
        .unwrap();
    b.sign_in("alice", PASSWORD).await;
    b.heading_is("Register an application").await;
    b.screenshot("4-register").await;
    b.fill("#name", "Browser app").await;
    b.click("#grant-authorization_code").await;
    b.click("#grant-refresh_token").await;
    b.fill("#redirect_uris", "https://app.example/callback")
        .await;
    b.click("#scope-read").await;
    // `main`: the header's sign-out form has a submit button too.
    b.click("main button[type=submit]").await;
    b.heading_is("Browser app").await;
    b.screenshot("5-application-created").await;
    let c = b.c();
    let client_id = c
        .find(Locator::Css("#client_id"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let secret = c
        .find(Locator::Css("#client_secret"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    assert!(secret.starts_with("pccs_"));
    let stored = h
        .store
        .client(&client_id)
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(
        stored.redirect_uris,
        vec!["https://app.example/callback".to_owned()]
    );
    assert_eq!(stored.owner.as_deref(), Some("alice"));
    b.c().goto(&h.url("/o/applications/")).await.unwrap();
    b.heading_is("Your applications").await;
    b.screenshot("6-applications").await;
    b.close().await;
    h.shutdown().await;
}

#[tokio::test]
async fn revoked_in_the_browser_the_next_call_fails() {
    let Some(b) = browser().await else { return };
    let h = Harness::start().await;
    let access = authorized_token(&h, &b, false).await;
    h.get_ok("/api/users/1", Some(&access)).await;
    b.c().goto(&h.url("/o/authorized_tokens/")).await.unwrap();
    b.heading_is("Applications you have authorized").await;
    b.screenshot("7-authorized-tokens").await;
    b.click("button[aria-label^='Revoke test client']").await;
    common::eventually("the grant is gone from the page", || async {
        let html = b.c().source().await.ok()?;
        html.contains("No application holds a live token")
            .then_some(())
    })
    .await;
    assert_eq!(
        h.get("/api/users/1", Some(&access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    b.close().await;
    h.shutdown().await;
}
