//! The `Store` contract, run against every backend: atomic rotation, reuse detection,
//! revocation cascades and the revocation log, owner checks, removal of users and clients,
//! sweep bounds, conflicts, listings, durability, authorization codes, sessions, consents
//! and client registrations. A backend joins by one line at the
//! bottom (`contract!(name, opener)`); each case is then a test of its own.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use portcullis::config::PostgresConfig;
use portcullis::crypto::Digest;
use portcullis::scope::ScopeSet;
use portcullis::store::postgres::PostgresStore;
use portcullis::store::rules::REVOCATION_LOG_RETENTION_SECONDS;
use portcullis::store::sqlite::SqliteStore;
use portcullis::store::transfer::{Counts, Mismatch, verify};
use portcullis::store::{
    AccessTokenRecord, ClientRecord, CodeRecord, CodeRedemption, GrantType, RefreshExchange,
    RefreshTokenRecord, SessionRecord, SharedStore, StoreError, TokenKind, TokenMeta, TokenOwner,
    TokenStatus, UserRecord,
};

mod common;

const NOW: i64 = 1_800_000_000;

/// Opens (or reopens) a backend's store kept under `dir`.
type Opener = fn(&Path) -> SharedStore;

fn sqlite(dir: &Path) -> SharedStore {
    Arc::new(SqliteStore::open(&dir.join("contract.db")).unwrap())
}

/// A fresh PostgreSQL database per case on the test server, named in `dir` so that a reopen
/// reaches the same one. Opened on a thread of its own: the synchronous client must not run
/// on the test's runtime.
fn postgres(dir: &Path) -> SharedStore {
    let server = common::postgres_server().expect("checked by the runner");
    let name_file = dir.join("postgres-database");
    let url = match std::fs::read_to_string(&name_file) {
        Ok(url) => url,
        Err(_) => {
            let url = common::fresh_postgres_database(&server);
            std::fs::write(&name_file, &url).unwrap();
            url
        }
    };
    std::thread::spawn(move || {
        let options = PostgresConfig {
            url,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            ca_file: None,
        };
        Arc::new(PostgresStore::open(&options).unwrap()) as SharedStore
    })
    .join()
    .unwrap()
}

/// A store with users `alice` and `bob` and clients `c1` and `c2`.
struct Fixture {
    store: SharedStore,
    /// Shared with the runner, which keeps it until the case has finished.
    dir: Arc<tempfile::TempDir>,
    open: Opener,
}

async fn fixture(open: Opener) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for name in ["alice", "bob"] {
        store
            .add_user(UserRecord {
                username: name.into(),
                password_hash: "$argon2id$placeholder".into(),
                created_at: NOW,
                is_admin: false,
            })
            .await
            .unwrap();
    }
    for id in ["c1", "c2"] {
        store.add_client(client(id)).await.unwrap();
    }
    Fixture {
        store,
        dir: Arc::new(dir),
        open,
    }
}

fn client(id: &str) -> ClientRecord {
    ClientRecord {
        client_id: id.into(),
        name: id.into(),
        secret_digest: Some(Digest::of(id)),
        grants: GrantType::ALL.to_vec(),
        scopes: ScopeSet::parse("read write").unwrap(),
        created_at: NOW,
        redirect_uris: Vec::new(),
        skip_consent: false,
        owner: None,
        imported_secret: None,
    }
}

fn meta(name: &str, client: &str, user: Option<&str>, expires_at: i64) -> TokenMeta {
    TokenMeta {
        digest: Digest::of(name),
        client_id: client.into(),
        username: user.map(Into::into),
        scopes: ScopeSet::parse("read").unwrap(),
        issued_at: NOW - 10,
        expires_at,
        revoked_at: None,
    }
}

/// An access token `name` of `client` (for `user`), issued from refresh token `from`.
fn access(name: &str, client: &str, user: Option<&str>, from: Option<&str>) -> AccessTokenRecord {
    AccessTokenRecord {
        meta: meta(name, client, user, NOW + 600),
        refresh: from.map(Digest::of),
        family: Digest::of(from.unwrap_or(name)),
    }
}

