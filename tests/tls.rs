//! TLS over real sockets: the proxy listener with ALPN h2 and http/1.1 on TLS 1.2 and 1.3,
//! certificate reload without restart, and HTTPS upstreams with configured or system roots.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::ca::Ca;
use common::{Harness, Options};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

async fn https_get(
    config: rustls::ClientConfig,
    http2: bool,
    url: &str,
    token: Option<&str>,
) -> (StatusCode, Version, serde_json::Value) {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let connector = if http2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(connector);
    let mut req = Request::get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (status, version) = (resp.status(), resp.version());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        version,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Waits until the gateway has counted at least `n` certificate reloads with `outcome`.
async fn reloads(h: &Harness, outcome: &str, n: u32) {
    let series = format!("portcullis_tls_certificate_reloads_total{{outcome=\"{outcome}\"}} ");
    common::eventually(&format!("{series}>= {n}"), || async {
        let m = h.metrics().await;
        let count = m
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse::<u32>().ok())?;
        (count >= n).then_some(())
    })
    .await;
}

async fn served_certificate(addr: std::net::SocketAddr, config: rustls::ClientConfig) -> Vec<u8> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn tls_options(files: &Files) -> Options {
    Options {
        extra: format!(
            "tls: {{ cert: {}, key: {}, reload_interval_seconds: 1 }}",
            files.path("cert.pem").display(),
            files.path("key.pem").display()
        ),
        ..Options::default()
    }
}

