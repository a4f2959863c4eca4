//! The PostgreSQL store through the gateway: replicas on one database share users, clients
//! and tokens, a revocation on one reaches the others' caches through the revocation log,
//! and migrations run once however many replicas start together. Each test gets a fresh
//! database on the server `PORTCULLIS_TEST_DATABASE_URL` names; without it they skip, saying
//! so (under CI they fail instead).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::ca::Ca;

use common::*;
use http::StatusCode;
use portcullis::config::PostgresConfig;
use portcullis::store::Store as _;
use portcullis::store::postgres::PostgresStore;
use portcullis::store::postgres::notify::Listener;

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
    let r = b.revoke(&a.client, &second).await;
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

fn config(url: &str, ca_file: Option<PathBuf>) -> PostgresConfig {
    PostgresConfig {
        url: url.to_owned(),
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
        ca_file,
    }
}

fn open(url: &str) -> Result<PostgresStore, String> {
    PostgresStore::open(&config(url, None)).map_err(|e| e.to_string())
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

/// The token indexes on columns a `client_credentials` token leaves NULL are partial (it
/// writes two B-trees fewer), and the planner still searches them for the store's lookups
/// (`column = value` implies `IS NOT NULL`).
#[test]
fn partial_token_indexes_serve_the_lookups() {
    let Some(server) = postgres_server() else {
        return;
    };
    let url = fresh_postgres_database(&server);
    open(&url).map(drop).expect("migrated");
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    // An empty table is cheapest to scan; the question is which index a search can use.
    db.batch_execute("SET enable_seqscan = off").unwrap();
    for (column, index, value) in [
        ("username", "access_tokens_user", "'u'"),
        ("refresh_digest", "access_tokens_refresh", "'\\x00'::bytea"),
    ] {
        let def: String = db
            .query_one(
                "SELECT indexdef FROM pg_indexes WHERE indexname = $1",
                &[&index],
            )
            .unwrap()
            .get(0);
        assert!(
            def.ends_with(&format!("WHERE ({column} IS NOT NULL)")),
            "{def}"
        );
        let plan: Vec<String> = db
            .query(
                &format!(
                    "EXPLAIN SELECT digest FROM access_tokens \
                     WHERE {column} = {value} AND revoked_at IS NULL AND expires_at > 0"
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(plan.iter().any(|l| l.contains(index)), "{column}: {plan:?}");
    }
}

/// A wrong address is a clear error that names no password.
#[test]
fn a_database_that_cannot_be_reached_is_a_clear_error() {
    let err = open("postgres://gw:s3cret-password@127.0.0.1:1/portcullis").expect_err("port 1");
    assert!(err.contains("PostgreSQL"), "{err}");
    assert!(!err.contains("s3cret-password"), "{err}");
    let err =
        open("postgres://gw:s3cret-password@127.0.0.1:1/portcullis?sslmode=verify-everything")
            .expect_err("not an sslmode");
    assert!(
        err.contains("sslmode") && !err.contains("s3cret-password"),
        "{err}"
    );
}

/// TLS with a certificate `ca` signed for `names`.
fn acceptor(ca: &Ca, names: &[&str], dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = (dir.join("db.crt"), dir.join("db.key"));
    ca.leaf_for(names, &cert, &key);
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap(),
        PrivateKeyDer::from_pem_file(&key).unwrap(),
    )
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(tls))
}

/// A front for the test server that offers TLS with `tls` (as a managed PostgreSQL does) or,
/// without it, refuses TLS: it answers the client's SSLRequest with `S` and completes the
/// handshake (or answers `N`), then relays the protocol to the real server. A client that
/// starts without the SSLRequest is dropped. Counts the TLS handshakes that completed.
async fn database_front(
    server: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&handshakes);
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let (tls, counted) = (tls.clone(), Arc::clone(&counted));
            tokio::spawn(async move {
                // SSLRequest: length 8, then the code 80877103.
                let mut request = [0u8; 8];
                client.read_exact(&mut request).await.ok()?;
                if request != [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f] {
                    return None;
                }
                let mut upstream = tokio::net::TcpStream::connect(server).await.ok()?;
                let Some(tls) = tls else {
                    client.write_all(b"N").await.ok()?;
                    return tokio::io::copy_bidirectional(&mut client, &mut upstream)
                        .await
                        .ok();
                };
                client.write_all(b"S").await.ok()?;
                let mut client = tls.accept(client).await.ok()?;
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::io::copy_bidirectional(&mut client, &mut upstream)
                    .await
                    .ok()
            });
        }
    });
    (addr, handshakes)
}

