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
use portcullis::store::postgres::PostgresStore;

#[tokio::test]
async fn replicas_share_tokens_and_revocations() {
    let Some(options) = Options::postgres() else {
        return;
    };
    let a = Harness::with(options).await;
    let b = a.replica().await;
    let pair = a.password_token("read").await;
    let token = field(&pair, "access_token");
    // Issued on A, valid on B (B has never seen it: a store read, then B's cache).
    a.get_ok("/api/users/1", Some(&token)).await;
    b.get_ok("/api/users/1", Some(&token)).await;
    // A refresh on B rotates the family A issued.
    let refreshed = b.refresh(&a.client, &field(&pair, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    let second = field(&refreshed.json(), "access_token");
    a.get_ok("/api/users/1", Some(&second)).await;

    // Revoked on B; A, which holds it in its cache, follows the revocation log.
    let revoked_at = Instant::now();
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
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        b.get("/api/users/1", Some(&second)).await.status,
        StatusCode::UNAUTHORIZED,
        "the revoking replica refuses at once"
    );
    eventually("the other replica refuses the revoked token", || async {
        (a.get("/api/users/1", Some(&second)).await.status == StatusCode::UNAUTHORIZED)
            .then_some(())
    })
    .await;
    eprintln!(
        "revocation reached the other replica after {:?} (cache.revocation_poll_ms: 1000)",
        revoked_at.elapsed()
    );
    // Readiness on PostgreSQL is a real write transaction.
    let ready = a
        .http
        .get(format!("http://{}/readyz", a.admin).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
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