fn refresh(name: &str, client: &str, user: Option<&str>, family: &str) -> RefreshTokenRecord {
    RefreshTokenRecord {
        meta: meta(name, client, user, NOW + 3600),
        family: Digest::of(family),
        rotated_at: None,
        rotation_salt: None,
    }
}

/// A grant: refresh token `r` with access token `a` issued alongside.
async fn grant(s: &SharedStore, a: &str, r: &str, client: &str, user: &str) {
    s.insert_tokens(
        access(a, client, Some(user), Some(r)),
        Some(refresh(r, client, Some(user), r)),
    )
    .await
    .unwrap();
}

async fn live_access(s: &SharedStore, name: &str) -> bool {
    s.access_token(Digest::of(name))
        .await
        .unwrap()
        .is_some_and(|t| t.is_live(NOW))
}

async fn live_refresh(s: &SharedStore, name: &str) -> bool {
    s.refresh_token(Digest::of(name))
        .await
        .unwrap()
        .is_some_and(|t| t.is_live(NOW))
}

/// The digests the revocation log holds.
async fn logged(s: &SharedStore) -> Vec<Digest> {
    s.revocations_since(0).await.unwrap().1
}

type Case = fn(Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Concurrent rotations of one refresh token: exactly one exchanges, and the access token
/// issued from it is revoked and logged in the same step.
fn rotation_is_atomic(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        grant(&s, "a0", "r0", "c1", "alice").await;
        let mut racers = Vec::new();
        for i in 0..8 {
            let s = Arc::clone(&s);
            racers.push(tokio::spawn(async move {
                let new_r = format!("r1-{i}");
                s.exchange_refresh_token(
                    Digest::of("r0"),
                    NOW,
                    Some([i as u8; 32]),
                    access(&format!("a1-{i}"), "c1", Some("alice"), Some(&new_r)),
                    Some(refresh(&new_r, "c1", Some("alice"), "r0")),
                )
                .await
                .unwrap()
            }));
        }
        let mut exchanged = Vec::new();
        for (i, r) in racers.into_iter().enumerate() {
            if let RefreshExchange::Exchanged { revoked_access } = r.await.unwrap() {
                exchanged.push((i, revoked_access));
            }
        }
        assert_eq!(exchanged.len(), 1, "exactly one exchange wins");
        let (winner, revoked) = &exchanged[0];
        assert_eq!(revoked, &vec![Digest::of("a0")]);
        assert!(!live_access(&s, "a0").await);
        assert_eq!(logged(&s).await, vec![Digest::of("a0")]);
        let old = s.refresh_token(Digest::of("r0")).await.unwrap().unwrap();
        assert_eq!(old.rotated_at, Some(NOW));
        assert_eq!(old.rotation_salt, Some([*winner as u8; 32]));
        assert!(live_refresh(&s, &format!("r1-{winner}")).await);
        for i in (0..8).filter(|i| i != winner) {
            assert!(
                s.refresh_token(Digest::of(&format!("r1-{i}")))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    })
}

/// Without rotation the old refresh token stays live and nothing is revoked.
fn refresh_without_rotation(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        grant(&s, "a0", "r0", "c1", "alice").await;
        let out = s
            .exchange_refresh_token(
                Digest::of("r0"),
                NOW,
                None,
                access("a1", "c1", Some("alice"), Some("r0")),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            RefreshExchange::Exchanged {
                revoked_access: vec![]
            }
        );
        assert!(live_refresh(&s, "r0").await && live_access(&s, "a0").await);
        assert!(live_access(&s, "a1").await);
        assert!(logged(&s).await.is_empty());
    })
}

