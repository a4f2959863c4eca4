//! `portcullis import dot`: moving over from django-oauth-toolkit. Users, applications and
//! live tokens are read from its database (`read`), converted here into Portcullis records
//! (`plan`, pure: every decision and every refusal with its reason), then added to the store
//! in one transaction (`Store::import`, which keeps any record already there).
//!
//! What carries over as it is: Django password hashes (`crypto::django` verifies them and the
//! first successful sign-in or password grant rehashes to argon2id), hashed client secrets
//! (likewise, replaced by the native digest on first use), plaintext client secrets
//! (digested now), and access and refresh tokens (digested, with their scopes, expiry, user
//! and application), so that clients and users keep working on the day of the switch.

pub mod read;

use std::collections::{BTreeSet, HashMap};

use crate::config::OAuthConfig;
use crate::crypto::{Digest, django};
use crate::migrate::Location;
use crate::scope::ScopeSet;
use crate::store::transfer::{Counts, Snapshot, verify};
use crate::store::{
    AccessTokenRecord, ClientRecord, GrantType, RefreshTokenRecord, SharedStore, StoreError,
    TokenMeta, UserRecord,
};
use read::DotData;

/// What an import would add, and what it cannot carry over and why.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub snapshot: Snapshot,
    /// One line per record left behind (or carried with a caveat), naming it and the reason.
    pub notes: Vec<String>,
}

/// A password that never verifies: Django's unusable password, or a hash format Portcullis
/// cannot verify, stays unusable until `portcullis users set-password`.
const UNUSABLE: &str = "!";

/// Held as `secret_digest` while a client's secret is in Django's format (client
/// authentication then verifies the Django hash and never compares this): all zeros, the
/// SHA-256 of nothing anyone knows, and the same on every run, so that a second import finds
/// the client unchanged.
const PLACEHOLDER_DIGEST: Digest = Digest([0; 32]);

