//! The store's faults are visible: a write lock held by another process, or a database file
//! deleted under a running gateway, make the token endpoints answer 503 within a bounded time
//! and `/readyz` say so — never a queue of requests each waiting out the busy timeout, never
//! tokens issued into a file that is gone.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, Options, basic, raw_form_request, raw_status};
use http::StatusCode;

fn options() -> Options {
    Options {
        extra_store: "\n  busy_timeout_ms: 500".into(),
        ..Options::default()
    }
}

async fn readyz(h: &Harness) -> StatusCode {
    let url: http::Uri = format!("http://{}/readyz", h.admin).parse().unwrap();
    h.http.get(url).await.unwrap().status()
}

/// Issues a client_credentials token on a connection of its own; returns the raw response.
fn issue(h: &Harness) -> impl std::future::Future<Output = String> + Send + 'static {
    let auth = basic(&h.client.id, &h.client.secret);
    let addr = h.local_addr();
    async move {
        common::raw_exchange(
            addr,
            &raw_form_request(
                "/o/token/",
                Some(&auth),
                &[("grant_type", "client_credentials")],
            ),
        )
        .await
    }
}

#[tokio::test]
async fn a_write_lock_held_elsewhere_is_a_bounded_503() {
    let h = Harness::with(options()).await;
    assert_eq!(readyz(&h).await, StatusCode::OK);
    // Another process (here: another connection) holds SQLite's write lock.
    let other = rusqlite::Connection::open(h.db_path()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let started = Instant::now();
    let queued: Vec<_> = (0..8).map(|_| issue(&h)).collect();
    let answers = futures_join_all(queued).await;
    let took = started.elapsed();
    for raw in &answers {
        assert_eq!(raw_status(raw), 503, "{raw}");
        assert!(raw.contains("temporarily_unavailable"), "{raw}");
    }
    // Eight queued writes, a 500 ms busy timeout: they fail together, not one after another
    // (which would take at least 4 s). The bound is loose for a slow machine.
    assert!(
        took < Duration::from_secs(3),
        "queued failures took {took:?}"
    );
    assert_eq!(readyz(&h).await, StatusCode::SERVICE_UNAVAILABLE);
    let m = h.metrics().await;
    assert!(
        m.contains(r#"portcullis_token_issued_total{grant_type="client_credentials",outcome="server_error"}"#),
        "{m}"
    );
    assert!(
        m.contains("\nportcullis_ready 0\n"),
        "the probe's finding is a metric"
    );

    // Released: ready again, and tokens are issued.
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    assert_eq!(readyz(&h).await, StatusCode::OK);
    assert!(h.metrics().await.contains("\nportcullis_ready 1\n"));
    let raw = issue(&h).await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    // Store failures are not the client's: they never count toward its back-off.
    h.shutdown().await;
}

#[tokio::test]
async fn a_deleted_database_file_stops_issuance_and_readiness() {
    let h = Harness::with(options()).await;
    let raw = issue(&h).await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    let db = h.db_path();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let raw = issue(&h).await;
    assert_eq!(
        raw_status(&raw),
        503,
        "tokens issued into a deleted file: {raw}"
    );
    assert_eq!(readyz(&h).await, StatusCode::SERVICE_UNAVAILABLE);
    // A new, empty file at the path is not the store either.
    std::fs::write(&db, b"").unwrap();
    let raw = issue(&h).await;
    assert_eq!(raw_status(&raw), 503, "{raw}");
    assert_eq!(readyz(&h).await, StatusCode::SERVICE_UNAVAILABLE);
    h.shutdown().await;
}

/// Runs the futures at once and collects their outputs in order.
async fn futures_join_all<F: std::future::Future<Output = String> + Send + 'static>(
    futures: Vec<F>,
) -> Vec<String> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