/// A rotated (or revoked, or expired) refresh token does not exchange again; revoking its
/// family takes every descendant.
fn reuse_and_family_revocation(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        grant(&s, "a0", "r0", "c1", "alice").await;
        let rotate = |a: &'static str, r: &'static str| {
            let s = Arc::clone(&s);
            async move {
                // The successors join the original grant's family.
                let mut successor = access(a, "c1", Some("alice"), Some(r));
                successor.family = Digest::of("r0");
                s.exchange_refresh_token(
                    Digest::of("r0"),
                    NOW,
                    Some([7; 32]),
                    successor,
                    Some(refresh(r, "c1", Some("alice"), "r0")),
                )
                .await
                .unwrap()
            }
        };
        assert!(matches!(
            rotate("a1", "r1").await,
            RefreshExchange::Exchanged { .. }
        ));
        assert_eq!(rotate("a2", "r2").await, RefreshExchange::Stale);
        let expired = refresh("rx", "c1", Some("alice"), "rx");
        s.insert_tokens(
            access("ax", "c1", Some("alice"), Some("rx")),
            Some(RefreshTokenRecord {
                meta: TokenMeta {
                    expires_at: NOW,
                    ..expired.meta.clone()
                },
                ..expired
            }),
        )
        .await
        .unwrap();
        let stale = s
            .exchange_refresh_token(
                Digest::of("rx"),
                NOW,
                None,
                access("ay", "c1", Some("alice"), Some("rx")),
                None,
            )
            .await
            .unwrap();
        assert_eq!(stale, RefreshExchange::Stale, "an expired refresh token");
        let revoked = s.revoke_family(Digest::of("r0"), NOW).await.unwrap();
        assert_eq!(revoked.refresh, 1, "r1 (r0 was already rotated)");
        assert_eq!(revoked.access, vec![Digest::of("a1")]);
        assert!(!live_refresh(&s, "r1").await && !live_access(&s, "a1").await);
        assert!(logged(&s).await.contains(&Digest::of("a1")));
    })
}

/// RFC 7009 through the store: a refresh token takes its access tokens along, an access token
/// goes alone, another client's token is untouched, and the hint only orders the lookups.
fn revocation_cascades_and_owner_checks(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        grant(&s, "a0", "r0", "c1", "alice").await;
        grant(&s, "b0", "rb", "c1", "alice").await;
        let other = s
            .revoke_token(Digest::of("r0"), "c2", NOW, true)
            .await
            .unwrap();
        assert_eq!(
            (other.access.len(), other.refresh),
            (0, 0),
            "another client's token"
        );
        assert!(live_refresh(&s, "r0").await);

        let gone = s
            .revoke_token(Digest::of("a0"), "c1", NOW, true)
            .await
            .unwrap();
        assert_eq!(
            gone.access,
            vec![Digest::of("a0")],
            "the hint only orders lookups"
        );
        assert!(live_refresh(&s, "r0").await, "an access token goes alone");

        let gone = s
            .revoke_token(Digest::of("rb"), "c1", NOW, false)
            .await
            .unwrap();
        assert_eq!((gone.access, gone.refresh), (vec![Digest::of("b0")], 1));
        assert!(!live_refresh(&s, "rb").await && !live_access(&s, "b0").await);
        assert_eq!(logged(&s).await, vec![Digest::of("a0"), Digest::of("b0")]);

        let again = s
            .revoke_token(Digest::of("rb"), "c1", NOW, false)
            .await
            .unwrap();
        assert_eq!(
            (again.access.len(), again.refresh),
            (0, 0),
            "already revoked"
        );
        let unknown = s
            .revoke_token(Digest::of("nothing"), "c1", NOW, false)
            .await
            .unwrap();
        assert_eq!((unknown.access.len(), unknown.refresh), (0, 0));
    })
}

