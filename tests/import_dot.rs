//! `portcullis import dot` against a real django-oauth-toolkit database
//! (tests/fixtures/dot/dot.sqlite3, made by the real Django and django-oauth-toolkit with
//! make_dot_fixture.py): after the import, Django users sign in with their Django passwords
//! (pbkdf2_sha256, argon2, bcrypt_sha256; rehashed to argon2id on first use), a client's
//! hashed secret and another's plaintext one work at /o/token/, and tokens django-oauth-toolkit
//! issued work at the guard and the refresh grant. The same database read from PostgreSQL
//! plans the same import.

mod common;

use std::path::PathBuf;

use common::{Harness, basic};
use http::StatusCode;
use portcullis::import_dot::{self, read};
use portcullis::migrate::Location;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dot/dot.sqlite3")
}

const BILLING: (&str, &str) = ("dot-billing", "billing-secret-value-1234");
const REPORTS: (&str, &str) = ("dot-reports", "reports-plain-secret-5678");

async fn password_grant(h: &Harness, user: &str, password: &str) -> common::Resp {
    h.token_raw(
        Some(&basic(BILLING.0, BILLING.1)),
        &[
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
            ("scope", "read"),
        ],
    )
    .await
}

/// A gateway whose store has none of the harness's own user (the Django alice comes in),
/// accepting imported tokens or not.
async fn gateway(imported_tokens: bool) -> Harness {
    let h = Harness::with(common::Options {
        extra_oauth: format!("  accept_imported_tokens: {imported_tokens}"),
        ..Default::default()
    })
    .await;
    assert!(h.store.remove_user("alice", 0).await.unwrap());
    h
}

/// Imports `location` into the harness's store as of its clock.
async fn import(
    h: &Harness,
    location: Location,
    dry_run: bool,
) -> Result<import_dot::Report, import_dot::ImportError> {
    import_dot::run(
        &h.store,
        &h.config.oauth,
        location,
        None,
        h.clock_now(),
        dry_run,
    )
    .await
}