/// Converts a django-oauth-toolkit database's rows into Portcullis records as of `now`.
pub fn plan(dot: &DotData, oauth: &OAuthConfig, now: i64) -> Plan {
    let mut notes = Vec::new();
    let mut snapshot = Snapshot::default();

    // Users: inactive ones stay behind (Django refuses them every sign-in).
    let mut usernames: HashMap<i64, String> = HashMap::new();
    for u in &dot.users {
        if !u.is_active {
            notes.push(format!(
                "user {:?}: not imported: inactive in Django",
                u.username
            ));
            continue;
        }
        if crate::manage::validate_username(&u.username).is_err() {
            notes.push(format!(
                "user {:?}: not imported: not a username Portcullis accepts (1-150 letters, digits and @ . + - _)",
                u.username
            ));
            continue;
        }
        let password_hash = if django::is_supported(&u.password) {
            u.password.clone()
        } else {
            let algorithm = django::algorithm(&u.password);
            notes.push(if algorithm == "!" {
                format!(
                    "user {:?}: imported without a usable password (it had none in Django); set one with `portcullis users set-password`",
                    u.username
                )
            } else {
                format!(
                    "user {:?}: imported, but its password hash ({algorithm}) is not one Portcullis verifies (pbkdf2_sha256, argon2, bcrypt_sha256); set a new one with `portcullis users set-password`",
                    u.username
                )
            });
            UNUSABLE.to_owned()
        };
        usernames.insert(u.id, u.username.clone());
        snapshot.users.push(UserRecord {
            username: u.username.clone(),
            password_hash,
            created_at: u.date_joined,
            is_admin: u.is_superuser,
        });
    }

    // Applications: one grant type each in django-oauth-toolkit; scopes are global there, so
    // each client may have every scope the config defines.
    let all_scopes: ScopeSet = oauth.scopes.keys().map(String::as_str).collect();
    let mut clients: HashMap<i64, String> = HashMap::new();
    for a in &dot.apps {
        let who = format!("application {:?} ({:?})", a.client_id, a.name);
        let public = match a.client_type.as_str() {
            "public" => true,
            "confidential" => false,
            other => {
                notes.push(format!(
                    "{who}: not imported: unknown client type {other:?}"
                ));
                continue;
            }
        };
        let grants = match a.grant_type.as_str() {
            "authorization-code" => vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            "password" => vec![GrantType::Password, GrantType::RefreshToken],
            "client-credentials" if !public => vec![GrantType::ClientCredentials],
            "client-credentials" => {
                notes.push(format!(
                    "{who}: not imported: a public client cannot use client_credentials"
                ));
                continue;
            }
            other => {
                notes.push(format!(
                    "{who}: not imported: the {other:?} grant is not supported (authorization-code, password, client-credentials are)"
                ));
                continue;
            }
        };
        let mut redirect_uris = Vec::new();
        for uri in a.redirect_uris.split_whitespace() {
            match crate::oauth::redirect::check_registration(uri) {
                Ok(_) => redirect_uris.push(uri.to_owned()),
                Err(e) => notes.push(format!("{who}: redirect URI {uri:?} left out: {e}")),
            }
        }
        if grants.contains(&GrantType::AuthorizationCode) && redirect_uris.is_empty() {
            notes.push(format!(
                "{who}: not imported: authorization-code needs a redirect URI Portcullis accepts (https, or http on a loopback host)"
            ));
            continue;
        }
        let (secret_digest, imported_secret) = if public {
            (None, None)
        } else if !a.client_secret.contains('$') {
            // Stored in plain text (`hash_client_secret = False`, or django-oauth-toolkit
            // before 2.0): digested now, as Portcullis keeps every secret.
            (Some(Digest::of(&a.client_secret)), None)
        } else if django::is_supported(&a.client_secret) {
            (Some(PLACEHOLDER_DIGEST), Some(a.client_secret.clone()))
        } else {
            notes.push(format!(
                "{who}: not imported: its secret is hashed with {}, which Portcullis does not verify",
                django::algorithm(&a.client_secret)
            ));
            continue;
        };
        clients.insert(a.id, a.client_id.clone());
        snapshot.clients.push(ClientRecord {
            client_id: a.client_id.clone(),
            name: a.name.chars().take(255).collect(),
            secret_digest,
            grants,
            scopes: all_scopes.clone(),
            redirect_uris,
            skip_consent: a.skip_authorization,
            owner: a.user_id.and_then(|id| usernames.get(&id).cloned()),
            created_at: a.created,
            imported_secret,
        });
    }

    // Tokens: live ones only, of an imported client and (when they have one) user, with
    // scopes the config defines.
    let known: BTreeSet<&str> = oauth.scopes.keys().map(String::as_str).collect();
    let mut expired = 0usize;
    // Django's access token id -> its place in `snapshot.access`.
    let mut access_by_id: HashMap<i64, usize> = HashMap::new();
    for t in &dot.access {
        let name = format!("access token #{}", t.id);
        if t.expires <= now {
            expired += 1;
            continue;
        }
        let Some(client) = t.application_id.and_then(|id| clients.get(&id)) else {
            notes.push(format!(
                "{name}: not imported: its application was not imported"
            ));
            continue;
        };
        let username = match t.user_id {
            None => None,
            Some(id) => match usernames.get(&id) {
                Some(u) => Some(u.clone()),
                None => {
                    notes.push(format!("{name}: not imported: its user was not imported"));
                    continue;
                }
            },
        };
        let unknown: Vec<&str> = t
            .scope
            .split_whitespace()
            .filter(|s| !known.contains(s))
            .collect();
        if !unknown.is_empty() {
            notes.push(format!(
                "{name}: not imported: scopes {unknown:?} are not defined in the config"
            ));
            continue;
        }
        let digest = Digest::of(&t.token);
        let scopes = ScopeSet::from_stored(&t.scope);
        access_by_id.insert(t.id, snapshot.access.len());
        snapshot.access.push(AccessTokenRecord {
            meta: TokenMeta {
                digest,
                client_id: client.clone(),
                username,
                scopes,
                issued_at: t.created,
                expires_at: t.expires,
                revoked_at: None,
            },
            refresh: None,
            family: digest,
        });
    }
    if expired > 0 {
        notes.push(format!("{expired} expired access tokens: not imported"));
    }

    // Refresh tokens: django-oauth-toolkit's do not expire by default, and carry no scopes
    // of their own (their access token's); each gets the configured lifetime from now.
    let mut revoked = 0usize;
    for r in &dot.refresh {
        let name = format!("refresh token #{}", r.id);
        if r.revoked {
            revoked += 1;
            continue;
        }
        let (Some(client), Some(user)) =
            (clients.get(&r.application_id), usernames.get(&r.user_id))
        else {
            notes.push(format!(
                "{name}: not imported: its application or user was not imported"
            ));
            continue;
        };
        let Some(&i) = r.access_token_id.and_then(|id| access_by_id.get(&id)) else {
            notes.push(format!(
                "{name}: not imported: no imported access token to take its scopes from"
            ));
            continue;
        };
        let digest = Digest::of(&r.token);
        let access = &mut snapshot.access[i];
        access.refresh = Some(digest);
        access.family = digest;
        let scopes = access.scopes.clone();
        snapshot.refresh.push(RefreshTokenRecord {
            meta: TokenMeta {
                digest,
                client_id: client.clone(),
                username: Some(user.clone()),
                scopes,
                issued_at: r.created,
                expires_at: now.saturating_add(oauth.refresh_token_expire_seconds),
                revoked_at: None,
            },
            family: digest,
            rotated_at: None,
            rotation_salt: None,
        });
    }
    if revoked > 0 {
        notes.push(format!("{revoked} revoked refresh tokens: not imported"));
    }
    Plan { snapshot, notes }
}