/// Bulk revocation by user, client or everyone: live tokens only, all logged.
fn revoking_by_owner(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        grant(&s, "a-alice", "r-alice", "c1", "alice").await;
        grant(&s, "a-bob", "r-bob", "c2", "bob").await;
        s.insert_tokens(access("a-svc", "c2", None, None), None)
            .await
            .unwrap();
        let alice = s
            .revoke_tokens_of(TokenOwner::User("alice".into()), NOW)
            .await
            .unwrap();
        assert_eq!(
            (alice.access, alice.refresh),
            (vec![Digest::of("a-alice")], 1)
        );
        assert!(live_access(&s, "a-bob").await);
        let c2 = s
            .revoke_tokens_of(TokenOwner::Client("c2".into()), NOW)
            .await
            .unwrap();
        assert_eq!(c2.access.len(), 2);
        assert_eq!(c2.refresh, 1);
        let rest = s.revoke_tokens_of(TokenOwner::All, NOW).await.unwrap();
        assert_eq!((rest.access.len(), rest.refresh), (0, 0));
        assert_eq!(logged(&s).await.len(), 3);
    })
}

/// Removing a user or a client deletes its tokens, after logging the live access tokens for
/// every gateway's cache.
fn removing_owners(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        grant(&s, "a-alice", "r-alice", "c1", "alice").await;
        grant(&s, "a-bob", "r-bob", "c2", "bob").await;
        assert!(s.remove_user("alice", NOW).await.unwrap());
        assert!(
            !s.remove_user("alice", NOW).await.unwrap(),
            "no such user any more"
        );
        assert!(
            s.access_token(Digest::of("a-alice"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.refresh_token(Digest::of("r-alice"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(s.remove_client("c2", NOW).await.unwrap());
        assert!(s.access_token(Digest::of("a-bob")).await.unwrap().is_none());
        assert!(s.client("c2").await.unwrap().is_none());
        assert_eq!(
            logged(&s).await,
            vec![Digest::of("a-alice"), Digest::of("a-bob")]
        );
        assert!(!s.remove_client("nobody", NOW).await.unwrap());
    })
}

/// A sweep deletes at most `batch` dead tokens of each kind per call, keeps rotated refresh
/// tokens until they expire, and trims the revocation log past its retention.
fn sweep_bounds(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        for i in 0..5 {
            let mut a = access(&format!("expired{i}"), "c1", None, None);
            a.meta.expires_at = NOW - 1;
            s.insert_tokens(a, None).await.unwrap();
        }
        for i in 0..3 {
            s.insert_tokens(access(&format!("revoked{i}"), "c1", None, None), None)
                .await
                .unwrap();
            s.revoke_token(
                Digest::of(&format!("revoked{i}")),
                "c1",
                NOW - REVOCATION_LOG_RETENTION_SECONDS - 1,
                false,
            )
            .await
            .unwrap();
        }
        s.insert_tokens(access("alive", "c1", None, None), None)
            .await
            .unwrap();
        grant(&s, "a0", "r0", "c1", "alice").await;
        s.exchange_refresh_token(
            Digest::of("r0"),
            NOW,
            Some([1; 32]),
            access("a1", "c1", Some("alice"), Some("r1")),
            Some(refresh("r1", "c1", Some("alice"), "r0")),
        )
        .await
        .unwrap();
        let first = s.sweep(NOW, 2).await.unwrap();
        assert_eq!(first.access, 2, "bounded by the batch");
        let mut access_total = first.access;
        let mut refresh_total = first.refresh;
        loop {
            let swept = s.sweep(NOW, 2).await.unwrap();
            assert!(swept.access <= 2 && swept.refresh <= 2);
            access_total += swept.access;
            refresh_total += swept.refresh;
            if swept.access == 0 && swept.refresh == 0 {
                break;
            }
        }
        // Five expired, three revoked, and a0 (revoked by the rotation).
        assert_eq!(access_total, 9);
        assert_eq!(refresh_total, 0, "the rotated r0 stays for reuse detection");
        assert!(s.refresh_token(Digest::of("r0")).await.unwrap().is_some());
        assert!(live_access(&s, "alive").await && live_access(&s, "a1").await);
        // The entries logged before the retention are trimmed; a0's (now) is kept.
        assert_eq!(logged(&s).await, vec![Digest::of("a0")]);
        // Once expired, the rotated token goes too.
        let later = NOW + 3600;
        let swept = s.sweep(later, 100).await.unwrap();
        assert!(swept.refresh >= 1);
        assert!(s.refresh_token(Digest::of("r0")).await.unwrap().is_none());
    })
}

/// Two users or clients of one name conflict.
fn conflicts(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        let dup = s
            .add_user(UserRecord {
                username: "alice".into(),
                password_hash: "x".into(),
                created_at: NOW,
                is_admin: false,
            })
            .await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        let dup = s.add_client(client("c1")).await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        assert!(s.set_password("alice", "new".into()).await.unwrap());
        assert!(!s.set_password("nobody", "new".into()).await.unwrap());
        assert!(s.set_client_secret("c1", Digest::of("new")).await.unwrap());
        assert_eq!(
            s.client("c1").await.unwrap().unwrap().secret_digest,
            Some(Digest::of("new"))
        );
    })
}