#[tokio::test]
async fn django_users_clients_and_tokens_keep_working() {
    let h = gateway(true).await;
    let dry = import(&h, Location::Sqlite(fixture()), true).await.unwrap();
    assert_eq!(dry.found, [6, 5, 4, 2]);
    assert!(dry.added.is_none());
    assert!(
        h.store.user("bob").await.unwrap().is_none(),
        "a dry run writes nothing"
    );

    let report = import(&h, Location::Sqlite(fixture()), false)
        .await
        .unwrap();
    let p = report.planned;
    assert_eq!(
        (p.users, p.clients, p.access, p.refresh),
        (5, 3, 2, 1),
        "{report:#?}"
    );
    assert_eq!(report.added, Some(report.planned));
    for reason in [
        "user \"dave\": not imported: inactive in Django",
        "user \"frank\": imported, but its password hash (md5)",
        "user \"eve\": imported without a usable password",
        "application \"dot-implicit\" (\"Old implicit app\"): not imported: the \"implicit\" grant",
        "application \"dot-mobile\" (\"Mobile\"): not imported: authorization-code needs a redirect URI",
        "access token #4: not imported: scopes [\"admin\"]",
        "1 expired access tokens: not imported",
        "1 revoked refresh tokens: not imported",
    ] {
        assert!(
            report.notes.iter().any(|n| n.starts_with(reason)),
            "{reason:?} in {:#?}",
            report.notes
        );
    }

    // Tokens django-oauth-toolkit issued work at the guard; an expired one does not.
    h.get_ok("/api/users/1", Some("dot-access-alice-live-token-0001"))
        .await;
    h.get_ok("/api/users/1", Some("dot-access-reports-live-token-0002"))
        .await;
    let expired = h
        .get("/api/users/1", Some("dot-access-expired-token-0003"))
        .await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);

    // A Django user signs in at the sign-in page with their Django password (argon2 here);
    // a wrong one is refused.
    let mut browser = common::CookieClient::new(&h);
    let refused = browser.sign_in("bob", "not-bobs", "/o/applications/").await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        refused.text()
    );
    let signed_in = browser
        .sign_in("bob", "bob-dot-password", "/o/applications/")
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.text()
    );
    assert_eq!(signed_in.headers["location"], "/o/applications/");
    let stored = h.store.user("bob").await.unwrap().unwrap().password_hash;
    assert!(
        stored.starts_with("$argon2id$"),
        "rehashed at sign-in: {stored}"
    );

    // Each Django hasher's password works, through the client's hashed secret; the first
    // success replaces both with the native forms.
    for (user, password) in [
        ("alice", "alice-dot-password"),
        ("bob", "bob-dot-password"),
        ("carol", "carol-dot-password"),
    ] {
        assert_eq!(
            password_grant(&h, user, "wrong").await.status,
            StatusCode::BAD_REQUEST,
            "{user}: a wrong password"
        );
        let r = password_grant(&h, user, password).await;
        assert_eq!(r.status, StatusCode::OK, "{user}: {}", r.text());
        let stored = h.store.user(user).await.unwrap().unwrap().password_hash;
        assert!(
            stored.starts_with("$argon2id$"),
            "{user} rehashed: {stored}"
        );
        assert_eq!(
            password_grant(&h, user, password).await.status,
            StatusCode::OK
        );
    }
    let billing = h.store.client(BILLING.0).await.unwrap().unwrap();
    assert_eq!(
        billing.imported_secret, None,
        "the Django secret hash is gone"
    );
    assert_eq!(
        billing.secret_digest,
        Some(portcullis::crypto::Digest::of(BILLING.1))
    );
    let wrong_secret = h
        .token_raw(
            Some(&basic(BILLING.0, "guess")),
            &[("grant_type", "password")],
        )
        .await;
    assert_eq!(wrong_secret.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        password_grant(&h, "bob", "bob-dot-password").await.status,
        StatusCode::OK
    );
    assert!(
        h.store.user("bob").await.unwrap().unwrap().is_admin,
        "a Django superuser"
    );
    for unusable in ["eve", "frank"] {
        assert_eq!(
            password_grant(&h, unusable, "").await.status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            password_grant(&h, unusable, "frank-dot-password")
                .await
                .status,
            StatusCode::BAD_REQUEST
        );
    }

    // The plaintext secret, and a refresh token django-oauth-toolkit issued.
    let cc = h
        .token_raw(
            Some(&basic(REPORTS.0, REPORTS.1)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(cc.status, StatusCode::OK, "{}", cc.text());
    let refreshed = h
        .token_raw(
            Some(&basic(BILLING.0, BILLING.1)),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "dot-refresh-alice-token-0001"),
            ],
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    assert_eq!(refreshed.json()["scope"], "read write");
    // The public single-page app came over with its redirect URIs and consent skipping.
    let spa = h.store.client("dot-spa").await.unwrap().unwrap();
    assert!(spa.is_public() && spa.skip_consent);
    assert_eq!(
        spa.redirect_uris,
        ["https://spa.example/cb", "http://127.0.0.1:8765/cb"]
    );

    // Run again: nothing new; what changed since in Portcullis (rehashed passwords, the
    // secret replaced) is reported, and kept.
    let again = import(&h, Location::Sqlite(fixture()), false)
        .await
        .expect_err("changed since the first run");
    assert!(
        again.to_string().contains("user \"alice\" already existed"),
        "{again}"
    );
    h.shutdown().await;
}

/// The fixture's four tables in a fresh PostgreSQL database, with the types Django gives
/// them there (integer and bigint ids, booleans, timestamptz), read back through the
/// PostgreSQL path: the same rows, so the same plan.
#[tokio::test]
async fn a_django_database_on_postgresql_reads_the_same() {
    let Some(server) = common::postgres_server() else {
        return;
    };
    let url = common::fresh_postgres_database(&server);
    let copy = url.clone();
    std::thread::spawn(move || copy_fixture_to(&copy))
        .join()
        .unwrap();
    let h = gateway(false).await;
    let from_sqlite = read::sqlite(&fixture()).unwrap();
    let pg = url.clone();
    let from_postgres = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&pg, postgres::NoTls).unwrap();
        read::postgres(&mut c).unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(format!("{from_sqlite:?}"), format!("{from_postgres:?}"));
    let report = import(&h, Location::Postgres(url), false).await.unwrap();
    let p = report.planned;
    assert_eq!((p.users, p.clients, p.access, p.refresh), (5, 3, 2, 1));
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("set `oauth.accept_imported_tokens: true`"))
    );
    // Without the setting, a token of another shape is refused without a store read.
    let refused = h
        .get("/api/users/1", Some("dot-access-alice-live-token-0001"))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    h.shutdown().await;
}

