//! Who a request speaks for: the [`Identity`] behind a valid access token (client, user,
//! scopes) with its identity-header values made once, and the [`Principal`] the guard checks
//! and the proxy forwards. A leaf module: the cache, the guard and the proxy all use it, and
//! it uses none of them.

use std::sync::Arc;

use http::header::HeaderValue;

use crate::scope::ScopeSet;

/// What the gateway asserts about the caller, as the values of the identity headers: made
/// once per identity (the token cache shares one per client, user and scopes), not per
/// request. A value that cannot be a header value is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IdentityValues {
    pub user: Option<HeaderValue>,
    pub client: Option<HeaderValue>,
    /// The scopes, space-separated.
    pub scopes: Option<HeaderValue>,
}

impl IdentityValues {
    pub fn new(user: Option<&str>, client: &str, scopes: &ScopeSet) -> IdentityValues {
        IdentityValues {
            user: user.and_then(|u| HeaderValue::from_str(u).ok()),
            client: HeaderValue::from_str(client).ok(),
            scopes: HeaderValue::from_str(&scopes.to_string()).ok(),
        }
    }
}

/// The identity behind a token: shared (interned) by every cached token of the same client,
/// user and scopes.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub client_id: Box<str>,
    /// `None` for client_credentials tokens.
    pub username: Option<Box<str>>,
    pub scopes: ScopeSet,
    /// The same as identity-header values, made once here instead of on every request.
    pub header_values: IdentityValues,
}

impl Identity {
    pub fn new(client_id: Box<str>, username: Option<Box<str>>, scopes: ScopeSet) -> Identity {
        let header_values = IdentityValues::new(username.as_deref(), &client_id, &scopes);
        Identity {
            client_id,
            username,
            scopes,
            header_values,
        }
    }
}

/// Who a valid access token speaks for, and until when. 16 bytes: cheap to cache and clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    identity: Arc<Identity>,
    /// Unix seconds.
    pub expires_at: i64,
}

impl Principal {
    pub fn new(identity: Identity, expires_at: i64) -> Principal {
        Principal::shared(Arc::new(identity), expires_at)
    }

    /// A principal of an identity already shared (interned) elsewhere.
    pub fn shared(identity: Arc<Identity>, expires_at: i64) -> Principal {
        Principal {
            identity,
            expires_at,
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.identity.scopes.contains(scope)
    }
}

impl std::ops::Deref for Principal {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        &self.identity
    }
}
