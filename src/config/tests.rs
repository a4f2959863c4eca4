use std::path::Path;
use std::time::Duration;

use http::Method;

use super::*;
use crate::routes::RouteAuth;

const BASE: &str = r#"
listen: 127.0.0.1:8080
admin_listen: 127.0.0.1:9090
store:
  sqlite: data/portcullis.db
oauth:
  scopes: { read: Read scope, write: Write scope, groups: Access to your groups }
  default_scopes: [read]
upstreams:
  legacy: { url: http://127.0.0.1:9000 }
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.yaml"), Path::new("/etc/portcullis"))
}

fn problems(text: &str) -> Vec<(u64, String)> {
    parse(text)
        .expect_err("config should be rejected")
        .problems
        .into_iter()
        .map(|p| (p.line, p.message))
        .collect()
}

#[test]
fn shipped_config_is_valid() {
    let text = include_str!("../../config/portcullis.yaml");
    let c = parse(text).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(c.oauth.access_token_expire_seconds, 1200);
    assert_eq!(c.oauth.refresh_token_expire_seconds, 3600);
    assert!(c.oauth.rotate_refresh_token);
    assert_eq!(c.oauth.default_scopes.to_string(), "read");
    assert_eq!(c.routes.len(), 4);
    assert_eq!(c.identity_headers.user.as_str(), "x-auth-user");
    let StoreConfig::Sqlite { path, .. } = &c.store else {
        panic!("the shipped config uses SQLite")
    };
    assert_eq!(
        path,
        Path::new("/etc/portcullis/data/portcullis.db"),
        "relative to the config file"
    );
    let users = c.routes.find(&Method::GET, "/api/users/1").unwrap();
    assert_eq!(&*users.id, "GET,HEAD /api/users");
    assert_eq!(
        users.auth,
        RouteAuth::Bearer {
            scopes: crate::scope::ScopeSet::parse("read").unwrap()
        }
    );
    assert_eq!(
        c.routes.find(&Method::GET, "/public/x").unwrap().auth,
        RouteAuth::Public
    );
}

#[test]
fn defaults_apply() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.oauth.access_token_expire_seconds, 3600);
    assert_eq!(c.oauth.refresh_token_expire_seconds, 14 * 24 * 3600);
    assert_eq!(c.oauth.realm, "portcullis");
    assert_eq!(c.cache.ttl, None);
    assert_eq!(c.oauth.refresh_token_grace_period_seconds, 5);
    assert_eq!(c.oauth.rate_limits.per_user_per_minute, 60);
    assert_eq!(c.oauth.rate_limits.identity_failures_before_backoff, 100);
    assert_eq!(c.oauth.rate_limits.max_backoff, Duration::from_secs(300));
    assert_eq!(c.limits.connection.max_connections, 10_000);
    assert_eq!(
        c.limits.connection.header_read_timeout,
        Duration::from_secs(10)
    );
    assert_eq!(c.limits.connection.write_timeout, Duration::from_secs(60));
    assert_eq!(c.limits.connection.max_header_bytes, 32 * 1024);
    assert_eq!(c.limits.token_request_max_bytes, 16384);
    assert_eq!(c.limits.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(c.cache.max_entries, 1_000_000);
    assert_eq!(c.cache.revocation_poll, Duration::from_secs(1));
    assert_eq!(c.cleanup.batch_size, 1000);
    let StoreConfig::Sqlite { busy_timeout, .. } = &c.store else {
        panic!("BASE uses SQLite")
    };
    assert_eq!(*busy_timeout, Duration::from_secs(5));
    // One worker per CPU the process may run on, counted here from the affinity mask
    // rather than with the code's own expression.
    let cpus = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        libc::CPU_COUNT(&set) as usize
    };
    assert_eq!(c.workers, cpus);
    assert_eq!(c.identity_headers.scopes.as_str(), "x-auth-scopes");
    let legacy = &c.upstreams["legacy"];
    assert_eq!(legacy.url(), "http://127.0.0.1:9000");
    assert_eq!(legacy.connect_timeout, Duration::from_secs(2));
    assert_eq!(legacy.response_timeout, Duration::from_secs(30));
}

#[test]
fn unknown_keys_are_errors_with_their_line() {
    let cases = [
        (format!("{BASE}routs: []\n"), 11, "routs"),
        (
            format!("{BASE}routes:\n  - {{ path: /api, scoeps: [read], upstream: legacy }}\n"),
            12,
            "scoeps",
        ),
        (
            BASE.replace("default_scopes", "default_scope"),
            8,
            "default_scope",
        ),
    ];
    for (text, line, key) in cases {
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, line, "{p:?}");
        assert!(p[0].1.contains(key), "{p:?}");
    }
}

