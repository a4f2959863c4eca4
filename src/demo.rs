//! `portcullis demo`: the whole flow on one machine with nothing else installed. Starts a
//! small sample legacy API (no auth of its own) on each upstream's loopback address, a demo
//! user and client, the gateway itself, and prints the curl commands of the flow. For the
//! browser flow it registers a public client whose redirect URI is the sample API's
//! `/callback` page, which exchanges the code (PKCE) and shows the tokens and a protected call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::crypto::{PasswordHasher, generate_secret};
use crate::http::{Body, json_response};
use crate::listener::{ConnectionLimits, serve};
use crate::manage::{self, ManageError};
use crate::store::{GrantType, SharedStore};

pub const DEMO_USER: &str = "demo";
pub const DEMO_CLIENT: &str = "demo";

/// The sample legacy API: answers every request with JSON describing what it received
/// (method, path, query, headers, body size), so the effect of the gateway is visible.
pub async fn sample_api(listener: TcpListener, shutdown: watch::Receiver<bool>) {
    sample_api_with_tls(listener, None, shutdown).await
}

/// The sample API over TLS (tests use it as an HTTPS upstream).
pub async fn sample_api_with_tls(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    serve(
        listener,
        tls,
        ConnectionLimits::internal(1024),
        shutdown,
        |_| echo,
    )
    .await;
}

async fn echo(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|prev| {
                prev.push_str(", ");
                prev.push_str(&v);
            })
            .or_insert(v);
    }
    let body_bytes = match body.collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "unreadable body"}),
            );
        }
    };
    json_response(
        StatusCode::OK,
        &json!({
            "service": "sample legacy API",
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body_bytes": body_bytes,
        }),
    )
}

/// Credentials the demo created, as printed.
#[derive(Debug)]
pub struct DemoSetup {
    pub client_id: String,
    pub client_secret: String,
    pub password: String,
}

/// The public client of the browser flow, and what its callback page needs to finish it.
#[derive(Debug, Clone)]
pub struct BrowserClient {
    pub client_id: String,
    /// The sample API's `/callback`.
    pub redirect_uri: String,
    /// The PKCE verifier of [`BrowserClient::challenge`]; only the callback page knows it.
    verifier: String,
    challenge: String,
}

pub const DEMO_BROWSER_CLIENT: &str = "demo browser app";

/// Registers (afresh) the public client of the browser flow, with a PKCE pair.
async fn provision_browser(
    store: &SharedStore,
    config: &Config,
    api: SocketAddr,
) -> anyhow::Result<BrowserClient> {
    use base64::Engine as _;
    use sha2::Digest as _;
    for c in store.clients().await? {
        if c.name == DEMO_BROWSER_CLIENT {
            manage::remove_client(store, &c.client_id).await?;
        }
    }
    let redirect_uri = format!("http://{api}/callback");
    let spec = manage::ClientSpec {
        name: DEMO_BROWSER_CLIENT.into(),
        grants: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        scopes: config.oauth.scopes.keys().cloned().collect(),
        redirect_uris: vec![redirect_uri.clone()],
        public: true,
        ..manage::ClientSpec::default()
    };
    let new = manage::add_client(store, &config.oauth, spec).await?;
    let verifier = generate_secret("demo-verifier-");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    Ok(BrowserClient {
        client_id: new.client.client_id,
        redirect_uri,
        verifier,
        challenge,
    })
}

impl BrowserClient {
    /// The URL to open in a browser to start the flow.
    pub fn authorize_url(&self, gateway: SocketAddr) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", "read")
            .append_pair("state", "demo")
            .append_pair("code_challenge", &self.challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        format!("http://{gateway}/o/authorize/?{query}")
    }
}

/// What the callback page needs once the gateway runs.
struct Callback {
    client: BrowserClient,
    gateway: SocketAddr,
}

#[derive(askama::Template)]
#[template(path = "demo_callback.html")]
struct CallbackPage<'a> {
    heading: &'a str,
    summary: &'a str,
    tokens: &'a str,
    api: &'a str,
}