/// Listings carry each token's status at the given time; counts see live tokens only.
fn listings_and_counts(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        grant(&s, "a0", "r0", "c1", "alice").await;
        let mut old = access("old", "c1", Some("alice"), None);
        old.meta.expires_at = NOW - 1;
        old.meta.issued_at = NOW - 100;
        s.insert_tokens(old, None).await.unwrap();
        s.revoke_token(Digest::of("a0"), "c1", NOW, false)
            .await
            .unwrap();
        let list = s
            .list_tokens(TokenOwner::User("alice".into()), NOW)
            .await
            .unwrap();
        let seen: Vec<(TokenKind, &str)> =
            list.iter().map(|t| (t.kind, t.status.as_str())).collect();
        assert_eq!(
            seen,
            vec![
                (TokenKind::Access, "expired"),
                (TokenKind::Refresh, "active"),
                (TokenKind::Access, "revoked"),
            ]
        );
        assert!(list.iter().all(|t| t.meta.client_id == "c1"));
        assert_eq!(list[1].status, TokenStatus::Active);
        assert!(
            s.list_tokens(TokenOwner::User("bob".into()), NOW)
                .await
                .unwrap()
                .is_empty()
        );
        let live = s.live_tokens(NOW).await.unwrap();
        assert_eq!((live.access, live.refresh), (0, 1));
        assert_eq!(s.users().await.unwrap().len(), 2);
        assert_eq!(s.clients().await.unwrap().len(), 2);
    })
}

/// What a write returned is there after the store is closed and opened again.
fn durability(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let Fixture { store, dir, open } = f;
        grant(&store, "a0", "r0", "c1", "alice").await;
        store
            .revoke_token(Digest::of("a0"), "c1", NOW, false)
            .await
            .unwrap();
        drop(store);
        let reopened = open(dir.path());
        let a0 = reopened
            .access_token(Digest::of("a0"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a0.revoked_at, Some(NOW));
        assert!(live_refresh(&reopened, "r0").await);
        assert_eq!(logged(&reopened).await, vec![Digest::of("a0")]);
        reopened.ping().await.unwrap();
    })
}

fn code(name: &str, client: &str, expires_at: i64) -> CodeRecord {
    CodeRecord {
        digest: Digest::of(name),
        client_id: client.into(),
        username: "alice".into(),
        redirect_uri: "https://app.example/cb".into(),
        scopes: ScopeSet::parse("read").unwrap(),
        code_challenge: "challenge".into(),
        issued_at: NOW - 5,
        expires_at,
        used_at: None,
    }
}