#[test]
fn all_unknown_keys_are_reported_at_once_with_other_problems() {
    let text = format!(
        "{BASE}colour: blue
routes:
  - {{ path: /api, scoeps: [read], upstream: legacy }}
  - {{ path: /b, scopes: [nope], upstream: legacy, methds: [GET] }}
limits: {{ max_conections: 5 }}
"
    );
    let p = problems(&text);
    let expect: &[(u64, &str)] = &[
        (11, "unknown key `colour`"),
        (13, "unknown key `routes[0].scoeps`"),
        (14, "unknown scope \"nope\""),
        (14, "unknown key `routes[1].methds`"),
        (15, "unknown key `limits.max_conections`"),
    ];
    assert_eq!(p.len(), expect.len(), "{p:#?}");
    for (want_line, want) in expect {
        assert!(
            p.iter()
                .any(|(line, msg)| line == want_line && msg.contains(want)),
            "{want:?} at line {want_line} missing from {p:#?}"
        );
    }
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = format!(
        "{BASE}routes:
  - {{ path: /api/users, methods: [GET], scopes: [read, admin], upstream: legacy }}
  - {{ path: /api/users, methods: [GET, POST], scopes: [read], upstream: legacy }}
  - {{ path: /api, scopes: [write], upstream: nowhere }}
  - {{ path: /api//x, upstream: legacy }}
  - {{ path: /p, auth: none, scopes: [read], upstream: legacy }}
  - {{ path: /q, methods: [get], upstream: legacy }}
  - {{ path: /o/applications, upstream: legacy }}
"
    );
    let p = problems(&text);
    let expect: &[(u64, &str)] = &[
        (12, "unknown scope \"admin\""),
        (13, "duplicate route: path \"/api/users\""),
        (14, "unknown upstream \"nowhere\""),
        (15, "not canonical"),
        (16, "cannot require `scopes`"),
        (17, "\"get\" is not an HTTP method"),
        (18, "reserved"),
    ];
    assert_eq!(p.len(), expect.len(), "{p:#?}");
    for ((line, msg), (want_line, want)) in p.iter().zip(expect) {
        assert_eq!(line, want_line, "{msg}");
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
    }
    let rendered = parse(&text).unwrap_err().to_string();
    assert!(
        rendered.starts_with("test.yaml has 7 problems"),
        "{rendered}"
    );
    assert!(rendered.contains("test.yaml:14:"), "{rendered}");
}

#[test]
fn bad_values_are_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "listen: 127.0.0.1:8080",
            "listen: localhost",
            "`listen` must be an IP address",
        ),
        (
            "url: http://127.0.0.1:9000",
            "url: ftp://10.0.0.1",
            "must be http:// or https://",
        ),
        (
            "url: http://127.0.0.1:9000",
            "url: not a url",
            "absolute URL",
        ),
        (
            "default_scopes: [read]",
            "default_scopes: [admin]",
            "default scope \"admin\"",
        ),
        (
            "admin_listen: 127.0.0.1:9090",
            "admin_listen: 127.0.0.1:8080",
            "must differ",
        ),
        (
            "read: Read scope",
            "\"re ad\": Read scope",
            "not a valid RFC 6749 scope token",
        ),
    ];
    for (from, to, want) in cases {
        let text = BASE.replace(from, to);
        assert_ne!(text, BASE, "{from}");
        let p = problems(&text);
        assert!(p.iter().any(|(_, m)| m.contains(want)), "{to}: {p:?}");
    }
    for (workers, want) in [
        ("0", "`workers` must be greater than zero"),
        ("1025", "`workers` must be at most 1024"),
    ] {
        let text = format!("{BASE}workers: {workers}\n");
        let p = problems(&text);
        assert!(p.iter().any(|(_, m)| m.contains(want)), "{workers}: {p:?}");
    }
    assert_eq!(parse(&format!("{BASE}workers: 3\n")).unwrap().workers, 3);
    let zero = format!("{BASE}cache: {{ ttl_seconds: 0 }}\n");
    assert!(problems(&zero)[0].1.contains("greater than zero"));
    let ids =
        format!("{BASE}identity_headers: {{ user: X-Who, client: x_who, scopes: X-Scopes }}\n");
    assert!(problems(&ids)[0].1.contains("three different headers"));
}