/// The sample API's `/callback`: exchanges the code with the verifier, calls the API through
/// the gateway with the access token, and shows both (a demo shows its tokens; a real client
/// would keep them).
async fn callback(req: Request<Incoming>, cb: &Callback) -> Response<Body> {
    let param = |name: &str| {
        req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        })
    };
    let (heading, summary, tokens, api) = match (param("code"), param("error")) {
        (Some(code), _) => {
            let http =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "authorization_code")
                .append_pair("client_id", &cb.client.client_id)
                .append_pair("code", &code)
                .append_pair("redirect_uri", &cb.client.redirect_uri)
                .append_pair("code_verifier", &cb.client.verifier)
                .finish();
            let exchanged = async {
                let req = Request::post(format!("http://{}/o/token/", cb.gateway))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(http_body_util::Full::new(bytes::Bytes::from(form)))
                    .ok()?;
                let body = http
                    .request(req)
                    .await
                    .ok()?
                    .into_body()
                    .collect()
                    .await
                    .ok()?;
                serde_json::from_slice::<serde_json::Value>(&body.to_bytes()).ok()
            }
            .await
            .unwrap_or(json!({"error": "the gateway did not answer"}));
            let api = match exchanged["access_token"].as_str() {
                Some(access) => async {
                    let req = Request::get(format!("http://{}/api/users/1", cb.gateway))
                        .header("authorization", format!("Bearer {access}"))
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .ok()?;
                    let resp = http.request(req).await.ok()?;
                    let status = resp.status();
                    let body = resp.into_body().collect().await.ok()?.to_bytes();
                    Some(format!("{status}\n{}", String::from_utf8_lossy(&body)))
                }
                .await
                .unwrap_or_else(|| "the call failed".into()),
                None => "no access token: nothing to call with".into(),
            };
            (
                "Signed in through Portcullis",
                "The gateway sent your browser here with an authorization code. This page exchanged it for tokens (with the PKCE verifier only it knows) and called the legacy API with the access token.",
                serde_json::to_string_pretty(&exchanged).unwrap_or_default(),
                api,
            )
        }
        (None, Some(error)) => (
            "The authorization was not given",
            "The gateway sent your browser back with an error instead of a code.",
            format!("error={error}"),
            "nothing was called".to_owned(),
        ),
        (None, None) => (
            "Nothing to exchange",
            "Open the authorization URL the demo printed to start the browser flow.",
            String::new(),
            String::new(),
        ),
    };
    let page = CallbackPage {
        heading,
        summary,
        tokens: &tokens,
        api: &api,
    };
    let mut resp = Response::new(crate::http::full(
        askama::Template::render(&page).unwrap_or_default(),
    ));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// Creates (or resets) the demo user and registers a fresh demo client with every scope.
pub async fn provision(store: &SharedStore, config: &Config) -> anyhow::Result<DemoSetup> {
    let hasher = PasswordHasher::new(1)?;
    let password = generate_secret("")[..20].to_owned();
    match manage::add_user(store, &hasher, DEMO_USER, &password).await {
        Ok(()) => {}
        Err(ManageError::Store(crate::store::StoreError::Conflict(_))) => {
            manage::set_password(store, &hasher, DEMO_USER, &password).await?
        }
        Err(e) => return Err(e.into()),
    }
    for c in store.clients().await? {
        if c.name == DEMO_CLIENT {
            manage::remove_client(store, &c.client_id).await?;
        }
    }
    let spec = manage::ClientSpec {
        name: DEMO_CLIENT.into(),
        grants: vec![
            GrantType::Password,
            GrantType::ClientCredentials,
            GrantType::RefreshToken,
        ],
        scopes: config.oauth.scopes.keys().cloned().collect(),
        ..manage::ClientSpec::default()
    };
    let new = manage::add_client(store, &config.oauth, spec).await?;
    Ok(DemoSetup {
        client_id: new.client.client_id,
        client_secret: new.secret.unwrap_or_default(),
        password,
    })
}

