//! Managing users and clients: the operations behind `portcullis users …` and
//! `portcullis clients …`, shared by the CLI, the demo and the tests.

use crate::clock::Clock;
use crate::clock::SystemClock;
use crate::config::OAuthConfig;
use crate::crypto::{
    CLIENT_SECRET_PREFIX, Digest, PasswordHasher, generate_client_id, generate_secret,
};
use crate::scope::ScopeSet;
use crate::store::{ClientRecord, GrantType, SharedStore, StoreError, UserRecord};

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0}")]
    Invalid(String),
    #[error("no {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] crate::crypto::HashError),
}

/// Django's username rule: 1–150 characters, letters, digits and `@ . + - _`.
pub fn validate_username(name: &str) -> Result<(), ManageError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 150
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "@.+-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ManageError::Invalid(format!(
            "invalid username {name:?}: use 1-150 letters, digits and @ . + - _"
        )))
    }
}

/// Passwords must be non-empty and at most 1024 bytes (hashing cost stays bounded).
pub fn validate_password(password: &str) -> Result<(), ManageError> {
    if password.is_empty() || password.len() > 1024 {
        return Err(ManageError::Invalid(
            "the password must be 1 to 1024 bytes long".into(),
        ));
    }
    Ok(())
}

pub async fn add_user(
    store: &SharedStore,
    hasher: &PasswordHasher,
    name: &str,
    password: &str,
) -> Result<(), ManageError> {
    add_user_as(store, hasher, name, password, false).await
}

/// Adds a user, an administrator when `is_admin` (sees and manages every application).
pub async fn add_user_as(
    store: &SharedStore,
    hasher: &PasswordHasher,
    name: &str,
    password: &str,
    is_admin: bool,
) -> Result<(), ManageError> {
    validate_username(name)?;
    validate_password(password)?;
    let password_hash = hasher.hash(password.to_owned()).await?;
    store
        .add_user(UserRecord {
            username: name.to_owned(),
            password_hash,
            created_at: SystemClock.now(),
            is_admin,
        })
        .await?;
    Ok(())
}

pub async fn set_password(
    store: &SharedStore,
    hasher: &PasswordHasher,
    name: &str,
    password: &str,
) -> Result<(), ManageError> {
    validate_password(password)?;
    let hash = hasher.hash(password.to_owned()).await?;
    if store.set_password(name, hash).await? {
        Ok(())
    } else {
        Err(ManageError::NotFound(format!("user {name:?}")))
    }
}

pub async fn remove_user(store: &SharedStore, name: &str) -> Result<(), ManageError> {
    if store.remove_user(name, SystemClock.now()).await? {
        Ok(())
    } else {
        Err(ManageError::NotFound(format!("user {name:?}")))
    }
}

/// A registered client and its secret, which exists in clear only here (`None` for a public
/// client, which has none).
#[derive(Debug)]
pub struct NewClient {
    pub client: ClientRecord,
    pub secret: Option<String>,
}

/// What a client is registered with (the command line, `/o/applications/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSpec {
    pub name: String,
    pub grants: Vec<GrantType>,
    /// Empty: the configured default scopes.
    pub scopes: Vec<String>,
    pub redirect_uris: Vec<String>,
    /// A public client (RFC 6749 §2.1) has no secret; it may not use `client_credentials`.
    pub public: bool,
    /// Never ask users for consent (a first-party application).
    pub skip_consent: bool,
    /// The user who registered it at `/o/applications/`.
    pub owner: Option<String>,
}