/// `store` is one backend: SQLite's file, or PostgreSQL's URL (written out or named by an
/// environment variable) with its pool and timeouts; keys of the other backend are errors.
#[test]
fn the_store_is_sqlite_or_postgres() {
    let sqlite = "store:\n  sqlite: data/portcullis.db\n";
    let with = |store: &str| BASE.replace(sqlite, store);
    let c = parse(&with(
        "store:\n  postgres: postgres://gw@db.internal:5432/portcullis\n  pool_size: 8\n  statement_timeout_ms: 2000\n",
    ))
    .unwrap();
    let StoreConfig::Postgres(pg) = &c.store else {
        panic!("postgres")
    };
    assert_eq!(pg.url, "postgres://gw@db.internal:5432/portcullis");
    assert_eq!(pg.pool_size, 8);
    assert_eq!(pg.statement_timeout, Duration::from_secs(2));
    assert_eq!(pg.connect_timeout, Duration::from_secs(5));
    assert!(
        !format!("{:?}", c.store).contains("db.internal"),
        "the URL (it may hold a password) is never in Debug output"
    );
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("PORTCULLIS_CONFIG_TEST_DB_URL", "postgres://x@y/z") };
    let c = parse(&with(
        "store:\n  postgres_url_env: PORTCULLIS_CONFIG_TEST_DB_URL\n",
    ))
    .unwrap();
    let StoreConfig::Postgres(pg) = &c.store else {
        panic!("postgres from the environment")
    };
    assert_eq!(pg.url, "postgres://x@y/z");
    let cases: &[(&str, &str)] = &[
        (
            "store:\n  postgres_url_env: PORTCULLIS_CONFIG_TEST_UNSET\n",
            "names \"PORTCULLIS_CONFIG_TEST_UNSET\", which is not set",
        ),
        (
            "store:\n  postgres: mysql://a/b\n",
            "must be a postgres:// URL",
        ),
        (
            "store:\n  sqlite: a.db\n  postgres: postgres://a/b\n",
            "takes one of `sqlite`, `postgres` and `postgres_url_env`",
        ),
        ("store: {}\n", "`store` needs `sqlite: FILE`"),
        (
            "store:\n  sqlite: a.db\n  pool_size: 4\n",
            "`store.pool_size` applies to PostgreSQL only",
        ),
        (
            "store:\n  postgres: postgres://a/b\n  busy_timeout_ms: 10\n",
            "`store.busy_timeout_ms` applies to SQLite only",
        ),
        (
            "store:\n  postgres: postgres://a/b\n  pool_size: 0\n",
            "`store.pool_size` must be greater than zero",
        ),
        (
            "store:\n  postgres: postgres://a/b\n  pool_size: 2000\n",
            "`store.pool_size` must be at most 1024",
        ),
        (
            "store:\n  postgres: postgres://a/b?sslmode=allow\n",
            "sslmode \"allow\" is not one of disable, prefer, require, verify-ca, verify-full",
        ),
        (
            "store:\n  postgres: postgres://a/b\n  ca_file: no-such-ca.pem\n",
            "`store.ca_file`: ",
        ),
        (
            "store:\n  sqlite: a.db\n  ca_file: ca.pem\n",
            "`store.ca_file` applies to PostgreSQL only",
        ),
    ];
    for (store, want) in cases {
        let p = problems(&with(store));
        assert!(p.iter().any(|(_, m)| m.contains(want)), "{store}: {p:?}");
        assert!(
            p.iter().all(|(line, _)| *line >= 4),
            "{store}: a line in the store section: {p:?}"
        );
    }
}

/// Every message names its full key path, and a value past a bound is reported, never cut
/// silently.
#[test]
fn messages_name_full_key_paths_and_bounds_are_reported() {
    let cases: &[(&str, &str)] = &[
        (
            "oauth:\n  rate_limits: { per_user_per_minute: 5000000000 }",
            "`oauth.rate_limits.per_user_per_minute` must be at most 4294967295",
        ),
        (
            "oauth:\n  rate_limits: { per_client_per_minute: 0 }",
            "`oauth.rate_limits.per_client_per_minute` must be greater than zero",
        ),
        (
            "oauth:\n  refresh_token_grace_period_seconds: 100000",
            "`oauth.refresh_token_grace_period_seconds` must be at most 86400",
        ),
        (
            "oauth:\n  access_token_expire_seconds: 99999999999999",
            "`oauth.access_token_expire_seconds` must be at most",
        ),
        (
            "upstreams:\n  legacy: { url: http://127.0.0.1:9000, connect_timeout_ms: 0 }",
            "`upstreams.legacy.connect_timeout_ms` must be greater than zero",
        ),
        (
            "upstreams:\n  legacy: { url: http://127.0.0.1:9000?x=1 }",
            "`upstreams.legacy.url` must not have a query",
        ),
        (
            "routes:\n  - { path: /a, upstream: legacy, max_body_bytes: 0 }",
            "`routes[0].max_body_bytes` must be greater than zero",
        ),
        (
            "limits: { max_header_bytes: 100 }",
            "`limits.max_header_bytes` must be at least 8192",
        ),
        (
            "store:\n  sqlite: x.db\n  busy_timeout_ms: 0",
            "`store.busy_timeout_ms` must be greater than zero",
        ),
        (
            "identity_headers: { user: \"bad header\" }",
            "`identity_headers.user`",
        ),
    ];
    for (extra, want) in cases {
        // The section replaces the base's one of the same name (YAML keys are unique).
        let section = extra.split(':').next().unwrap();
        let base: String = BASE
            .split_inclusive('\n')
            .scan(false, |skipping, line| {
                if line.starts_with(&format!("{section}:")) {
                    *skipping = true;
                    return Some(String::new());
                }
                if *skipping && line.starts_with(' ') {
                    return Some(String::new());
                }
                *skipping = false;
                Some(line.to_owned())
            })
            .collect();
        let text = if section == "oauth" {
            format!("{base}{extra}\n  scopes: {{ read: r }}\n  default_scopes: [read]\n")
        } else {
            format!("{base}{extra}\n")
        };
        let p = problems(&text);
        assert!(p.iter().any(|(_, m)| m.contains(want)), "{extra}: {p:?}");
    }
}

#[test]
fn yaml_syntax_errors_have_a_location() {
    let err = parse("listen: [unclosed\n").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0].line >= 1, "{err}");
}
