//! Running it for real: `/metrics` in the format each tool reads (checked by promtool, the
//! Prometheus project's own linter, on a live gateway's output after traffic).

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::Harness;
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
    h.get("/api/users", Some(&access)).await;
    h.get("/api/users", None).await;
    h.get("/api/groups", Some(&access)).await;
    h.get("/nowhere", None).await;
    h.token(
        &h.client,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "bad"),
        ],
    )
    .await;

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