/// What an import found, planned and did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Rows in the Django database: users, applications, access tokens, refresh tokens.
    pub found: [usize; 4],
    /// What the plan carries over.
    pub planned: Counts,
    pub notes: Vec<String>,
    /// What the store did not have and got now (`None` for a dry run).
    pub added: Option<Counts>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Read(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mismatch(#[from] crate::migrate::MigrateError),
}

/// Reads the django-oauth-toolkit database at `location` (read-only), plans the import as of
/// `now`, and unless `dry_run` adds the plan to `store` in one transaction, then requires every
/// planned record there, unchanged (a user or client that Portcullis already had under the
/// same name is kept and reported).
pub async fn run(
    store: &SharedStore,
    oauth: &OAuthConfig,
    location: Location,
    ca_file: Option<std::path::PathBuf>,
    now: i64,
    dry_run: bool,
) -> Result<Report, ImportError> {
    let dot = tokio::task::spawn_blocking(move || match location {
        Location::Sqlite(path) => read::sqlite(&path),
        Location::Postgres(url) => {
            let options = crate::config::PostgresConfig {
                url,
                pool_size: 1,
                connect_timeout: std::time::Duration::from_secs(10),
                statement_timeout: std::time::Duration::from_secs(600),
                ca_file,
            };
            let mut client = crate::store::postgres::connect(&options)?;
            read::postgres(&mut client)
        }
    })
    .await
    .map_err(|e| ImportError::Read(e.to_string()))?
    .map_err(ImportError::Read)?;
    let found = [
        dot.users.len(),
        dot.apps.len(),
        dot.access.len(),
        dot.refresh.len(),
    ];
    let Plan {
        mut snapshot,
        mut notes,
    } = plan(&dot, oauth, now);
    let planned = snapshot.counts();
    if planned.access > 0 && !oauth.accept_imported_tokens {
        notes.push(
            "the imported access tokens do not have Portcullis' shape: set `oauth.accept_imported_tokens: true` so that the guard looks them up"
                .into(),
        );
    }
    if dry_run {
        return Ok(Report {
            found,
            planned,
            notes,
            added: None,
        });
    }
    let added = store.import(snapshot.clone()).await?;
    let there = store.export(now).await?;
    // A refresh token's expiry is counted from the run that imported it: one imported by an
    // earlier run keeps its own, and is checked with it.
    let kept: HashMap<Digest, i64> = there
        .refresh
        .iter()
        .map(|r| (r.digest, r.expires_at))
        .collect();
    for r in &mut snapshot.refresh {
        if let Some(&expires_at) = kept.get(&r.digest) {
            r.meta.expires_at = expires_at;
        }
    }
    let mismatches = verify(&snapshot, &there);
    if !mismatches.is_empty() {
        return Err(crate::migrate::MigrateError::Mismatch(mismatches).into());
    }
    Ok(Report {
        found,
        planned,
        notes,
        added: Some(added),
    })
}
