//! The real `portcullis` binary: `check`, `users`, `clients`, `serve` (with its logs captured
//! and searched for secrets) and `demo` (its printed flow, followed over HTTP).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Resp, basic};
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn portcullis(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            // A command that refuses its arguments exits without reading its input, which
            // may then be closed before it is written.
            match input.write_all(s.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("stdin: {e}"),
                _ => {}
            }
        }
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config whose store exists (`portcullis migrate` made it).
fn write_config(dir: &Path) -> std::path::PathBuf {
    // The upstream is never contacted by these tests unless a test starts one there.
    let path = dir.join("portcullis.yaml");
    std::fs::write(&path, common::config_yaml("http://127.0.0.1:9", "", "")).unwrap();
    migrate(&path);
    path
}

fn migrate(config: &Path) {
    let out = portcullis(config, &["migrate"], None);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn check_reports_problems_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path());
    let ok = portcullis(&good, &["check"], None);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("OK (4 routes"));

    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace("scopes: [groups]", "scopes: [groupz]");
    let text = common::replaced(&text, "upstream: legacy }\n", "upstream: legacyy }\n");
    assert!(text.contains("[groupz]"));
    std::fs::write(&bad, text).unwrap();
    let out = portcullis(&bad, &["check"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("has 5 problems"), "{err}");
    assert!(
        err.contains(&format!("{}:17:35: unknown scope", bad.display())),
        "{err}"
    );
    assert!(err.contains("unknown scope \"groupz\""), "{err}");
    assert!(err.contains("unknown upstream \"legacyy\""), "{err}");

    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        common::replaced(
            &std::fs::read_to_string(&good).unwrap(),
            "  - { path: /public, auth: none",
            "  - { path: /public, auht: none",
        ),
    )
    .unwrap();
    let out = portcullis(&typo, &["check"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("typo.yaml:18:22: unknown key `routes[3].auht`"),
        "{}",
        stderr(&out)
    );
}

/// A management command never creates a store: a mistyped path or a deleted file must not
/// become a new, empty database that the command then reports success against.
#[test]
fn management_commands_refuse_a_missing_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.yaml");
    std::fs::write(&path, common::config_yaml("http://127.0.0.1:9", "", "")).unwrap();
    let db = dir.path().join("data/portcullis.db");
    let commands: &[&[&str]] = &[
        &["tokens", "revoke", "--user", "alice"],
        &["tokens", "list"],
        &["users", "list"],
        &["clients", "list"],
        &["users", "add", "carol", "--password-stdin"],
    ];
    for args in commands {
        let out = portcullis(&path, args, Some("a password\n"));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("no database at") && stderr(&out).contains("portcullis migrate"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!db.exists(), "{args:?} created the store");
    }
    let made = portcullis(&path, &["migrate"], None);
    assert!(made.status.success(), "{}", stderr(&made));
    assert!(db.is_file());
    let again = portcullis(&path, &["migrate"], None);
    assert!(
        again.status.success(),
        "migrate is idempotent: {}",
        stderr(&again)
    );
    let revoke = portcullis(&path, &["tokens", "revoke", "--user", "alice"], None);
    assert!(revoke.status.success(), "{}", stderr(&revoke));
}

