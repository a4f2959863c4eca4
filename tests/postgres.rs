//! The PostgreSQL store through the gateway: replicas on one database share users, clients
//! and tokens, a revocation on one reaches the others' caches through the revocation log,
//! and migrations run once however many replicas start together. Each test gets a fresh
//! database on the server `PORTCULLIS_TEST_DATABASE_URL` names; without it they skip, saying
//! so (under CI they fail instead).

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use portcullis::config::PostgresConfig;
use portcullis::store::Store as _;
use portcullis::store::postgres::PostgresStore;

/// Replicas whose log poll is far too slow to matter (60 s): what reaches them within the
/// test's patience came through the notification feed or the replay after a reconnect.
fn replicas() -> Option<Options> {
    Some(Options {
        extra: "cache: { revocation_poll_ms: 60000 }".into(),
        ..Options::postgres()?
    })
}

/// The bound README.md promises for a revocation to reach every replica.
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);

/// Three gateways on one database: a token issued on A works on B and C; revoked on B, it
/// fails on A and C within the documented bound, measured from the revocation's answer.
#[tokio::test]
async fn three_replicas_share_tokens_and_revocations() {
    let Some(options) = replicas() else {
        return;
    };
    let a = Harness::with(options).await;
    let b = a.replica().await;
    let c = a.replica().await;
    let pair = a.password_token("read").await;
    let token = field(&pair, "access_token");
    // Issued on A, valid on B and C (they have never seen it: a store read, then their cache).
    for r in [&a, &b, &c] {
        r.get_ok("/api/users/1", Some(&token)).await;
    }
    // A refresh on B rotates the family A issued; the new token works everywhere.
    let refreshed = b.refresh(&a.client, &field(&pair, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    let second = field(&refreshed.json(), "access_token");
    for r in [&a, &b, &c] {
        r.get_ok("/api/users/1", Some(&second)).await;
    }

    for r in [&a, &c] {
        feed_connected(r, 1).await;
    }
    // Revoked on B; A and C hold it in their caches and hear of it from B's notification.
    let r = b
        .send(
            http::Method::POST,
            "/o/revoke_token/",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &basic(&a.client.id, &a.client.secret)),
            ],
            format!("token={second}").as_bytes(),
        )
        .await;
    let revoked_at = Instant::now();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        b.get("/api/users/1", Some(&second)).await.status,
        StatusCode::UNAUTHORIZED,
        "the revoking replica refuses at once"
    );
    for (name, r) in [("A", &a), ("C", &c)] {
        eventually("the other replicas refuse the revoked token", || async {
            (r.get("/api/users/1", Some(&second)).await.status == StatusCode::UNAUTHORIZED)
                .then_some(())
        })
        .await;
        let took = revoked_at.elapsed();
        eprintln!("revocation on B refused by {name} after {took:?}");
        assert!(took < PROPAGATION_BOUND, "{name}: {took:?}");
    }
    // Two notifications reached A: the rotation on B revoked the first access token (issued
    // from the rotated refresh token), then the revocation.
    let m = a.metrics().await;
    assert!(
        m.contains("portcullis_revocation_propagation_seconds_count 2"),
        "A measured the propagation: {m}"
    );
    // Readiness on PostgreSQL is a real write transaction.
    let ready = a
        .http
        .get(format!("http://{}/readyz", a.admin).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// A replica whose feed connection is cut reconnects and replays the log: a revocation made
/// while it was not listening still reaches its cache (its log poll is 60 s away).
#[tokio::test]
async fn a_replica_that_lost_its_feed_replays_what_it_missed() {
    let Some(options) = replicas() else {
        return;
    };
    let a = Harness::with(options).await;
    let b = a.replica().await;
    let token = a.access_token("read").await;
    a.get_ok("/api/users/1", Some(&token)).await;
    feed_connected(&a, 1).await;

    // A third writer, connected before the database stops taking connections.
    let url = database_url(&a);
    let other = tokio::task::spawn_blocking(move || open(&url).unwrap())
        .await
        .unwrap();
    // Keep A from listening again: no new connections to this database, the listening
    // sessions cut.
    let db_name = database_name(&a);
    admin(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS false"));
    let killed = admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = '{db_name}' AND query LIKE 'LISTEN%'"
    ));
    assert_eq!(killed, 2, "both replicas' feeds were listening");
    eventually("A tried to listen again and could not", || async {
        a.metrics()
            .await
            .contains("portcullis_revocation_feed_total{outcome=\"failed\"}")
            .then_some(())
    })
    .await;
    // Revoked while A cannot hear of it.
    other
        .revoke_tokens_of(
            portcullis::store::TokenOwner::User("alice".into()),
            a.clock_now(),
        )
        .await
        .unwrap();
    assert_eq!(
        a.get("/api/users/1", Some(&token)).await.status,
        StatusCode::OK,
        "still cached: A has not heard"
    );
    admin(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"));
    feed_connected(&a, 2).await;
    eventually(
        "A refuses the token revoked while it was not listening",
        || async {
            (a.get("/api/users/1", Some(&token)).await.status == StatusCode::UNAUTHORIZED)
                .then_some(())
        },
    )
    .await;
    let m = a.metrics().await;
    assert!(
        m.contains("portcullis_revocation_feed_total{outcome=\"lost\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_revocation_propagation_seconds_count 0"),
        "it came by the replay, not by a notification: {m}"
    );
    drop(b);
}

/// A replica that can neither hear notifications nor read the log stops trusting its cache
/// after two poll intervals (at least 1 s): a cached token is checked against the store
/// again, which answers 503 while the database is unreachable, and works again once it is
/// back.
#[tokio::test]
async fn a_replica_cut_off_from_revocations_stops_trusting_its_cache() {
    let Some(options) = Options::postgres() else {
        return;
    };
    let a = Harness::with(Options {
        extra: "cache: { revocation_poll_ms: 200 }".into(),
        ..options
    })
    .await;
    let token = a.access_token("read").await;
    a.get_ok("/api/users/1", Some(&token)).await;
    feed_connected(&a, 1).await;
    let db_name = database_name(&a);
    // Every session of A (its pool and its feed) cut, and no new one allowed.
    admin(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS false"));
    admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db_name}'"
    ));
    eventually("A stops answering from its cache", || async {
        (a.get("/api/users/1", Some(&token)).await.status == StatusCode::SERVICE_UNAVAILABLE)
            .then_some(())
    })
    .await;
    admin(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"));
    eventually(
        "the token works again once the database is back",
        || async {
            (a.get("/api/users/1", Some(&token)).await.status == StatusCode::OK).then_some(())
        },
    )
    .await;
}