fn copy_fixture_to(url: &str) {
    let mut pg = postgres::Client::connect(url, postgres::NoTls).unwrap();
    pg.batch_execute(
        "CREATE TABLE auth_user (id integer PRIMARY KEY, password varchar(128) NOT NULL,
            is_superuser boolean NOT NULL, username varchar(150) NOT NULL, is_active boolean NOT NULL,
            date_joined timestamptz NOT NULL);
         CREATE TABLE oauth2_provider_application (id bigint PRIMARY KEY, client_id varchar(100) NOT NULL,
            redirect_uris text NOT NULL, client_type varchar(32) NOT NULL,
            authorization_grant_type varchar(32) NOT NULL, client_secret varchar(255) NOT NULL,
            name varchar(255) NOT NULL, user_id integer, skip_authorization boolean NOT NULL,
            created timestamptz NOT NULL);
         CREATE TABLE oauth2_provider_accesstoken (id bigint PRIMARY KEY, token text NOT NULL,
            expires timestamptz NOT NULL, scope text NOT NULL, application_id bigint, user_id integer,
            created timestamptz NOT NULL);
         CREATE TABLE oauth2_provider_refreshtoken (id bigint PRIMARY KEY, token varchar(255) NOT NULL,
            access_token_id bigint, application_id bigint NOT NULL, user_id integer NOT NULL,
            created timestamptz NOT NULL, revoked timestamptz);",
    )
    .unwrap();
    let db = rusqlite::Connection::open(fixture()).unwrap();
    // Every value as SQLite's text (NULL stays NULL), cast by PostgreSQL to the column's type;
    // Django's SQLite times are UTC.
    for (table, columns) in [
        (
            "auth_user",
            "id, password, is_superuser, username, is_active, date_joined",
        ),
        (
            "oauth2_provider_application",
            "id, client_id, redirect_uris, client_type, authorization_grant_type, client_secret, name, user_id, skip_authorization, created",
        ),
        (
            "oauth2_provider_accesstoken",
            "id, token, expires, scope, application_id, user_id, created",
        ),
        (
            "oauth2_provider_refreshtoken",
            "id, token, access_token_id, application_id, user_id, created, revoked",
        ),
    ] {
        let names: Vec<&str> = columns.split(", ").collect();
        let select = names
            .iter()
            .map(|c| format!("CAST({c} AS TEXT)"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut st = db
            .prepare(&format!("SELECT {select} FROM {table}"))
            .unwrap();
        let rows: Vec<Vec<Option<String>>> = st
            .query_map([], |r| (0..names.len()).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let types: Vec<String> = names
            .iter()
            .map(|c| {
                pg.query_one(
                    "SELECT data_type FROM information_schema.columns WHERE table_name = $1 AND column_name = $2",
                    &[&table, c],
                )
                .unwrap()
                .get(0)
            })
            .collect();
        for row in rows {
            let values: Vec<String> = row
                .iter()
                .zip(&types)
                .map(|(v, t)| match v {
                    None => "NULL".to_owned(),
                    Some(v) if t == "boolean" => {
                        (if v == "1" { "true" } else { "false" }).to_owned()
                    }
                    Some(v) if t.starts_with("timestamp") => format!("'{v}+00'::timestamptz"),
                    Some(v) => format!("'{}'", v.replace('\'', "''")),
                })
                .collect();
            pg.batch_execute(&format!(
                "INSERT INTO {table} ({columns}) VALUES ({})",
                values.join(", ")
            ))
            .unwrap();
        }
    }
}