#[test]
fn users_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let add = portcullis(
        &config,
        &["users", "add", "carol", "--password-stdin"],
        Some("s3cret pass\n"),
    );
    assert!(add.status.success(), "{}", stderr(&add));
    let dup = portcullis(
        &config,
        &["users", "add", "carol", "--password-stdin"],
        Some("x\n"),
    );
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    let no_flag = portcullis(&config, &["users", "add", "dave"], Some("x\n"));
    assert_eq!(
        no_flag.status.code(),
        Some(2),
        "the password never comes from argv"
    );
    let bad_name = portcullis(
        &config,
        &["users", "add", "no spaces", "--password-stdin"],
        Some("x\n"),
    );
    assert!(stderr(&bad_name).contains("invalid username"));
    let empty = portcullis(
        &config,
        &["users", "add", "erin", "--password-stdin"],
        Some(""),
    );
    assert!(!empty.status.success());

    portcullis(
        &config,
        &["users", "add", "bob", "--password-stdin"],
        Some("pw\n"),
    );
    let list = portcullis(&config, &["users", "list"], None);
    assert_eq!(stdout(&list), "bob\ncarol\n");
    let set = portcullis(
        &config,
        &["users", "set-password", "carol", "--password-stdin"],
        Some("new one\n"),
    );
    assert!(set.status.success(), "{}", stderr(&set));
    let set_missing = portcullis(
        &config,
        &["users", "set-password", "zed", "--password-stdin"],
        Some("x\n"),
    );
    assert!(stderr(&set_missing).contains("no user \"zed\""));
    let rm = portcullis(&config, &["users", "remove", "bob"], None);
    assert!(rm.status.success());
    assert_eq!(
        stdout(&portcullis(&config, &["users", "list"], None)),
        "carol\n"
    );
    let rm_again = portcullis(&config, &["users", "remove", "bob"], None);
    assert_eq!(rm_again.status.code(), Some(1));
    let db = std::fs::read(dir.path().join("data/portcullis.db")).unwrap();
    assert!(
        !db.windows(7).any(|w| w == b"new one"),
        "passwords are stored hashed"
    );
}

#[test]
fn clients_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let add = portcullis(
        &config,
        &[
            "clients",
            "add",
            "--name",
            "billing",
            "--grant",
            "password",
            "--grant",
            "refresh_token",
            "--scope",
            "read",
            "--scope",
            "write",
            "--json",
        ],
        None,
    );
    assert!(add.status.success(), "{}", stderr(&add));
    let created: serde_json::Value = serde_json::from_str(&stdout(&add)).unwrap();
    let id = common::field(&created, "client_id");
    let secret = common::field(&created, "client_secret");
    assert!(secret.starts_with("pccs_"));

    let list = portcullis(&config, &["clients", "list", "--json"], None);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    assert_eq!(listed[0]["client_id"], id.as_str());
    assert_eq!(
        listed[0]["grants"],
        serde_json::json!(["password", "refresh_token"])
    );
    assert_eq!(listed[0]["scopes"], serde_json::json!(["read", "write"]));
    assert!(!stdout(&list).contains(&secret));

    let bad_scope = portcullis(
        &config,
        &[
            "clients", "add", "--name", "x", "--grant", "password", "--scope", "admin",
        ],
        None,
    );
    assert!(stderr(&bad_scope).contains("unknown scope \"admin\""));
    let bad_grant = portcullis(
        &config,
        &["clients", "add", "--name", "x", "--grant", "implicit"],
        None,
    );
    assert_eq!(bad_grant.status.code(), Some(2));

    let rotated = portcullis(&config, &["clients", "rotate-secret", &id, "--json"], None);
    let rotated: serde_json::Value = serde_json::from_str(&stdout(&rotated)).unwrap();
    assert_ne!(rotated["client_secret"].as_str().unwrap(), secret);
    let plain = portcullis(
        &config,
        &[
            "clients",
            "add",
            "--name",
            "other",
            "--grant",
            "client_credentials",
        ],
        None,
    );
    assert!(stdout(&plain).contains("client_secret: pccs_"));

    let rm = portcullis(&config, &["clients", "remove", &id], None);
    assert!(rm.status.success());
    assert!(!stdout(&portcullis(&config, &["clients", "list"], None)).contains(&id));
    let missing = portcullis(&config, &["clients", "rotate-secret", &id], None);
    assert_eq!(missing.status.code(), Some(1));
}

/// A running `portcullis` process with its output lines collected.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Set once the test stopped (or killed) the process itself.
    stopped: bool,
}

impl Drop for Proc {
    /// A test that fails half-way must not leave a gateway running.
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    fn spawn(config: &Path, args: &[&str], read_stdout: bool) -> Proc {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn std::io::Read + Send> = if read_stdout {
            Box::new(child.stdout.take().unwrap())
        } else {
            Box::new(child.stderr.take().unwrap())
        };
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Keep the other stream drained too, and collected.
        let other: Box<dyn std::io::Read + Send> = if read_stdout {
            Box::new(child.stderr.take().unwrap())
        } else {
            Box::new(child.stdout.take().unwrap())
        };
        std::thread::spawn(move || {
            for line in BufReader::new(other).lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
            stopped: false,
        }
    }

    /// Waits for a line containing `needle` and returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// SIGTERM, then the rest of the output.
    fn stop(mut self) -> (bool, String) {
        self.stopped = true;
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status.success(), self.seen.join("\n"))
    }
}

