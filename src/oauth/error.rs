//! RFC 6749 §5.2 token-endpoint errors. How they become responses is decided in
//! `crate::http`, the one place that chooses status codes.

/// The `error` codes of RFC 6749 §5.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
}

impl OAuthErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
        }
    }
}

/// How the caller tried to authenticate, which decides the `WWW-Authenticate` challenge of an
/// `invalid_client` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic client credentials (RFC 6749 §5.2).
    Basic,
    /// A bearer token (introspection callers, RFC 7662 §2.1).
    Bearer,
}

/// A token request the client got wrong. `description` is fixed text: it never echoes a
/// credential back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: &'static str,
    pub challenge: Option<Challenge>,
}

impl OAuthError {
    pub const fn new(code: OAuthErrorCode, description: &'static str) -> Self {
        OAuthError {
            code,
            description,
            challenge: None,
        }
    }

    pub const fn invalid_request(description: &'static str) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }

    pub const fn invalid_scope(description: &'static str) -> Self {
        Self::new(OAuthErrorCode::InvalidScope, description)
    }

    pub const fn invalid_grant(description: &'static str) -> Self {
        Self::new(OAuthErrorCode::InvalidGrant, description)
    }
}
