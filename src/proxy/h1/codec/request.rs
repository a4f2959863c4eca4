//! The request head toward an upstream, written straight into the connection's write
//! buffer: the message's fields, the gateway's beside them, and the framing the body gets.

use std::fmt::Write as _;

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, Method};

/// Room for a request head's fields, besides its target: most heads fit.
pub const HEAD_ROOM: usize = 512;

/// Appends the request head: `path` is origin-form; the fields are `headers`' but those named
/// in `left_out`, then `more` (fields the caller sets beside the message's own, written
/// without passing through a map); `Content-Length` and `Transfer-Encoding` in `headers` are
/// ignored and the framing written is `body_length`'s: `Some(n)` a length (none written for 0
/// on methods that do not define a body), `None` chunked.
pub fn encode_head<'a>(
    out: &mut BytesMut,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    left_out: &[HeaderName],
    more: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    body_length: Option<u64>,
) {
    // Most heads fit; a larger one grows the buffer (no second pass over the headers).
    out.reserve(HEAD_ROOM + path.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut field = |name: &HeaderName, value: &HeaderValue| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in headers {
        if name != CONTENT_LENGTH && name != TRANSFER_ENCODING && !left_out.contains(name) {
            field(name, value);
        }
    }
    for (name, value) in more {
        field(name, value);
    }
    match body_length {
        Some(0) if !defines_body(method) => {}
        Some(n) => {
            // Writing into a `BytesMut` cannot fail.
            let _ = write!(out, "content-length: {n}\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Methods whose requests carry a body by definition, so an empty one is said (RFC 9110 §8.6).
fn defines_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_carry_the_framing_they_are_given() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("up"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("transfer-encoding", HeaderValue::from_static("gzip"));
        headers.insert("authorization", HeaderValue::from_static("Bearer x"));
        let cases: &[(Method, Option<u64>, &str)] = &[
            (Method::GET, Some(0), ""),
            (Method::POST, Some(0), "content-length: 0\r\n"),
            (Method::PUT, Some(7), "content-length: 7\r\n"),
            (Method::POST, None, "transfer-encoding: chunked\r\n"),
        ];
        let more = HeaderName::from_static("x-more");
        let value = HeaderValue::from_static("1");
        for (method, length, framing) in cases {
            let mut out = BytesMut::new();
            encode_head(
                &mut out,
                method,
                "/a?b",
                &headers,
                &[http::header::AUTHORIZATION],
                [(&more, &value)],
                *length,
            );
            let want = format!("{method} /a?b HTTP/1.1\r\nhost: up\r\nx-more: 1\r\n{framing}\r\n");
            assert_eq!(std::str::from_utf8(&out).unwrap(), want);
        }
    }
}