/// An authorization code is used once, in the same step as its tokens are stored; used
/// again, every token issued from it is revoked; an expired or unknown one is stale.
fn codes_are_used_once(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        s.insert_code(code("code1", "c1", NOW + 60)).await.unwrap();
        let stored = s.code(Digest::of("code1")).await.unwrap().unwrap();
        assert_eq!(stored, code("code1", "c1", NOW + 60));
        let mut a = access("a-code", "c1", Some("alice"), Some("r-code"));
        a.family = Digest::of("code1");
        let mut r = refresh("r-code", "c1", Some("alice"), "code1");
        r.family = Digest::of("code1");
        let redeemed = s
            .redeem_code(Digest::of("code1"), NOW, a.clone(), Some(r.clone()))
            .await
            .unwrap();
        assert_eq!(redeemed, CodeRedemption::Redeemed);
        assert!(live_access(&s, "a-code").await && live_refresh(&s, "r-code").await);
        assert_eq!(
            s.code(Digest::of("code1")).await.unwrap().unwrap().used_at,
            Some(NOW)
        );
        // Presented again: nothing new is stored, and everything issued from it is revoked.
        let mut again = access("a-again", "c1", Some("alice"), None);
        again.family = Digest::of("code1");
        let replayed = s
            .redeem_code(Digest::of("code1"), NOW, again, None)
            .await
            .unwrap();
        let CodeRedemption::Replayed(revoked) = replayed else {
            panic!("{replayed:?}");
        };
        assert_eq!(
            (revoked.access, revoked.refresh),
            (vec![Digest::of("a-code")], 1)
        );
        assert!(
            s.access_token(Digest::of("a-again"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(!live_access(&s, "a-code").await && !live_refresh(&s, "r-code").await);
        assert_eq!(logged(&s).await, vec![Digest::of("a-code")]);
        // Expired, or never issued.
        s.insert_code(code("old", "c1", NOW)).await.unwrap();
        for name in ["old", "never"] {
            let stale = s
                .redeem_code(Digest::of(name), NOW, access("x", "c1", None, None), None)
                .await
                .unwrap();
            assert_eq!(stale, CodeRedemption::Stale, "{name}");
        }
        assert!(s.access_token(Digest::of("x")).await.unwrap().is_none());
        // The sweeper takes expired codes.
        s.sweep(NOW + 120, 100).await.unwrap();
        assert!(s.code(Digest::of("old")).await.unwrap().is_none());
    })
}

/// Sessions live until they expire or are removed; consents widen and are forgotten with
/// the grant they stand behind.
fn sessions_and_consents(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        let session = SessionRecord {
            digest: Digest::of("session"),
            username: "alice".into(),
            created_at: NOW,
            expires_at: NOW + 100,
        };
        s.insert_session(session.clone()).await.unwrap();
        assert_eq!(
            s.session(Digest::of("session"), NOW).await.unwrap(),
            Some(session.clone())
        );
        assert_eq!(
            s.session(Digest::of("session"), NOW + 100).await.unwrap(),
            None
        );
        assert_eq!(s.session(Digest::of("other"), NOW).await.unwrap(), None);
        s.remove_session(Digest::of("session")).await.unwrap();
        assert_eq!(s.session(Digest::of("session"), NOW).await.unwrap(), None);

        assert_eq!(s.consent("alice", "c1").await.unwrap(), None);
        s.grant_consent("alice", "c1", ScopeSet::parse("read").unwrap(), NOW)
            .await
            .unwrap();
        s.grant_consent("alice", "c1", ScopeSet::parse("write read").unwrap(), NOW)
            .await
            .unwrap();
        assert_eq!(
            s.consent("alice", "c1").await.unwrap(),
            Some(ScopeSet::parse("read write").unwrap())
        );
        grant(&s, "a0", "r0", "c1", "alice").await;
        grant(&s, "b0", "rb", "c2", "alice").await;
        let revoked = s
            .revoke_tokens_of(
                TokenOwner::Grant {
                    user: "alice".into(),
                    client: "c1".into(),
                },
                NOW,
            )
            .await
            .unwrap();
        assert_eq!(
            (revoked.access, revoked.refresh),
            (vec![Digest::of("a0")], 1)
        );
        assert!(
            live_access(&s, "b0").await,
            "the grant to another client stays"
        );
        assert_eq!(
            s.consent("alice", "c1").await.unwrap(),
            None,
            "consent forgotten"
        );
        // Removing the user ends their sessions too.
        s.insert_session(session).await.unwrap();
        s.remove_user("alice", NOW).await.unwrap();
        assert_eq!(s.session(Digest::of("session"), NOW).await.unwrap(), None);
    })
}