/// Runs the demo until Ctrl-C.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let mut config = Config::load(config_path)?;
    let (stop_api, api_shutdown) = watch::channel(false);
    let mut api_tasks = Vec::new();
    // The first upstream's sample API also serves the browser flow's /callback, once the
    // gateway's address is known.
    let callback_slot: Arc<std::sync::OnceLock<Callback>> = Arc::default();
    let mut callback_api: Option<SocketAddr> = None;
    for upstream in config.upstreams.values_mut() {
        let addr: SocketAddr = upstream.authority.as_str().parse().with_context(|| {
            format!(
                "upstream {:?}: the demo serves its sample API on an IP address and port",
                upstream.name
            )
        })?;
        if !addr.ip().is_loopback() {
            bail!(
                "upstream {:?} is at {addr}: the demo serves its sample API on loopback only",
                upstream.name
            );
        }
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot start the sample API for upstream {:?} on {addr}",
                upstream.name
            )
        })?;
        let bound = listener.local_addr()?;
        upstream.authority = Authority::try_from(bound.to_string())?;
        if callback_api.is_none() {
            callback_api = Some(bound);
            let slot = Arc::clone(&callback_slot);
            let shutdown = api_shutdown.clone();
            api_tasks.push(tokio::spawn(async move {
                serve(
                    listener,
                    None,
                    ConnectionLimits::internal(1024),
                    shutdown,
                    move |_| {
                        let slot = Arc::clone(&slot);
                        move |req: Request<Incoming>| {
                            let slot = Arc::clone(&slot);
                            async move {
                                match slot.get() {
                                    Some(cb) if req.uri().path() == "/callback" => {
                                        callback(req, cb).await
                                    }
                                    _ => echo(req).await,
                                }
                            }
                        }
                    },
                )
                .await
            }));
        } else {
            api_tasks.push(tokio::spawn(sample_api(listener, api_shutdown.clone())));
        }
    }

    let store = crate::app::open_store(&config).await?;
    let setup = provision(&store, &config).await?;
    let browser = match callback_api {
        Some(api) => Some(provision_browser(&store, &config, api).await?),
        None => None,
    };
    let running = crate::app::start(config.clone(), store, Arc::new(SystemClock)).await?;
    if let Some(client) = &browser {
        let _ = callback_slot.set(Callback {
            client: client.clone(),
            gateway: running.addr,
        });
    }
    print_instructions(
        &config,
        running.addr,
        running.admin_addr,
        &setup,
        browser.as_ref(),
    );

    crate::shutdown::requested().await;
    running.shutdown().await;
    let _ = stop_api.send(true);
    for t in api_tasks {
        let _ = t.await;
    }
    Ok(())
}

fn print_instructions(
    config: &Config,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    s: &DemoSetup,
    browser: Option<&BrowserClient>,
) {
    let upstreams: Vec<String> = config
        .upstreams
        .values()
        .map(|u| format!("{} at {}", u.name, u.url()))
        .collect();
    let metrics = admin.map_or_else(
        || "(no admin_listen configured)".to_owned(),
        |a| format!("curl -s http://{a}/metrics | grep portcullis_"),
    );
    println!(
        r#"Portcullis demo is running.
  gateway:    http://{addr}   (store: {store:?})
  sample API: {upstreams}
  demo user:  {DEMO_USER}, demo client: {DEMO_CLIENT} (grants: password, client_credentials, refresh_token)

Set these in your shell (the secret and password are shown only here):

export PORTCULLIS=http://{addr} CLIENT_ID={client_id} CLIENT_SECRET={client_secret} DEMO_PASSWORD={password}

1. Get a token with the password grant (read scope only):
   TOKENS=$(curl -s -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=password -d username={DEMO_USER} -d "password=$DEMO_PASSWORD" -d scope=read $PORTCULLIS/o/token/); echo "$TOKENS"
   ACCESS=$(echo "$TOKENS" | sed -E 's/.*"access_token":"([^"]+)".*/\1/'); REFRESH=$(echo "$TOKENS" | sed -E 's/.*"refresh_token":"([^"]+)".*/\1/')

2. Call the legacy API through the gateway (the API sees X-Auth-User, not your token):
   curl -s -H "Authorization: Bearer $ACCESS" $PORTCULLIS/api/users/1

3. See a 403: writing needs the write scope, which this token does not have:
   curl -si -X POST -H "Authorization: Bearer $ACCESS" $PORTCULLIS/api/users

4. Refresh (the old refresh token stops working; the new token keeps the read scope):
   curl -s -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=refresh_token -d "refresh_token=$REFRESH" $PORTCULLIS/o/token/

5. No token at all gives 401 with a Bearer challenge:
   curl -si $PORTCULLIS/api/users
{browser_flow}
Metrics: {metrics}
Press Ctrl-C to stop."#,
        browser_flow = browser.map_or_else(String::new, |b| format!(
            r#"
6. The browser flow (authorization code with PKCE): open this URL in a browser, sign in as
   {DEMO_USER} with the password above and click Authorize. The sample API's page it lands on
   exchanges the code and calls the API with the token:
   {url}
   Your applications: http://{addr}/o/applications/  Authorized applications: http://{addr}/o/authorized_tokens/
"#,
            url = b.authorize_url(addr),
        )),
        store = config.store,
        upstreams = upstreams.join(", "),
        client_id = s.client_id,
        client_secret = s.client_secret,
        password = s.password,
    );
}
