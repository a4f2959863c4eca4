//! Moving one store's contents into another (`portcullis migrate --from … --to …`): what is
//! carried ([`Snapshot`]), and the check that it arrived ([`verify`]).
//!
//! Carried: users, clients, consents, and every token not yet expired — revoked and rotated
//! ones too, so that a rotated refresh token presented again is still detected as reuse.
//! Not carried: browser sessions and authorization codes (people sign in again; a code lives
//! a minute), and the revocation log (a replica starting on the new store has an empty cache).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use super::{AccessTokenRecord, ClientRecord, RefreshTokenRecord, UserRecord};
use crate::crypto::Digest;
use crate::scope::ScopeSet;

/// What one user agreed to give one client at `/o/authorize/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    pub username: String,
    pub client_id: String,
    pub scopes: ScopeSet,
    pub granted_at: i64,
}

/// A store's contents as [`super::Store::export`] reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub users: Vec<UserRecord>,
    pub clients: Vec<ClientRecord>,
    pub consents: Vec<ConsentRecord>,
    pub access: Vec<AccessTokenRecord>,
    pub refresh: Vec<RefreshTokenRecord>,
}

/// Rows of each kind: those a snapshot holds, or those an import added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub users: u64,
    pub clients: u64,
    pub consents: u64,
    pub access: u64,
    pub refresh: u64,
}

impl Snapshot {
    pub fn counts(&self) -> Counts {
        let n = |len: usize| u64::try_from(len).unwrap_or(u64::MAX);
        Counts {
            users: n(self.users.len()),
            clients: n(self.clients.len()),
            consents: n(self.consents.len()),
            access: n(self.access.len()),
            refresh: n(self.refresh.len()),
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} users, {} clients, {} consents, {} access tokens, {} refresh tokens",
            self.users, self.clients, self.consents, self.access, self.refresh
        )
    }
}

/// A record of the source that the destination does not hold as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    Missing(String),
    /// The destination had a different record under this key before the import, and kept it.
    Differs(String),
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Missing(what) => write!(f, "{what} is missing from the destination"),
            Mismatch::Differs(what) => write!(
                f,
                "{what} already existed in the destination with different contents, which were kept"
            ),
        }
    }
}

/// Every record of `source` must be in `destination`, identical. Tokens are named by a prefix
/// of their digest's hex (a digest is not the token, and names no credential).
pub fn verify(source: &Snapshot, destination: &Snapshot) -> Vec<Mismatch> {
    let mut out = Vec::new();
    compare(&mut out, &source.users, &destination.users, |u| {
        (format!("user {:?}", u.username), u.username.clone())
    });
    compare(&mut out, &source.clients, &destination.clients, |c| {
        (format!("client {:?}", c.client_id), c.client_id.clone())
    });
    compare(&mut out, &source.consents, &destination.consents, |c| {
        (
            format!("the consent of {:?} to {:?}", c.username, c.client_id),
            (c.username.clone(), c.client_id.clone()),
        )
    });
    compare(&mut out, &source.access, &destination.access, |t| {
        (format!("access token {}", short(&t.digest)), t.digest)
    });
    compare(&mut out, &source.refresh, &destination.refresh, |t| {
        (format!("refresh token {}", short(&t.digest)), t.digest)
    });
    out
}

fn compare<R: PartialEq, K: Eq + Hash>(
    out: &mut Vec<Mismatch>,
    source: &[R],
    destination: &[R],
    key: impl Fn(&R) -> (String, K),
) {
    let there: HashMap<K, &R> = destination.iter().map(|r| (key(r).1, r)).collect();
    for record in source {
        let (name, k) = key(record);
        match there.get(&k) {
            None => out.push(Mismatch::Missing(name)),
            Some(d) if *d != record => out.push(Mismatch::Differs(name)),
            Some(_) => {}
        }
    }
}

/// The digest's first 8 bytes in hex: enough to find the row, not a credential.
fn short(d: &Digest) -> String {
    d.0[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TokenMeta;

    fn user(name: &str, admin: bool) -> UserRecord {
        UserRecord {
            username: name.into(),
            password_hash: "$argon2id$x".into(),
            created_at: 1,
            is_admin: admin,
        }
    }

    fn access(token: &str, scopes: &str) -> AccessTokenRecord {
        AccessTokenRecord {
            meta: TokenMeta {
                digest: Digest::of(token),
                client_id: "c".into(),
                username: None,
                scopes: ScopeSet::from_stored(scopes),
                issued_at: 1,
                expires_at: 2,
                revoked_at: None,
            },
            refresh: None,
            family: Digest::of(token),
        }
    }

    #[test]
    fn every_source_record_must_arrive_unchanged() {
        let source = Snapshot {
            users: vec![user("alice", false), user("bob", true)],
            access: vec![access("t1", "read"), access("t2", "read")],
            ..Snapshot::default()
        };
        let t2 = short(&Digest::of("t2"));
        let cases: Vec<(&str, Snapshot, Vec<Mismatch>)> = vec![
            ("identical", source.clone(), vec![]),
            (
                "more in the destination is fine",
                Snapshot {
                    users: vec![
                        user("carol", false),
                        user("bob", true),
                        user("alice", false),
                    ],
                    ..source.clone()
                },
                vec![],
            ),
            (
                "a missing user and token",
                Snapshot {
                    users: vec![user("bob", true)],
                    access: vec![access("t1", "read")],
                    ..Snapshot::default()
                },
                vec![
                    Mismatch::Missing("user \"alice\"".into()),
                    Mismatch::Missing(format!("access token {t2}")),
                ],
            ),
            (
                "a user kept as it was and a token with other scopes",
                Snapshot {
                    users: vec![user("alice", false), user("bob", false)],
                    access: vec![access("t1", "read"), access("t2", "read write")],
                    ..Snapshot::default()
                },
                vec![
                    Mismatch::Differs("user \"bob\"".into()),
                    Mismatch::Differs(format!("access token {t2}")),
                ],
            ),
        ];
        for (name, destination, want) in cases {
            assert_eq!(verify(&source, &destination), want, "{name}");
        }
        assert_eq!(
            source.counts().to_string(),
            "2 users, 0 clients, 0 consents, 2 access tokens, 0 refresh tokens"
        );
    }
}