/// A registration can change (not its id, secret or creation); a public client has no
/// secret, and none can be set for it.
fn client_registrations(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        let mut public = client("spa");
        public.secret_digest = None;
        public.redirect_uris = vec![
            "https://spa.example/cb".into(),
            "http://127.0.0.1/cb".into(),
        ];
        public.owner = Some("bob".into());
        s.add_client(public.clone()).await.unwrap();
        assert_eq!(s.client("spa").await.unwrap(), Some(public.clone()));
        assert!(s.client("spa").await.unwrap().unwrap().is_public());
        assert!(!s.set_client_secret("spa", Digest::of("x")).await.unwrap());
        let changed = ClientRecord {
            name: "renamed".into(),
            redirect_uris: vec!["https://spa.example/other".into()],
            skip_consent: true,
            scopes: ScopeSet::parse("read").unwrap(),
            secret_digest: Some(Digest::of("ignored")),
            created_at: 0,
            ..public.clone()
        };
        assert!(s.update_client(changed).await.unwrap());
        let now = s.client("spa").await.unwrap().unwrap();
        assert_eq!(now.name, "renamed");
        assert_eq!(
            now.redirect_uris,
            vec!["https://spa.example/other".to_owned()]
        );
        assert!(now.skip_consent && now.is_public(), "still public");
        assert_eq!(now.created_at, NOW);
        let mut nobody = client("nobody");
        nobody.name = "x".into();
        assert!(!s.update_client(nobody).await.unwrap());
        // The owner's removal leaves the application, owned by nobody.
        s.remove_user("bob", NOW).await.unwrap();
        assert_eq!(s.client("spa").await.unwrap().unwrap().owner, None);
        // A secret imported in Django's format round-trips, and a new secret replaces it.
        let mut imported = client("imported");
        imported.imported_secret = Some("pbkdf2_sha256$1000000$salt$hash".into());
        s.add_client(imported.clone()).await.unwrap();
        assert_eq!(s.client("imported").await.unwrap(), Some(imported));
        assert!(
            s.set_client_secret("imported", Digest::of("new"))
                .await
                .unwrap()
        );
        let replaced = s.client("imported").await.unwrap().unwrap();
        assert_eq!(replaced.imported_secret, None);
        assert_eq!(replaced.secret_digest, Some(Digest::of("new")));
        let admin = UserRecord {
            username: "root".into(),
            password_hash: "x".into(),
            created_at: NOW,
            is_admin: true,
        };
        s.add_user(admin.clone()).await.unwrap();
        assert_eq!(s.user("root").await.unwrap(), Some(admin));
    })
}