/// The checked parts of a spec: its grants (each once) and scopes.
fn validate_client(
    spec: &ClientSpec,
    oauth: &OAuthConfig,
) -> Result<(Vec<GrantType>, ScopeSet), ManageError> {
    let name = &spec.name;
    if name.trim().is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(ManageError::Invalid(
            "the client name must be 1-255 printable characters".into(),
        ));
    }
    if spec.grants.is_empty() {
        return Err(ManageError::Invalid("give at least one grant".into()));
    }
    let mut grants = spec.grants.clone();
    grants.sort();
    grants.dedup();
    if spec.public && grants.contains(&GrantType::ClientCredentials) {
        return Err(ManageError::Invalid(
            "a public client cannot use client_credentials: it has no secret".into(),
        ));
    }
    if grants.contains(&GrantType::AuthorizationCode) && spec.redirect_uris.is_empty() {
        return Err(ManageError::Invalid(
            "authorization_code needs at least one redirect URI".into(),
        ));
    }
    for uri in &spec.redirect_uris {
        crate::oauth::redirect::check_registration(uri)
            .map_err(|e| ManageError::Invalid(format!("redirect URI {uri:?}: {e}")))?;
    }
    let scopes: ScopeSet = if spec.scopes.is_empty() {
        oauth.default_scopes.clone()
    } else {
        if let Some(unknown) = spec.scopes.iter().find(|s| !oauth.scopes.contains_key(*s)) {
            let known: Vec<&str> = oauth.scopes.keys().map(String::as_str).collect();
            return Err(ManageError::Invalid(format!(
                "unknown scope {unknown:?} (defined: {})",
                known.join(", ")
            )));
        }
        spec.scopes.iter().collect()
    };
    Ok((grants, scopes))
}

/// Registers a client. With no scopes, the client gets the configured default scopes.
pub async fn add_client(
    store: &SharedStore,
    oauth: &OAuthConfig,
    spec: ClientSpec,
) -> Result<NewClient, ManageError> {
    let (grants, scopes) = validate_client(&spec, oauth)?;
    let secret = (!spec.public).then(|| generate_secret(CLIENT_SECRET_PREFIX));
    let client = ClientRecord {
        client_id: generate_client_id(),
        name: spec.name,
        secret_digest: secret.as_deref().map(Digest::of),
        grants,
        scopes,
        redirect_uris: spec.redirect_uris,
        skip_consent: spec.skip_consent,
        owner: spec.owner,
        created_at: SystemClock.now(),
        imported_secret: None,
    };
    store.add_client(client.clone()).await?;
    Ok(NewClient { client, secret })
}

/// Changes a client's registration; its id, secret (or being public) and creation time stay.
pub async fn update_client(
    store: &SharedStore,
    oauth: &OAuthConfig,
    current: &ClientRecord,
    spec: ClientSpec,
) -> Result<ClientRecord, ManageError> {
    let spec = ClientSpec {
        public: current.is_public(),
        ..spec
    };
    let (grants, scopes) = validate_client(&spec, oauth)?;
    let client = ClientRecord {
        name: spec.name,
        grants,
        scopes,
        redirect_uris: spec.redirect_uris,
        skip_consent: spec.skip_consent,
        owner: spec.owner,
        ..current.clone()
    };
    if store.update_client(client.clone()).await? {
        Ok(client)
    } else {
        Err(ManageError::NotFound(format!(
            "client {:?}",
            current.client_id
        )))
    }
}

/// Gives a client a new secret; the old one stops working at once.
pub async fn rotate_client_secret(
    store: &SharedStore,
    client_id: &str,
) -> Result<String, ManageError> {
    let secret = generate_secret(CLIENT_SECRET_PREFIX);
    if store
        .set_client_secret(client_id, Digest::of(&secret))
        .await?
    {
        Ok(secret)
    } else {
        // Unknown, or public: a public client has no secret to rotate.
        Err(ManageError::NotFound(format!(
            "confidential client {client_id:?}"
        )))
    }
}

pub async fn remove_client(store: &SharedStore, client_id: &str) -> Result<(), ManageError> {
    if store.remove_client(client_id, SystemClock.now()).await? {
        Ok(())
    } else {
        Err(ManageError::NotFound(format!("client {client_id:?}")))
    }
}
