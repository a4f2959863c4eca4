//! Running it for real: `/metrics` in the format each tool reads (checked by promtool, the
//! Prometheus project's own linter, on a live gateway's output after traffic).

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::{Harness, Options};
use http::StatusCode;
use http_body_util::BodyExt as _;

/// Debian's `promtool` (package `prometheus`), or `None` (with a message) where it is missing.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install promtool (apt-get install prometheus; .ci/run does)"
        );
        common::notice(
            "skipping the promtool checks: promtool is not installed (apt-get install prometheus)",
        );
        return None;
    }
    Some("promtool")
}

/// `/metrics` with this `Accept` header: its content type and body.
async fn scrape(h: &Harness, accept: Option<&str>) -> (String, String) {
    let mut req = http::Request::get(format!("http://{}/metrics", h.admin));
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let resp = h
        .http
        .request(req.body(Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

/// Prometheus' own scraper gets OpenMetrics; everything else the text format, which
/// `promtool check metrics` passes without a single complaint after every kind of traffic.
#[tokio::test]
async fn metrics_pass_promtool_in_the_format_asked_for() {
    let h = Harness::start().await;
    let access = h.access_token("read").await;
    h.mixed_traffic(&access).await;

    let prometheus_scraper = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let (kind, openmetrics) = scrape(&h, Some(prometheus_scraper)).await;
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(openmetrics.ends_with("# EOF\n"));
    let (kind, text) = scrape(&h, None).await;
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF"));
    for line in [
        "# TYPE portcullis_auth_decisions_total counter",
        r#"portcullis_auth_decisions_total{route="GET,HEAD /api/users",decision="allow",reason="token"} 1"#,
        "# TYPE portcullis_upstream_request_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    let Some(promtool) = promtool() else {
        return;
    };
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n{text}"
    );
    h.shutdown().await;
}

/// The harness's config file with `from` replaced by `to` (each must be there).
fn rewrite(h: &Harness, from: &str, to: &str) {
    let path = h.dir.path().join("portcullis.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, common::replaced(&yaml, from, to)).unwrap();
}

fn reloads(metrics: &str, outcome: &str) -> u64 {
    let prefix = format!("portcullis_config_reloads_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

const USERS_READ: &str =
    "- { path: /api/users, methods: [GET, HEAD], scopes: [read], upstream: legacy }";
const USERS_WRITE: &str =
    "- { path: /api/users, methods: [GET, HEAD], scopes: [write], upstream: legacy }";
const EXTRA: &str = "\n  - { path: /api/extra, scopes: [read], upstream: legacy }";

/// Reloads one after another while clients keep requesting: a route rescoped (read, then
/// write: the clients' token has both), a route added and removed. No request fails and none
/// reaches the wrong place: every 200 is the upstream's echo of the path that was asked for,
/// the rescoped route always answers 200, and the added route answers 200 or 404 (whichever
/// config the request arrived under), nothing else.
#[tokio::test]
async fn reloads_under_load_drop_no_request() {
    let h = std::sync::Arc::new(Harness::start().await);
    let token = h.access_token("read write").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (h, token, stop) = (h.clone(), token.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut counts = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let path = if i % 2 == 0 {
                    "/api/users/7"
                } else {
                    "/api/extra/7"
                };
                let r = h.get(path, Some(&token)).await;
                match r.status {
                    StatusCode::OK => {
                        assert_eq!(r.json()["path"], path, "misrouted");
                        counts.0 += 1;
                    }
                    StatusCode::NOT_FOUND if path == "/api/extra/7" => counts.1 += 1,
                    other => panic!("GET {path}: {other} {}", r.text()),
                }
            }
            counts
        }));
    }
    let running = h.running.as_ref().unwrap();
    let rounds = 20;
    for round in 0..rounds {
        if round % 2 == 0 {
            rewrite(&h, USERS_READ, &format!("{USERS_WRITE}{EXTRA}"));
        } else {
            rewrite(&h, &format!("{USERS_WRITE}{EXTRA}"), USERS_READ);
        }
        running.reload();
        common::eventually("the reload applied", || async {
            (reloads(&h.metrics().await, "applied") > round).then_some(())
        })
        .await;
        // Some traffic under this config before the next swap.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut served = 0;
    for c in clients {
        let (ok, not_found) = c.await.unwrap();
        served += ok + not_found;
    }
    assert!(
        served > 100,
        "too little traffic to mean anything: {served}"
    );
    // The last config (rescoped back to read, /api/extra gone) is the one in force.
    assert_eq!(
        h.get("/api/extra/7", Some(&token)).await.status,
        StatusCode::NOT_FOUND
    );
    let read_only = h.access_token("read").await;
    h.get_ok("/api/users/7", Some(&read_only)).await;
}

/// Each route reaches its own upstream, and still does after a reload that adds an upstream
/// before the others in the (name-sorted) `upstreams:` map, so that every upstream's place
/// in the list, which routes hold, moves.
#[tokio::test]
async fn routes_reach_their_own_upstreams_across_a_reload() {
    let h = Harness::start().await;
    let running = h.running.as_ref().unwrap();
    let named = |name: &'static str| {
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
            name.len()
        );
        common::scripted_upstream(response.into_bytes(), Vec::new(), 0)
    };
    let (mike, zulu, alpha) = (
        named("mike").await,
        named("zulu").await,
        named("alpha").await,
    );
    let upstream = |name: &str, addr: std::net::SocketAddr| {
        format!("\n  {name}: {{ url: \"http://{addr}\" }}")
    };
    let route =
        |path: &str, name: &str| format!("\n  - {{ path: {path}, auth: none, upstream: {name} }}");
    rewrite(
        &h,
        "upstreams:",
        &format!(
            "upstreams:{}{}",
            upstream("mike", mike),
            upstream("zulu", zulu)
        ),
    );
    rewrite(
        &h,
        USERS_READ,
        &format!("{USERS_READ}{}{}", route("/m", "mike"), route("/z", "zulu")),
    );
    running.reload();
    common::eventually("the upstreams are added", || async {
        (reloads(&h.metrics().await, "applied") == 1).then_some(())
    })
    .await;
    served_by(&h, &[("/m", "mike"), ("/z", "zulu"), ("/public/x", "")]).await;

    rewrite(
        &h,
        "upstreams:",
        &format!("upstreams:{}", upstream("alpha", alpha)),
    );
    rewrite(
        &h,
        USERS_READ,
        &format!("{USERS_READ}{}", route("/a", "alpha")),
    );
    running.reload();
    common::eventually("alpha is added", || async {
        (reloads(&h.metrics().await, "applied") == 2).then_some(())
    })
    .await;
    served_by(
        &h,
        &[
            ("/a", "alpha"),
            ("/m", "mike"),
            ("/z", "zulu"),
            ("/public/x", ""),
        ],
    )
    .await;
}