/// The parts of a `scheme://userinfo@host:port/rest` URL.
fn url_parts(url: &str) -> (&str, &str, &str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, rest) = rest.split_once('@').unwrap();
    let (host, rest) = rest.split_once('/').unwrap();
    (scheme, userinfo, host, rest)
}

/// `url` with its host and port replaced by `addr`, and the `sslmode` given.
fn through(url: &str, addr: SocketAddr, sslmode: Option<&str>) -> String {
    let (scheme, userinfo, _, rest) = url_parts(url);
    let mut out = format!("{scheme}://{userinfo}@{addr}/{rest}");
    if let Some(mode) = sslmode {
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(&format!("sslmode={mode}"));
    }
    out
}

/// A store opened on `url` (with `ca_file`) works: a write, a read back, and the revocation
/// feed's connection.
fn works_over(
    rt: &tokio::runtime::Runtime,
    url: &str,
    ca_file: Option<PathBuf>,
) -> Result<(), String> {
    let options = config(url, ca_file);
    let store = PostgresStore::open(&options).map_err(|e| e.to_string())?;
    rt.block_on(async {
        let name = format!("user{}", std::process::id());
        let user = portcullis::store::UserRecord {
            username: name.clone(),
            password_hash: "x".into(),
            created_at: 1,
            is_admin: false,
        };
        match store.add_user(user).await {
            Ok(()) | Err(portcullis::store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        assert!(store.user(&name).await.unwrap().is_some());
        Listener::connect(&options).await.map(drop)
    })
}

/// TLS to the database with libpq's `sslmode` meanings: by default TLS whenever the server
/// offers it; `verify-full` checks the chain against `store.ca_file` (or the system roots)
/// and the host name; `verify-ca` the chain only. The store and the revocation feed alike.
#[test]
fn tls_to_the_database_follows_sslmode() {
    let Some(server) = postgres_server() else {
        return;
    };
    let url = fresh_postgres_database(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let real: SocketAddr = url_parts(&url)
        .2
        .parse()
        .expect("the test server is at an IP address");
    let named = dir.path().join("named");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&named).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let (trusted, handshakes) = rt.block_on(database_front(
        real,
        Some(acceptor(&ca, &["127.0.0.1"], &named)),
    ));
    let (elsewhere, _) = rt.block_on(database_front(
        real,
        Some(acceptor(&ca, &["db.internal"], &other)),
    ));
    let (plain, _) = rt.block_on(database_front(real, None));

    // The default (`prefer`) uses the TLS the server offers.
    works_over(&rt, &through(&url, trusted, None), None).expect("prefer");
    assert!(
        handshakes.load(Ordering::SeqCst) >= 2,
        "the store and the feed used TLS"
    );
    let full = through(&url, trusted, Some("verify-full"));
    works_over(&rt, &full, Some(ca_file.clone())).expect("verify-full with the CA");
    let err = works_over(&rt, &full, None).expect_err("the test CA is not a system root");
    assert!(err.contains("invalid peer certificate"), "{err}");

    let other_name = through(&url, elsewhere, Some("verify-full"));
    let err = works_over(&rt, &other_name, Some(ca_file.clone()))
        .expect_err("the certificate names another host");
    assert!(err.contains("not valid for name"), "{err}");
    works_over(
        &rt,
        &through(&url, elsewhere, Some("verify-ca")),
        Some(ca_file),
    )
    .expect("verify-ca checks the chain only");

    // A server that offers no TLS: `prefer` goes on without it, `require` is refused, never
    // silently downgraded.
    works_over(&rt, &through(&url, plain, None), None).expect("prefer, no TLS offered");
    let err = works_over(&rt, &through(&url, plain, Some("require")), None)
        .expect_err("TLS is required but not offered");
    assert!(err.contains("PostgreSQL") && err.contains("TLS"), "{err}");
}