async fn post_form(url: &str, auth: Option<&str>, form: &[(&str, &str)]) -> Resp {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut req =
        http::Request::post(url).header("content-type", "application/x-www-form-urlencoded");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    common::fetch(&common::http_client(), req.body(body.into()).unwrap()).await
}

async fn get(url: &str, token: &str) -> Resp {
    let req = http::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Default::default())
        .unwrap();
    common::fetch(&common::http_client(), req).await
}

/// A config with the given extra keys, user alice with `password`, a client registered for
/// password and refresh_token with the read scope, and `portcullis serve` running on it.
struct Served {
    _dir: tempfile::TempDir,
    _upstream: common::Upstream,
    config: std::path::PathBuf,
    client_id: String,
    client_secret: String,
    proc: Proc,
    addr: String,
}

async fn serve_with_app(password: &str, extra: &str) -> Served {
    serve_with(password, "", extra).await
}

async fn serve_with(password: &str, extra_oauth: &str, extra: &str) -> Served {
    serve_on(password, extra_oauth, extra, None).await
}

/// `serve_with` on the store `store` names in place of the SQLite file (`postgres: URL`).
async fn serve_on(password: &str, extra_oauth: &str, extra: &str, store: Option<&str>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let upstream = common::Upstream::start().await;
    let config = dir.path().join("portcullis.yaml");
    let yaml = common::config_yaml(&upstream.url(), extra_oauth, extra);
    let yaml = match store {
        Some(store) => common::replaced(&yaml, "sqlite: data/portcullis.db", store),
        None => yaml,
    };
    std::fs::write(&config, yaml).unwrap();
    migrate(&config);
    portcullis(
        &config,
        &["users", "add", "alice", "--password-stdin"],
        Some(&format!("{password}\n")),
    );
    let add = portcullis(
        &config,
        &[
            "clients",
            "add",
            "--name",
            "app",
            "--grant",
            "password",
            "--grant",
            "refresh_token",
            "--grant",
            "client_credentials",
            "--scope",
            "read",
            "--json",
        ],
        None,
    );
    let created: serde_json::Value = serde_json::from_str(&stdout(&add)).unwrap();
    let mut proc = Proc::spawn(&config, &["--log-format", "json", "serve"], false);
    let line = proc.wait_for("portcullis listening");
    let log: serde_json::Value = serde_json::from_str(&line).expect("JSON logs");
    Served {
        client_id: common::field(&created, "client_id"),
        client_secret: common::field(&created, "client_secret"),
        addr: common::field(&log, "addr"),
        _dir: dir,
        _upstream: upstream,
        config,
        proc,
    }
}