/// GETs each path and requires the named upstream's answer (an empty name: the sample API's
/// echo of the path).
async fn served_by(h: &Harness, expected: &[(&str, &str)]) {
    for (path, name) in expected {
        let r = h.get(path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        if name.is_empty() {
            assert_eq!(r.json()["path"], *path, "{path}: the sample API's echo");
        } else {
            assert_eq!(r.text(), *name, "{path}");
        }
    }
}

/// An invalid file changes nothing (the running routes keep serving; counted as `invalid`);
/// a valid change made to the file alone is picked up without any signal.
#[tokio::test]
async fn an_invalid_config_is_refused_and_a_changed_file_is_picked_up() {
    let h = Harness::start().await;
    let token = h.access_token("read").await;
    rewrite(
        &h,
        USERS_READ,
        &format!("{USERS_READ}\n  - {{ path: /api/bad, scopes: [nope], upstream: legacy }}"),
    );
    common::eventually("the file change is seen and refused", || async {
        (reloads(&h.metrics().await, "invalid") == 1).then_some(())
    })
    .await;
    h.get_ok("/api/users/1", Some(&token)).await;
    assert_eq!(
        h.get("/api/bad", Some(&token)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(reloads(&h.metrics().await, "applied"), 0);

    rewrite(&h, "scopes: [nope]", "scopes: [read]");
    common::eventually("the fixed file is applied", || async {
        (h.get("/api/bad", Some(&token)).await.status == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(reloads(&h.metrics().await, "applied"), 1);
}

/// The `portcullis_…` metric names in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("portcullis_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The dashboard and the alert rules name only metrics a gateway exports, and every
/// dashboard query is valid PromQL (promtool checks them as recording rules). A labelled
/// family appears once it has a sample, so the gateway first sees a little of everything:
/// issuance, a proxied request, a revocation, a failed sign-in, a throttled password grant,
/// a reload and a sweep (on PostgreSQL where it runs, for the revocation feed's family).
#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_name_exists() {
    let on_postgres = Options::postgres();
    let feed = on_postgres.is_some();
    let h = Harness::with(Options {
        extra_oauth: "  rate_limits: { per_user_per_minute: 2 }".into(),
        ..on_postgres.unwrap_or_default()
    })
    .await;
    let token = h.access_token("read").await;
    h.get_ok("/api/users", Some(&token)).await;
    let revoke = h.revoke(&h.client, &token).await;
    assert_eq!(revoke.status, StatusCode::OK, "{}", revoke.text());
    let mut browser = common::CookieClient::new(&h);
    browser.sign_in("alice", "wrong", "/o/applications/").await;
    let form = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", common::PASSWORD),
    ];
    common::eventually("a throttled password grant", || async {
        (h.token(&h.client, &form).await.status == StatusCode::TOO_MANY_REQUESTS).then_some(())
    })
    .await;
    h.running.as_ref().unwrap().reload();
    common::eventually("the sweep and the reload", || async {
        let (_, text) = scrape(&h, None).await;
        (text.contains("portcullis_store_live_tokens{")
            && text.contains("portcullis_config_reloads_total{"))
        .then_some(())
    })
    .await;
    if feed {
        common::eventually("the revocation feed connected", || async {
            scrape(&h, None)
                .await
                .1
                .contains("portcullis_revocation_feed_total{")
                .then_some(())
        })
        .await;
    }
    let (_, text) = scrape(&h, None).await;
    let mut exported = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        exported.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.insert(format!("{name}{suffix}"));
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dashboard = std::fs::read_to_string(root.join("grafana/portcullis.json")).unwrap();
    let alerts = std::fs::read_to_string(root.join("prometheus/alerts.yaml")).unwrap();
    for (file, text) in [
        ("grafana/portcullis.json", &dashboard),
        ("prometheus/alerts.yaml", &alerts),
    ] {
        let mut named = metric_names(text);
        assert!(!named.is_empty(), "{file} names no metric");
        if !feed {
            named.remove("portcullis_revocation_feed_total");
        }
        let unknown: Vec<_> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics no gateway exports: {unknown:?}"
        );
    }

    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$job", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:panel{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    h.shutdown().await;
}
