//! The client's request body as its upstream gets it: cut off once it grows past the route's
//! limit, and a form read whole first, for an access token in it (RFC 6750 §2.2), which is
//! refused.

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Body as _, Incoming};

use crate::guard;
use crate::http::{GatewayError, is_form_urlencoded};
use crate::proxy::UpstreamBody;

/// The client's body as the upstream gets it: streamed, or a form to read whole first (at
/// most its limit's bytes).
pub(super) enum Streamed {
    Body(UpstreamBody),
    Form(Incoming, usize),
}

/// The client's body for the upstream, cut off (413) once it grows past `max`. A form body
/// is read first ([`read_form`]), for a token in it. A request that hyper's framing says has
/// no body (most: GET, HEAD, a `Content-Length: 0`) has no length to check and no form to
/// read, and its empty body is boxed without an allocation (it has no size): two header
/// lookups and an allocation fewer.
pub(super) fn streamed_body(
    headers: &http::HeaderMap,
    body: Incoming,
    max: u64,
) -> Result<Streamed, GatewayError> {
    if body.is_end_stream() {
        return Ok(Streamed::Body(
            Empty::new().map_err(|never| match never {}).boxed_unsync(),
        ));
    }
    let limit = body_limit(headers, max)?;
    Ok(if is_form_urlencoded(headers) {
        Streamed::Form(body, limit)
    } else {
        Streamed::Body(Limited::new(body, limit).boxed_unsync())
    })
}

/// The most bytes the request body for the upstream may have: `max`, refused at once (413)
/// when the declared length is larger.
fn body_limit(headers: &http::HeaderMap, max: u64) -> Result<usize, GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(GatewayError::BodyTooLarge);
    }
    Ok(usize::try_from(max).unwrap_or(usize::MAX))
}

/// A form body for the upstream, read whole (at most `limit` bytes, else 413) so that an
/// `access_token` parameter in it (RFC 6750 §2.2) can be refused.
pub(super) async fn read_form(body: Incoming, limit: usize) -> Result<UpstreamBody, GatewayError> {
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(GatewayError::BodyTooLarge);
        }
        Err(_) => return Err(GatewayError::BodyUnreadable),
    };
    if guard::credential_in_form(&bytes) {
        return Err(GatewayError::CredentialInRequest);
    }
    Ok(Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync())
}