#[tokio::test]
async fn serve_logs_never_contain_secrets() {
    let password = "hunter2-very-secret";
    let Served {
        client_id,
        client_secret,
        mut proc,
        addr,
        _dir,
        _upstream,
        ..
    } = serve_with_app(password, "").await;
    let (id, secret) = (client_id.as_str(), client_secret.as_str());
    let token_url = format!("http://{addr}/o/token/");

    let ok = post_form(
        &token_url,
        Some(&basic(id, secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", password),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let access = common::field(&ok.json(), "access_token");
    let refresh = common::field(&ok.json(), "refresh_token");
    let wrong_pw = post_form(
        &token_url,
        Some(&basic(id, secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "hunter3-wrong-guess"),
        ],
    )
    .await;
    assert_eq!(wrong_pw.status, StatusCode::BAD_REQUEST);
    let wrong_secret = post_form(
        &token_url,
        Some(&basic(id, "pccs_guessed-secret-value")),
        &[("grant_type", "password")],
    )
    .await;
    assert_eq!(wrong_secret.status, StatusCode::UNAUTHORIZED);
    let refreshed = post_form(
        &token_url,
        Some(&basic(id, secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    // Rotation revoked the first access token with its refresh token.
    let revoked = get(&format!("http://{addr}/api/users/1"), &access).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    let access2 = common::field(&refreshed.json(), "access_token");
    let api = get(&format!("http://{addr}/api/users/1?x=1"), &access2).await;
    assert_eq!(api.status, StatusCode::OK);
    // The access log line of a request, by its request id: every documented field.
    let traced = common::fetch(
        &common::http_client(),
        http::Request::get(format!("http://{addr}/api/users/2?q=secret-looking"))
            .header("authorization", format!("Bearer {access2}"))
            .header("x-request-id", "trace-4711")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(traced.status, StatusCode::OK);
    let line = proc.wait_for("\"request_id\":\"trace-4711\"");
    let fields: serde_json::Value = serde_json::from_str(&line).unwrap();
    for (key, want) in [
        ("target", "portcullis::access"),
        ("method", "GET"),
        ("path", "/api/users/2"),
        ("route", "GET,HEAD /api/users"),
        ("decision", "allow"),
        ("reason", "token"),
        ("upstream", "legacy"),
        ("client_id", id),
        ("user", "alice"),
        ("request_id", "trace-4711"),
    ] {
        assert_eq!(fields[key], want, "{key} in {line}");
    }
    assert_eq!(fields["status"], 200, "{line}");
    assert!(fields["duration_us"].as_u64().is_some(), "{line}");
    assert!(
        !line.contains("secret-looking"),
        "the query is not logged: {line}"
    );
    // A token in the query string is refused, and neither it nor the query reaches the logs.
    let in_query = get(
        &format!("http://{addr}/api/users/1?access_token={access2}"),
        &access2,
    )
    .await;
    assert_eq!(in_query.status, StatusCode::BAD_REQUEST);
    assert!(
        !in_query.text().contains(&access2),
        "error bodies never echo credentials"
    );
    let bad = get(
        &format!("http://{addr}/api/users/1"),
        "pcat_forged-token-value-that-does-not-exist-x",
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    proc.wait_for("\"status\":401");

    let (clean_exit, logs) = proc.stop();
    assert!(clean_exit, "SIGTERM drains and exits 0:\n{logs}");
    assert!(
        logs.contains("token issued"),
        "the log is not empty:\n{logs}"
    );
    assert!(logs.contains("\"route\":\"GET,HEAD /api/users\""), "{logs}");
    for secret_value in [
        access.as_str(),
        refresh.as_str(),
        secret,
        password,
        "hunter3-wrong-guess",
        "pccs_guessed-secret-value",
        "pcat_forged-token-value",
        refreshed.json()["access_token"].as_str().unwrap(),
    ] {
        assert!(
            !logs.contains(secret_value),
            "a secret reached the logs: {secret_value}"
        );
    }
}

#[tokio::test]
async fn demo_prints_a_flow_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.yaml");
    // Port 0 everywhere: the demo binds its sample API where the upstream points.
    std::fs::write(&config, common::config_yaml("http://127.0.0.1:0", "", "")).unwrap();
    let mut proc = Proc::spawn(&config, &["demo"], true);
    let export = proc.wait_for("export PORTCULLIS=");
    let authorize_url = proc.wait_for("/o/authorize/?").trim().to_owned();
    proc.wait_for("Press Ctrl-C to stop.");
    let vars: std::collections::HashMap<&str, &str> = export
        .trim_start_matches("export ")
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let base = vars["PORTCULLIS"];
    let auth = basic(vars["CLIENT_ID"], vars["CLIENT_SECRET"]);

    let token = post_form(
        &format!("{base}/o/token/"),
        Some(&auth),
        &[
            ("grant_type", "password"),
            ("username", "demo"),
            ("password", vars["DEMO_PASSWORD"]),
            ("scope", "read"),
        ],
    )
    .await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.text());
    let access = common::field(&token.json(), "access_token");
    let api = get(&format!("{base}/api/users/1"), &access).await;
    assert_eq!(api.status, StatusCode::OK);
    assert_eq!(api.json()["service"], "sample legacy API");
    assert_eq!(api.upstream_saw("x-auth-user").as_deref(), Some("demo"));

    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let post = http::Request::post(format!("{base}/api/users"))
        .header("authorization", format!("Bearer {access}"))
        .body(Default::default())
        .unwrap();
    assert_eq!(
        client.request(post).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    let refreshed = post_form(
        &format!("{base}/o/token/"),
        Some(&auth),
        &[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                token.json()["refresh_token"].as_str().unwrap(),
            ),
        ],
    )
    .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_eq!(refreshed.json()["scope"], "read");

    // The browser flow, followed as a browser would: sign in, authorize, land on the sample
    // API's callback page, which exchanged the code and called the API.
    let mut browser = common::CookieClient::at(base);
    let to_login = browser.get(&authorize_url).await;
    assert_eq!(
        to_login.status,
        StatusCode::SEE_OTHER,
        "{}",
        to_login.text()
    );
    let signed = browser
        .sign_in(
            "demo",
            vars["DEMO_PASSWORD"],
            &authorize_url.replace(base, ""),
        )
        .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.text());
    let consent = browser.get(&authorize_url).await;
    assert!(
        consent.text().contains("Authorize demo browser app?"),
        "{}",
        consent.text()
    );
    let mut form = common::hidden_fields(&consent.text(), "/o/authorize/");
    form.push(("allow".into(), "Authorize".into()));
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let back = browser.post("/o/authorize/", &pairs).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.text());
    let callback = back.header("location").unwrap().to_owned();
    assert!(callback.contains("/callback?code="), "{callback}");
    let page = browser.get(&callback).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = common::unescape(&page.text());
    assert!(html.contains("Signed in through Portcullis"), "{html}");
    assert!(html.contains("\"access_token\": \"pcat_"), "{html}");
    assert!(html.contains("200 OK"), "the protected call worked: {html}");
    assert!(html.contains("\"x-auth-user\":\"demo\""), "{html}");
    let (clean_exit, out) = proc.stop();
    assert!(clean_exit, "{out}");
}

#[tokio::test]
async fn tokens_commands_reach_a_running_gateway() {
    let Served {
        client_id,
        client_secret,
        proc,
        addr,
        config,
        _dir,
        _upstream,
    } = serve_with_app("pw-alice", "cache: { revocation_poll_ms: 100 }").await;
    let (id, secret) = (client_id.as_str(), client_secret.as_str());
    let ok = post_form(
        &format!("http://{addr}/o/token/"),
        Some(&basic(id, secret)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "pw-alice"),
        ],
    )
    .await;
    let access = common::field(&ok.json(), "access_token");
    let refresh = common::field(&ok.json(), "refresh_token");
    assert_eq!(
        get(&format!("http://{addr}/api/users"), &access)
            .await
            .status,
        StatusCode::OK
    );

    let list = portcullis(&config, &["tokens", "list", "--user", "alice"], None);
    let text = stdout(&list);
    assert!(
        text.contains("access") && text.contains("refresh") && text.contains("active"),
        "{text}"
    );
    assert!(
        !text.contains(&access) && !text.contains(&refresh),
        "token values are never printed"
    );
    let json_list = portcullis(&config, &["tokens", "list", "--client", id, "--json"], None);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&json_list))
        .unwrap_or_else(|e| panic!("{e}: {:?} {}", json_list.status, stderr(&json_list)));
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(
        stdout(&portcullis(
            &config,
            &["tokens", "list", "--user", "nobody", "--json"],
            None
        ))
        .trim(),
        "[]"
    );

    let revoke = portcullis(&config, &["tokens", "revoke", "--user", "alice"], None);
    assert!(
        stdout(&revoke).contains("revoked 1 access and 1 refresh tokens of user alice"),
        "{}",
        stdout(&revoke)
    );
    // The running gateway follows the revocation log: the cached token stops working.
    common::eventually("the revocation reaches the running gateway", || async {
        let status = get(&format!("http://{addr}/api/users"), &access)
            .await
            .status;
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    let neither = portcullis(&config, &["tokens", "revoke"], None);
    assert_eq!(
        neither.status.code(),
        Some(2),
        "--user or --client is required"
    );

    let clear = portcullis(&config, &["tokens", "clear-expired"], None);
    assert_eq!(
        stdout(&clear).trim(),
        "deleted 1 access and 1 refresh tokens"
    );
    let (clean_exit, logs) = proc.stop();
    assert!(clean_exit, "{logs}");
}

#[tokio::test]
async fn every_issued_token_survives_sigkill_during_a_burst() {
    sigkill_during_a_burst(None).await;
}

/// The same on PostgreSQL: the management commands, the gateway and its restart all on one
/// fresh database.
#[tokio::test]
async fn every_issued_token_survives_sigkill_during_a_burst_on_postgres() {
    let Some(server) = common::postgres_server() else {
        return;
    };
    let url = common::fresh_postgres_database(&server);
    sigkill_during_a_burst(Some(&format!("postgres: {url}"))).await;
}

async fn sigkill_during_a_burst(store: Option<&str>) {
    let Served {
        client_id,
        client_secret,
        mut proc,
        addr,
        config,
        _dir,
        _upstream,
    } = serve_on(
        "pw",
        "  rate_limits: { per_client_per_minute: 1000000, per_address_per_minute: 1000000 }",
        "",
        store,
    )
    .await;
    let issued = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let auth = basic(&client_id, &client_secret);
    let url = format!("http://{addr}/o/token/");
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (issued, auth, url) = (issued.clone(), auth.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let client = common::http_client();
            for _ in 0..10_000 {
                let req = http::Request::post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("authorization", &auth)
                    .body(bytes::Bytes::from_static(b"grant_type=client_credentials").into())
                    .unwrap();
                let Ok(resp) = client.request(req).await else {
                    return;
                };
                if resp.status() != StatusCode::OK {
                    continue;
                }
                use http_body_util::BodyExt;
                let Ok(body) = resp.into_body().collect().await else {
                    return;
                };
                let j: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap();
                issued
                    .lock()
                    .unwrap()
                    .push(common::field(&j, "access_token"));
            }
        }));
    }
    // Kill the gateway mid-burst, once it has handed out a fair number of tokens.
    common::eventually("200 tokens issued", || async {
        (issued.lock().unwrap().len() >= 200).then_some(())
    })
    .await;
    Command::new("kill")
        .arg("-KILL")
        .arg(proc.child.id().to_string())
        .status()
        .unwrap();
    let _ = proc.child.wait();
    for w in workers {
        let _ = w.await;
    }
    let tokens = issued.lock().unwrap().clone();
    assert!(
        tokens.len() >= 50,
        "too few tokens issued before the kill: {}",
        tokens.len()
    );

    let mut restarted = Proc::spawn(&config, &["--log-format", "json", "serve"], false);
    let line = restarted.wait_for("portcullis listening");
    let addr = common::field(&serde_json::from_str(&line).unwrap(), "addr");
    for t in &tokens {
        let r = get(&format!("http://{addr}/api/users"), t).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "a token the client received was lost in the crash"
        );
    }
    let (clean_exit, logs) = restarted.stop();
    assert!(clean_exit, "{logs}");
}

