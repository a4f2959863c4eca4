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

/// A token request the client got wrong. `description` is fixed text: it never echoes a
/// credential back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: &'static str,
    /// The client tried HTTP Basic authentication: an `invalid_client` answer then carries
    /// `WWW-Authenticate: Basic` (RFC 6749 §5.2).
    pub basic_challenge: bool,
}

impl OAuthError {
    pub const fn new(code: OAuthErrorCode, description: &'static str) -> Self {
        OAuthError {
            code,
            description,
            basic_challenge: false,
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
