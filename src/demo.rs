//! `portcullis demo`: the whole flow on one machine with nothing else installed. Starts a
//! small sample legacy API (no auth of its own) on each upstream's loopback address, a demo
//! user and client, the gateway itself, and prints the curl commands of the flow.

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
        None,
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
        api_tasks.push(tokio::spawn(sample_api(listener, api_shutdown.clone())));
    }

    let store = crate::app::open_store(&config).await?;
    let setup = provision(&store, &config).await?;
    let running = crate::app::start(config.clone(), store, Arc::new(SystemClock)).await?;
    print_instructions(&config, running.addr, running.admin_addr, &setup);

    crate::shutdown::requested().await;
    running.shutdown().await;
    let _ = stop_api.send(true);
    for t in api_tasks {
        let _ = t.await;
    }
    Ok(())
}

fn print_instructions(config: &Config, addr: SocketAddr, admin: Option<SocketAddr>, s: &DemoSetup) {
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

Metrics: {metrics}
Press Ctrl-C to stop."#,
        store = config.store,
        upstreams = upstreams.join(", "),
        client_id = s.client_id,
        client_secret = s.client_secret,
        password = s.password,
    );
}