/// Waits until `h`'s revocation feed has connected `n` times.
async fn feed_connected(h: &Harness, n: u32) {
    eventually("the revocation feed connects", || async {
        h.metrics()
            .await
            .contains(&format!(
                "portcullis_revocation_feed_total{{outcome=\"connected\"}} {n}"
            ))
            .then_some(())
    })
    .await;
}

/// Runs one statement on the test server's own database (not `h`'s), as its administrator;
/// returns the rows it produced.
fn admin(sql: &str) -> usize {
    let server = postgres_server().unwrap();
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&server, postgres::NoTls).unwrap();
        c.query(&sql, &[]).unwrap().len()
    })
    .join()
    .unwrap()
}

/// The name of `h`'s database.
fn database_name(h: &Harness) -> String {
    database_url(h).rsplit('/').next().unwrap().to_owned()
}

/// The database URL a harness's config names.
fn database_url(h: &Harness) -> String {
    match &h.config.store {
        portcullis::config::StoreConfig::Postgres(pg) => pg.url.clone(),
        other => panic!("not PostgreSQL: {other:?}"),
    }
}

fn open(url: &str) -> Result<PostgresStore, String> {
    let config = PostgresConfig {
        url: url.to_owned(),
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    };
    PostgresStore::open(&config).map_err(|e| e.to_string())
}

/// Several replicas starting at once: one applies the migrations, the others wait for it and
/// find nothing to do. A schema newer than the binary is refused, never written to.
#[test]
fn migrations_run_once_and_a_newer_schema_is_refused() {
    let Some(server) = postgres_server() else {
        return;
    };
    let url = fresh_postgres_database(&server);
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || open(&url).map(drop))
        })
        .collect();
    for s in starts {
        s.join().unwrap().expect("every replica starts");
    }
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows = db
        .query("SELECT version FROM portcullis_schema", &[])
        .unwrap();
    assert_eq!(rows.len(), 1, "one version row");
    let version: i64 = rows[0].get(0);
    assert!(version >= 1);

    db.execute("UPDATE portcullis_schema SET version = version + 1", &[])
        .unwrap();
    let err = open(&url).expect_err("a newer schema is refused");
    assert!(
        err.contains(&format!("schema is at version {}", version + 1))
            && err.contains("newer than this binary"),
        "{err}"
    );
}

/// A wrong address is a clear error that names no password; a URL that requires TLS is
/// refused (connections are plaintext for now), never silently downgraded.
#[test]
fn a_database_that_cannot_be_reached_is_a_clear_error() {
    let err = open("postgres://gw:s3cret-password@127.0.0.1:1/portcullis").expect_err("port 1");
    assert!(err.contains("PostgreSQL"), "{err}");
    assert!(!err.contains("s3cret-password"), "{err}");
    let Some(server) = postgres_server() else {
        return;
    };
    let url = fresh_postgres_database(&server);
    let tls = if url.contains('?') {
        "&sslmode=require"
    } else {
        "?sslmode=require"
    };
    let err = open(&format!("{url}{tls}")).expect_err("TLS is required but not offered");
    assert!(err.contains("PostgreSQL") && err.contains("TLS"), "{err}");
}