/// An export carries users, clients, consents and every unexpired token (rotated ones too)
/// into a store of the same kind; an import run again adds nothing; a record already there
/// under the same key is kept; the carried rotation still detects reuse.
fn export_and_import(f: Fixture) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let s = f.store;
        let mut public = client("spa");
        public.secret_digest = None;
        public.redirect_uris = vec!["https://spa.example/cb".into()];
        public.owner = Some("bob".into());
        s.add_client(public).await.unwrap();
        s.grant_consent("alice", "c1", ScopeSet::parse("read").unwrap(), NOW)
            .await
            .unwrap();
        grant(&s, "a0", "r0", "c1", "alice").await;
        let rotated = s
            .exchange_refresh_token(
                Digest::of("r0"),
                NOW,
                Some([7; 32]),
                access("a1", "c1", Some("alice"), Some("r1")),
                Some(refresh("r1", "c1", Some("alice"), "r0")),
            )
            .await
            .unwrap();
        assert!(matches!(rotated, RefreshExchange::Exchanged { .. }));
        let mut expired = access("old", "c2", None, None);
        expired.meta.expires_at = NOW - 1;
        s.insert_tokens(expired, None).await.unwrap();

        let snapshot = s.export(NOW).await.unwrap();
        let counts = snapshot.counts();
        assert_eq!(
            (counts.users, counts.clients, counts.consents),
            (2, 3, 1),
            "{counts}"
        );
        assert_eq!((counts.access, counts.refresh), (2, 2), "a0, a1; r0, r1");
        assert!(
            snapshot
                .access
                .iter()
                .all(|t| t.digest != Digest::of("old"))
        );

        let other = tempfile::tempdir().unwrap();
        let t = (f.open)(other.path());
        // A user that exists there already, differently, is kept as it is.
        let mut bob = s.user("bob").await.unwrap().unwrap();
        bob.is_admin = true;
        t.add_user(bob.clone()).await.unwrap();
        let added = t.import(snapshot.clone()).await.unwrap();
        assert_eq!(added, Counts { users: 1, ..counts });
        let there = t.export(NOW).await.unwrap();
        let mismatches = verify(&snapshot, &there);
        assert_eq!(mismatches, vec![Mismatch::Differs("user \"bob\"".into())]);
        assert_eq!(t.user("bob").await.unwrap(), Some(bob));
        assert_eq!(
            t.import(snapshot.clone()).await.unwrap(),
            Counts::default(),
            "a second import adds nothing"
        );
        assert_eq!(t.export(NOW).await.unwrap(), there);
        assert_eq!(
            t.access_token(Digest::of("a1")).await.unwrap(),
            s.access_token(Digest::of("a1")).await.unwrap()
        );
        assert_eq!(
            t.consent("alice", "c1").await.unwrap(),
            Some(ScopeSet::parse("read").unwrap())
        );
        // r0 was rotated before the move: presenting it again is still stale, and its
        // family can still be revoked whole.
        let again = t
            .exchange_refresh_token(
                Digest::of("r0"),
                NOW,
                Some([8; 32]),
                access("a2", "c1", Some("alice"), Some("r2")),
                Some(refresh("r2", "c1", Some("alice"), "r0")),
            )
            .await
            .unwrap();
        assert_eq!(again, RefreshExchange::Stale);
        let revoked = t.revoke_family(Digest::of("r0"), NOW).await.unwrap();
        assert_eq!(revoked.refresh, 1, "r1, r0's successor");
    })
}

/// Instantiates every contract case for one backend: `contract!(module, opener, available)`;
/// a case whose backend is not available (no server to test against) skips, saying so.
macro_rules! contract {
    ($backend:ident, $open:expr, $available:expr) => {
        mod $backend {
            use super::*;
            async fn run(case: Case) {
                if !$available() {
                    return;
                }
                let f = fixture($open).await;
                let _dir = Arc::clone(&f.dir);
                case(f).await
            }
            #[tokio::test]
            async fn rotation_is_atomic() {
                run(super::rotation_is_atomic).await
            }
            #[tokio::test]
            async fn refresh_without_rotation() {
                run(super::refresh_without_rotation).await
            }
            #[tokio::test]
            async fn reuse_and_family_revocation() {
                run(super::reuse_and_family_revocation).await
            }
            #[tokio::test]
            async fn revocation_cascades_and_owner_checks() {
                run(super::revocation_cascades_and_owner_checks).await
            }
            #[tokio::test]
            async fn revoking_by_owner() {
                run(super::revoking_by_owner).await
            }
            #[tokio::test]
            async fn removing_owners() {
                run(super::removing_owners).await
            }
            #[tokio::test]
            async fn sweep_bounds() {
                run(super::sweep_bounds).await
            }
            #[tokio::test]
            async fn conflicts() {
                run(super::conflicts).await
            }
            #[tokio::test]
            async fn listings_and_counts() {
                run(super::listings_and_counts).await
            }
            #[tokio::test]
            async fn durability() {
                run(super::durability).await
            }
            #[tokio::test]
            async fn codes_are_used_once() {
                run(super::codes_are_used_once).await
            }
            #[tokio::test]
            async fn sessions_and_consents() {
                run(super::sessions_and_consents).await
            }
            #[tokio::test]
            async fn client_registrations() {
                run(super::client_registrations).await
            }
            #[tokio::test]
            async fn export_and_import() {
                run(super::export_and_import).await
            }
        }
    };
}

contract!(sqlite_backend, sqlite, || true);
contract!(postgres_backend, postgres, || common::postgres_server()
    .is_some());