#[tokio::test]
async fn https_listener_speaks_h2_and_http11_on_tls12_and_tls13() {
    let ca = Ca::new();
    let files = Files::new();
    ca.leaf(&files.path("cert.pem"), &files.path("key.pem"));
    let mut options = tls_options(&files);
    options.extra.push_str(&format!(
        "\nadmin_tls: {{ cert: {}, key: {} }}",
        files.path("cert.pem").display(),
        files.path("key.pem").display()
    ));
    let h = Harness::with(options).await;
    // The admin listener speaks TLS too.
    let (status, _, health) = https_get(
        ca.client_config(&[&rustls::version::TLS13]),
        false,
        &format!("https://localhost:{}/healthz", h.admin.port()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    let access = {
        // The token endpoint over TLS, HTTP/1.1.
        let cfg = ca.client_config(&[&rustls::version::TLS13]);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(cfg)
            .https_only()
            .enable_http1()
            .build();
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        let body = format!(
            "grant_type=password&username=alice&password={}",
            common::PASSWORD.replace(' ', "+")
        );
        let req = Request::post(format!("https://localhost:{}/o/token/", h.addr.port()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                common::basic(&h.client.id, &h.client.secret),
            )
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let j: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        common::field(&j, "access_token")
    };
    let url = format!("https://localhost:{}/api/users/1", h.addr.port());
    for (versions, http2, want) in [
        (&[&rustls::version::TLS13][..], true, Version::HTTP_2),
        (&[&rustls::version::TLS13][..], false, Version::HTTP_11),
        (&[&rustls::version::TLS12][..], true, Version::HTTP_2),
        (&[&rustls::version::TLS12][..], false, Version::HTTP_11),
    ] {
        let (status, version, body) =
            https_get(ca.client_config(versions), http2, &url, Some(&access)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(version, want);
        assert_eq!(body["headers"]["x-forwarded-proto"], "https");
        assert_eq!(body["headers"]["x-auth-user"], "alice");
    }
    // Plain HTTP on the TLS port gets no answer.
    let raw = h.raw(b"GET /public/x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(!raw.starts_with("HTTP/1.1 200"), "{raw}");
    // The metadata advertises https.
    let (_, _, meta) = https_get(
        ca.client_config(&[&rustls::version::TLS13]),
        false,
        &format!(
            "https://localhost:{}/.well-known/oauth-authorization-server",
            h.addr.port()
        ),
        None,
    )
    .await;
    assert!(
        meta["issuer"].as_str().unwrap().starts_with("https://"),
        "{meta}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn certificates_reload_without_restart() {
    let ca = Ca::new();
    let files = Files::new();
    let (cert, key) = (files.path("cert.pem"), files.path("key.pem"));
    ca.leaf(&cert, &key);
    let h = Harness::with(tls_options(&files)).await;
    let cfg = || ca.client_config(&[&rustls::version::TLS13]);
    let first = served_certificate(h.local_addr(), cfg()).await;

    // A broken new certificate keeps the old one in service: once the periodic check has
    // tried it and failed, the old one is still served.
    std::fs::write(&cert, "not a certificate").unwrap();
    reloads(&h, "failed", 1).await;
    assert_eq!(served_certificate(h.local_addr(), cfg()).await, first);

    // A good new one is picked up by the periodic check.
    ca.leaf(&cert, &key);
    reloads(&h, "loaded", 1).await;
    let now_served = served_certificate(h.local_addr(), cfg()).await;
    assert_ne!(now_served, first, "the new certificate was not loaded");
    h.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_certificates() {
    let ca = Ca::new();
    let files = Files::new();
    let (cert, key) = (files.path("cert.pem"), files.path("key.pem"));
    ca.leaf(&cert, &key);
    // The periodic check is an hour away: only the signal can load the new certificate.
    let mut options = tls_options(&files);
    options.extra = common::replaced(
        &options.extra,
        "reload_interval_seconds: 1",
        "reload_interval_seconds: 3600",
    );
    let h = Harness::with(options).await;
    let cfg = || ca.client_config(&[&rustls::version::TLS13]);
    let first = served_certificate(h.local_addr(), cfg()).await;
    ca.leaf(&cert, &key);
    assert!(
        !h.metrics()
            .await
            .contains("portcullis_tls_certificate_reloads_total"),
        "no reload without the signal"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    reloads(&h, "loaded", 1).await;
    let now_served = served_certificate(h.local_addr(), cfg()).await;
    assert_ne!(now_served, first, "SIGHUP did not reload the certificate");
    h.shutdown().await;
}

fn https_upstream_config(upstream_port: u16, ca_file: Option<&Path>) -> String {
    let ca = ca_file
        .map(|p| format!(", ca_file: {}", p.display()))
        .unwrap_or_default();
    common::replaced(
        &common::config_yaml("https://placeholder", "", ""),
        "legacy: { url: https://placeholder, response_timeout_ms: 500 }",
        &format!("legacy: {{ url: https://localhost:{upstream_port}{ca} }}"),
    )
}

#[tokio::test]
async fn https_upstreams_with_configured_or_system_roots() {
    let ca = Ca::new();
    let files = Files::new();
    ca.leaf(&files.path("up-cert.pem"), &files.path("up-key.pem"));
    std::fs::write(files.path("ca.pem"), &ca.pem).unwrap();
    let cert = Arc::new(
        portcullis::tls::ReloadingCert::load(&files.path("up-cert.pem"), &files.path("up-key.pem"))
            .unwrap(),
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(portcullis::tls::server_config(cert).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(portcullis::demo::sample_api_with_tls(
        listener,
        Some(acceptor),
        rx,
    ));

    for (ca_file, want) in [
        (Some(files.path("ca.pem")), StatusCode::OK),
        (None, StatusCode::BAD_GATEWAY),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, https_upstream_config(port, ca_file.as_deref())).unwrap();
        let config = portcullis::config::Config::load(&path).unwrap();
        let store = portcullis::app::open_store(&config).await.unwrap();
        let running =
            portcullis::app::start(config, store, Arc::new(portcullis::clock::SystemClock))
                .await
                .unwrap();
        let r = common::fetch(
            &common::http_client(),
            Request::get(format!("http://{}/public/x", running.addr))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, want, "ca_file {ca_file:?}: {}", r.text());
        if want == StatusCode::OK {
            assert_eq!(r.json()["path"], "/public/x");
        }
        running.shutdown().await;
    }
}

#[test]
fn tls_config_errors_are_located() {
    let files = Files::new();
    let text = common::config_yaml(
        "http://127.0.0.1:9",
        "",
        "tls: { cert: missing.pem, key: missing-key.pem }",
    );
    let err = portcullis::config::Config::parse(&text, Path::new("t.yaml"), files.dir.path())
        .unwrap_err();
    let rendered = err.to_string();
    assert!(rendered.contains("`tls.cert`: no such file"), "{rendered}");
    assert!(rendered.contains("`tls.key`: no such file"), "{rendered}");
}

/// Over TLS the pages' cookies are `Secure` (the session's and the sign-in form's).
#[tokio::test]
async fn page_cookies_are_secure_over_tls() {
    let ca = Ca::new();
    let files = Files::new();
    ca.leaf(&files.path("cert.pem"), &files.path("key.pem"));
    let h = Harness::with(tls_options(&files)).await;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(ca.client_config(&[&rustls::version::TLS13]))
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let url = format!("https://localhost:{}/o/login/", h.addr.port());
    let resp = client
        .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("portcullis_csrf="), "{cookie}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/o/"] {
        assert!(cookie.contains(attribute), "{attribute}: {cookie}");
    }
    h.shutdown().await;
}
