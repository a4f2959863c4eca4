//! Response bodies and the one place that turns failures into HTTP responses.
//!
//! Every error a request can meet is a [`GatewayError`]; [`GatewayError::into_response`]
//! alone chooses its status code, headers and JSON body, and [`GatewayError::source`] records
//! who caused it (client, upstream, or the gateway itself).

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, PRAGMA, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::guard::AuthError;
use crate::oauth::error::{Challenge, OAuthError, OAuthErrorCode};
use crate::proxy::h1;
use crate::request::RequestError;
use crate::routes::{PathError, ResolveError};
use crate::store::StoreError;

/// Body of every response: the gateway's own bytes, or an upstream's body streamed through,
/// read by the lean HTTP/1.1 client for HTTP/1.1 client connections and by hyper's pooled
/// client for HTTP/2 ones. One enum of the three rather than an `Either` of the first and an
/// enum of the other two: every frame of every response passes through it, and each layer is
/// one more match (and error conversion) per frame.
pub enum Body {
    Own(Full<Bytes>),
    Upstream(h1::ResponseBody),
    Pooled(Incoming),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = h1::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Own(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            Body::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Pooled(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Own(b) => b.is_end_stream(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Pooled(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Own(b) => b.size_hint(),
            Body::Upstream(b) => b.size_hint(),
            Body::Pooled(b) => b.size_hint(),
        }
    }
}

/// A complete in-memory response body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::Own(Full::new(bytes.into()))
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A JSON response that must never be cached (token endpoint, RFC 6749 §5.1).
pub fn no_store_json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = json_response(status, value);
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// True when the request body is `application/x-www-form-urlencoded` (parameters ignored).
pub fn is_form_urlencoded(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Who caused a failure; decides 4xx versus 5xx and the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    Client,
    Upstream,
    Internal,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    #[error("bad request: {0}")]
    BadRequest(#[from] RequestError),
    #[error("no route matches this method and path")]
    RouteNotFound,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("request body too large")]
    BodyTooLarge,
    #[error("the request took too long")]
    RequestTimeout,
    #[error("the request body could not be read")]
    BodyUnreadable,
    #[error("an access token was sent in the query string or form body")]
    CredentialInRequest,
    #[error("too many requests")]
    TooManyRequests { retry_after_seconds: u64 },
    #[error("upstream unreachable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("store failure: {0}")]
    Store(#[from] StoreError),
    #[error("internal failure: {0}")]
    Internal(String),
}

impl From<ResolveError> for GatewayError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::BadPath(p) => GatewayError::BadPath(p),
            ResolveError::NoRoute => GatewayError::RouteNotFound,
        }
    }
}

impl GatewayError {
    pub fn source(&self) -> ErrorSource {
        match self {
            GatewayError::UpstreamUnavailable(_) | GatewayError::UpstreamTimeout => {
                ErrorSource::Upstream
            }
            GatewayError::Store(_) | GatewayError::Internal(_) => ErrorSource::Internal,
            _ => ErrorSource::Client,
        }
    }

    /// Renders the error. `realm` is the `WWW-Authenticate: Bearer` realm.
    pub fn into_response(self, realm: &str) -> Response<Body> {
        use serde_json::json;
        match self {
            GatewayError::BadPath(e) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad_request", "error_description": e.to_string()}),
            ),
            GatewayError::BadRequest(e) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad_request", "error_description": e.to_string()}),
            ),
            GatewayError::RouteNotFound => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "not_found", "error_description": "no route matches this method and path"}),
            ),
            GatewayError::Auth(e) => auth_response(&e, realm),
            GatewayError::OAuth(e) => oauth_response(&e, realm),
            GatewayError::MethodNotAllowed { allow } => {
                let mut r = no_store_json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &json!({"error": "invalid_request", "error_description": format!("use {allow}")}),
                );
                r.headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static(allow));
                r
            }
            GatewayError::BodyTooLarge => no_store_json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": "invalid_request", "error_description": "request body too large"}),
            ),
            GatewayError::BodyUnreadable => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad_request", "error_description": "the request body could not be read"}),
            ),
            GatewayError::RequestTimeout => {
                let mut r = json_response(
                    StatusCode::REQUEST_TIMEOUT,
                    &json!({"error": "request_timeout", "error_description": "the request took too long"}),
                );
                r.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
            GatewayError::CredentialInRequest => {
                // RFC 6750 §2.1 only: a token elsewhere is refused, never silently accepted.
                let mut r = json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "invalid_request", "error_description": "send the access token in the Authorization header only"}),
                );
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_request\""
                )) {
                    r.headers_mut().insert(WWW_AUTHENTICATE, v);
                }
                r
            }
            GatewayError::TooManyRequests {
                retry_after_seconds,
            } => {
                let mut r = no_store_json(
                    StatusCode::TOO_MANY_REQUESTS,
                    &json!({"error": "too_many_requests", "error_description": "slow down and retry later"}),
                );
                r.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(retry_after_seconds.max(1)),
                );
                r
            }
            GatewayError::UpstreamUnavailable(_) => json_response(
                StatusCode::BAD_GATEWAY,
                &json!({"error": "bad_gateway", "error_description": "the upstream could not be reached"}),
            ),
            GatewayError::UpstreamTimeout => json_response(
                StatusCode::GATEWAY_TIMEOUT,
                &json!({"error": "gateway_timeout", "error_description": "the upstream did not answer in time"}),
            ),
            GatewayError::Store(_) | GatewayError::Internal(_) => no_store_json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "temporarily_unavailable", "error_description": "try again later"}),
            ),
        }
    }
}

fn auth_response(e: &AuthError, realm: &str) -> Response<Body> {
    use serde_json::json;
    let (status, challenge, body) = match e {
        AuthError::MissingToken => (
            StatusCode::UNAUTHORIZED,
            format!("Bearer realm=\"{realm}\""),
            json!({"error": "unauthorized", "error_description": "a bearer token is required"}),
        ),
        AuthError::InvalidToken(why) => (
            StatusCode::UNAUTHORIZED,
            format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"the access token is {why}\""
            ),
            json!({"error": "invalid_token", "error_description": format!("the access token is {why}")}),
        ),
        AuthError::InsufficientScope { required } => {
            let scope = required.to_string();
            (
                StatusCode::FORBIDDEN,
                format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{scope}\""
                ),
                json!({"error": "insufficient_scope", "error_description": "the access token lacks a required scope", "scope": scope}),
            )
        }
    };
    let mut resp = json_response(status, &body);
    // realm and scope names are validated config values, so this cannot fail.
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    resp
}

fn oauth_response(e: &OAuthError, realm: &str) -> Response<Body> {
    let status = match e.code {
        OAuthErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut resp = no_store_json(
        status,
        &serde_json::json!({"error": e.code.as_str(), "error_description": e.description}),
    );
    if e.code == OAuthErrorCode::InvalidClient {
        // Every 401 carries a challenge (RFC 7235 §3.1): the scheme the caller used, and
        // Basic — the scheme the endpoint accepts — when it sent its credentials in the body
        // or none at all.
        let challenge = match e.challenge {
            Some(Challenge::Bearer) => {
                format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
            }
            Some(Challenge::Basic) | None => format!("Basic realm=\"{realm}\""),
        };
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(WWW_AUTHENTICATE, v);
        }
    }
    resp
}