/// Runs `portcullis migrate --from FROM` with the destination URL in the environment (as an
/// operator keeps a password out of the process list).
fn migrate_to(config: &Path, from: &str, to: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(["migrate", "--from", from])
        .args(extra)
        .env("PORTCULLIS_MIGRATE_TO", to)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `migrate --from sqlite:FILE --to postgres://…` carries users, clients and live tokens:
/// afterwards a gateway on PostgreSQL accepts the access token the SQLite gateway issued,
/// exchanges its refresh token, signs alice in with her password and the client in with its
/// secret. A second run adds nothing; a record changed in the source since (a revocation) is
/// reported, never silently left behind.
#[tokio::test]
async fn migrate_moves_an_sqlite_store_into_postgres() {
    let Some(server) = common::postgres_server() else {
        return;
    };
    let url = common::fresh_postgres_database(&server);
    let served = serve_with("alice-pw", "", "").await;
    let auth = basic(&served.client_id, &served.client_secret);
    let token_url = format!("http://{}/o/token/", served.addr);
    let pair = post_form(
        &token_url,
        Some(&auth),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("scope", "read"),
        ],
    )
    .await;
    assert_eq!(pair.status, StatusCode::OK, "{}", pair.text());
    let pair = pair.json();
    let (access, refresh) = (
        common::field(&pair, "access_token"),
        common::field(&pair, "refresh_token"),
    );
    let Served {
        proc,
        config,
        client_id,
        client_secret,
        _dir,
        _upstream,
        ..
    } = served;
    let (clean_exit, logs) = proc.stop();
    assert!(clean_exit, "{logs}");
    let file = config.parent().unwrap().join("data/portcullis.db");
    let from = format!("sqlite:{}", file.display());

    let dry = migrate_to(&config, &from, &url, &["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("1 users, 1 clients, 0 consents, 1 access tokens, 1 refresh tokens"),
        "{}",
        stdout(&dry)
    );
    assert!(
        stdout(&dry).contains("4 records would be copied"),
        "{}",
        stdout(&dry)
    );
    let first = migrate_to(&config, &from, &url, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let said = stdout(&first);
    assert!(
        said.contains("added to the PostgreSQL database: 1 users, 1 clients"),
        "{said}"
    );
    assert!(said.contains("verified"), "{said}");
    assert!(
        !said.contains(&url),
        "the URL (it may hold a password) is never printed"
    );
    let again = migrate_to(&config, &from, &url, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains(
            "added to the PostgreSQL database: 0 users, 0 clients, 0 consents, 0 access tokens, 0 refresh tokens"
        ),
        "{}",
        stdout(&again)
    );

    let on_postgres = config.with_file_name("postgres.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &on_postgres,
        common::replaced(
            &yaml,
            "sqlite: data/portcullis.db",
            &format!("postgres: {url}"),
        ),
    )
    .unwrap();
    let mut gateway = Proc::spawn(&on_postgres, &["--log-format", "json", "serve"], false);
    let line = gateway.wait_for("portcullis listening");
    let addr = common::field(&serde_json::from_str(&line).unwrap(), "addr");
    let r = get(&format!("http://{addr}/api/users"), &access).await;
    assert_eq!(r.status, StatusCode::OK, "the SQLite gateway's token works");
    let token_url = format!("http://{addr}/o/token/");
    let auth = basic(&client_id, &client_secret);
    for form in [
        vec![("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        vec![
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-pw"),
        ],
        vec![("grant_type", "client_credentials")],
    ] {
        let r = post_form(&token_url, Some(&auth), &form).await;
        assert_eq!(r.status, StatusCode::OK, "{form:?}: {}", r.text());
    }
    let (clean_exit, logs) = gateway.stop();
    assert!(clean_exit, "{logs}");

    // Revoked in the source after the copy: the copy (which keeps what it has) differs.
    let revoke = portcullis(&config, &["tokens", "revoke", "--user", "alice"], None);
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    let stale = migrate_to(&config, &from, &url, &[]);
    assert_eq!(stale.status.code(), Some(1), "{}", stdout(&stale));
    assert!(
        stderr(&stale).contains("already existed in the destination with different contents"),
        "{}",
        stderr(&stale)
    );
    assert!(!stderr(&stale).contains(&url));
}

/// SIGHUP reloads the config of a gateway with no TLS listener (it once ended such a process
/// at once): a valid change applies; a listener change is reported as needing a restart and
/// the process keeps its address; an invalid file is refused with its file and line, and the
/// running config keeps serving; SIGTERM still drains and exits cleanly.
#[tokio::test]
async fn sighup_reloads_the_config_and_never_ends_the_process() {
    let served = serve_with("pw", "", "").await;
    let Served {
        mut proc,
        config,
        addr,
        client_id,
        client_secret,
        _dir,
        _upstream,
    } = served;
    let hup = |proc: &Proc| {
        Command::new("kill")
            .arg("-HUP")
            .arg(proc.child.id().to_string())
            .status()
            .unwrap();
    };
    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        common::replaced(
            &yaml,
            "path: /public, auth: none",
            "path: /open, auth: none",
        ),
    )
    .unwrap();
    hup(&proc);
    proc.wait_for("config reloaded");
    let r = common::fetch(
        &common::http_client(),
        http::Request::get(format!("http://{addr}/open/x"))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "the new route serves");

    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        common::replaced(&yaml, "\nlisten: 127.0.0.1:0", "\nlisten: 127.0.0.1:1"),
    )
    .unwrap();
    hup(&proc);
    let line = proc.wait_for("takes effect only after a restart");
    assert!(line.contains("\"setting\":\"listen\""), "{line}");

    std::fs::write(&config, format!("{yaml}\nbogus_key: 1\n")).unwrap();
    hup(&proc);
    let line = proc.wait_for("config reload refused");
    assert!(line.contains("unknown key `bogus_key`"), "{line}");
    assert!(line.contains("\"line\":"), "{line}");
    let auth = basic(&client_id, &client_secret);
    let r = post_form(
        &format!("http://{addr}/o/token/"),
        Some(&auth),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "still serving: {}", r.text());
    let (clean_exit, logs) = proc.stop();
    assert!(clean_exit, "{logs}");
}

/// `routes explain` on the real binary: a routed request (exit 0) and a refused one (exit 1);
/// `check` warns, with file and line, about a route another one shadows, and still passes.
#[test]
fn routes_explain_and_check_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.yaml");
    let yaml = common::config_yaml("http://127.0.0.1:9", "", "");
    let yaml = common::replaced(
        &yaml,
        "  - { path: /public, auth: none, upstream: legacy }",
        "  - { path: /PUBLIC, case_insensitive: true, auth: none, upstream: legacy }\n  - { path: /public, methods: [GET], auth: none, upstream: legacy }",
    );
    std::fs::write(&config, yaml).unwrap();

    let routed = portcullis(
        &config,
        &["routes", "explain", "GET", "/api/./users//7?x=1"],
        None,
    );
    assert!(routed.status.success(), "{}", stderr(&routed));
    let said = stdout(&routed);
    for line in [
        "canonical path: /api/users/7",
        "route: \"GET,HEAD /api/users\" (line 15)",
        "needs: a bearer token with the scopes read",
        "forwards to: upstream \"legacy\", http://127.0.0.1:9/api/users/7?x=1",
    ] {
        assert!(said.contains(line), "{line:?} in\n{said}");
    }
    let refused = portcullis(&config, &["routes", "explain", "PATCH", "/nowhere"], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stdout(&refused).contains("refused (404): no route's path covers it"));
    let lower = portcullis(&config, &["routes", "explain", "get", "/api/users"], None);
    assert_eq!(lower.status.code(), Some(1));
    assert!(stderr(&lower).contains("methods are case-sensitive"));

    let check = portcullis(&config, &["check"], None);
    assert!(check.status.success(), "{}", stderr(&check));
    let said = stdout(&check);
    assert!(
        said.contains(&format!(
            "{}:19: warning: route \"GET /public\" (line 19) is never used: GET (route \"/PUBLIC\" (line 18) takes it)",
            config.display()
        )),
        "{said}"
    );
    assert!(said.contains("; 1 warnings)"), "{said}");
}

/// `import dot --dry-run` on the real binary: what a django-oauth-toolkit database holds,
/// what would carry over, each record left behind with its reason, and nothing written.
#[test]
fn import_dot_dry_run_reports_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dot/dot.sqlite3");
    let out = portcullis(
        &config,
        &[
            "import",
            "dot",
            "--database",
            &format!("sqlite:{}", fixture.display()),
            "--dry-run",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    for line in [
        "django-oauth-toolkit database: 6 users, 5 applications, 4 access tokens, 2 refresh tokens",
        "carried over: 5 users, 3 clients, 0 consents, 2 access tokens, 1 refresh tokens",
        "  - user \"dave\": not imported: inactive in Django",
        "dry run: nothing written",
    ] {
        assert!(said.contains(line), "{line:?} in\n{said}");
    }
    let users = portcullis(&config, &["users", "list"], None);
    assert!(!stdout(&users).contains("bob"), "{}", stdout(&users));
    let missing = portcullis(
        &config,
        &["import", "dot", "--database", "sqlite:/nonexistent/dot.db"],
        None,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("cannot open /nonexistent/dot.db"),
        "{}",
        stderr(&missing)
    );
}

/// The binary's allocator carries the options `.cargo/config.toml` builds into it: jemalloc
/// prints its options at exit when asked to (through the run-time override, which adds to
/// the built-in ones rather than replacing them).
#[test]
fn the_allocator_options_are_built_in() {
    let out = Command::new(BIN)
        .arg("--version")
        .env(
            "_RJEM_MALLOC_CONF",
            "stats_print:true,stats_print_opts:mdablxeh",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stats = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        stats.contains("opt.tcache_nslots_small_min: 32"),
        "jemalloc's options: {}",
        stats
            .lines()
            .filter(|l| l.contains("opt."))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
