//! What the gateway requires of every request's head before it is routed, whichever endpoint
//! it is for: one valid authority (RFC 9112 §3.2, RFC 9113 §8.3.1) and at most one
//! `Content-Type`. Pure and IO-free: table-tested without sockets.

use http::header::{CONTENT_TYPE, HOST, HeaderValue};
use http::{HeaderMap, Uri, Version};

/// Why a request head was refused. Every variant is the client's fault (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("an HTTP/1.1 request must carry a Host header")]
    MissingHost,
    #[error("the request carries more than one Host header")]
    RepeatedHost,
    #[error("the Host header is not a valid host[:port]")]
    InvalidHost,
    #[error("the host header disagrees with :authority")]
    HostMismatch,
    #[error("the request carries more than one Content-Type header")]
    RepeatedContentType,
}

/// Checks a request head; returns its validated authority (`host[:port]`), the only value
/// that may become `X-Forwarded-Host`.
pub fn validate(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, RequestError> {
    let mut content_types = headers.get_all(CONTENT_TYPE).iter();
    if content_types.next().is_some() && content_types.next().is_some() {
        return Err(RequestError::RepeatedContentType);
    }
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(RequestError::RepeatedHost);
    }
    if version >= Version::HTTP_2 {
        // `:authority` is the URI's authority; a `host` beside it must say the same.
        if let Some(authority) = uri.authority() {
            let authority = authority.as_str();
            if !valid_authority(authority.as_bytes()) {
                return Err(RequestError::InvalidHost);
            }
            if let Some(host) = host
                && !host.as_bytes().eq_ignore_ascii_case(authority.as_bytes())
            {
                return Err(RequestError::HostMismatch);
            }
            return HeaderValue::from_str(authority)
                .map(Some)
                .map_err(|_| RequestError::InvalidHost);
        }
    }
    match host {
        Some(host) if valid_authority(host.as_bytes()) => Ok(Some(host.clone())),
        Some(_) => Err(RequestError::InvalidHost),
        // HTTP/1.0 predates Host; HTTP/2 may carry neither (then nothing is forwarded).
        None if version == Version::HTTP_11 => Err(RequestError::MissingHost),
        None => Ok(None),
    }
}

/// The bytes a reg-name may hold besides percent-escapes (RFC 3986 §3.2.2: unreserved and
/// sub-delims), as a table: the check runs on every request's `Host`, a byte at a time.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// RFC 3986 `host [ ":" port ]` without userinfo: an IP literal in brackets or a reg-name
/// (unreserved, sub-delims and well-formed percent-escapes), then an optional port of at most
/// five digits, at most 65535.
fn valid_authority(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        if !ok {
            return false;
        }
        match &value[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&value[..=end], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    if host.is_empty() {
        return false;
    }
    if host.first() != Some(&b'[') {
        let mut i = 0;
        while i < host.len() {
            let b = host[i];
            if b == b'%' {
                let escaped = host.get(i + 1..i + 3);
                if !escaped.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
                continue;
            }
            if !REG_NAME[usize::from(b)] {
                return false;
            }
            i += 1;
        }
    }
    match port {
        None => true,
        Some(p) => {
            // Five digits at most: the value fits a u32 before it is compared.
            !p.is_empty()
                && p.len() <= 5
                && p.iter().all(u8::is_ascii_digit)
                && p.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: Version, uri: &str, headers: &[(&str, &str)]) -> (Version, Uri, HeaderMap) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        (version, uri.parse().unwrap(), map)
    }

    #[test]
    fn authorities() {
        use RequestError::*;
        let h1 = Version::HTTP_11;
        let h2 = Version::HTTP_2;
        type Case<'a> = (
            Version,
            &'a str,
            &'a [(&'a str, &'a str)],
            Result<Option<&'a str>, RequestError>,
        );
        let cases: &[Case] = &[
            (
                h1,
                "/a",
                &[("host", "example.com")],
                Ok(Some("example.com")),
            ),
            (
                h1,
                "/a",
                &[("host", "example.com:8080")],
                Ok(Some("example.com:8080")),
            ),
            (
                h1,
                "/a",
                &[("host", "127.0.0.1:1")],
                Ok(Some("127.0.0.1:1")),
            ),
            (h1, "/a", &[("host", "[::1]:443")], Ok(Some("[::1]:443"))),
            (h1, "/a", &[("host", "[::1]")], Ok(Some("[::1]"))),
            (
                h1,
                "/a",
                &[("host", "xn--bcher-kva.example")],
                Ok(Some("xn--bcher-kva.example")),
            ),
            (h1, "/a", &[], Err(MissingHost)),
            (Version::HTTP_10, "/a", &[], Ok(None)),
            (h1, "/a", &[("host", "a"), ("host", "b")], Err(RepeatedHost)),
            (h1, "/a", &[("host", "a"), ("host", "a")], Err(RepeatedHost)),
            (h1, "/a", &[("host", "")], Err(InvalidHost)),
            (h1, "/a", &[("host", "user@example.com")], Err(InvalidHost)),
            (h1, "/a", &[("host", "example.com/evil")], Err(InvalidHost)),
            (h1, "/a", &[("host", "example.com:80:80")], Err(InvalidHost)),
            (h1, "/a", &[("host", "example.com:")], Err(InvalidHost)),
            (h1, "/a", &[("host", "example.com:99999")], Err(InvalidHost)),
            (h1, "/a", &[("host", "a:65535")], Ok(Some("a:65535"))),
            (h1, "/a", &[("host", "a:65536")], Err(InvalidHost)),
            (h1, "/a", &[("host", "a:00080")], Ok(Some("a:00080"))),
            (h1, "/a", &[("host", "a:000080")], Err(InvalidHost)),
            (
                h1,
                "/a",
                &[("host", "a!$&'()*+,;=~_-.%4Fb")],
                Ok(Some("a!$&'()*+,;=~_-.%4Fb")),
            ),
            (h1, "/a", &[("host", "a\"b")], Err(InvalidHost)),
            (h1, "/a", &[("host", "a{b}")], Err(InvalidHost)),
            (h1, "/a", &[("host", "example.com:8o")], Err(InvalidHost)),
            (h1, "/a", &[("host", "exa mple.com")], Err(InvalidHost)),
            (h1, "/a", &[("host", "a%zz")], Err(InvalidHost)),
            (h1, "/a", &[("host", "[::1")], Err(InvalidHost)),
            (h1, "/a", &[("host", "[::1]x")], Err(InvalidHost)),
            (h1, "/a", &[("host", "[]")], Err(InvalidHost)),
            (h1, "/a", &[("host", ":80")], Err(InvalidHost)),
            (h2, "https://example.com/a", &[], Ok(Some("example.com"))),
            (
                h2,
                "https://example.com/a",
                &[("host", "EXAMPLE.com")],
                Ok(Some("example.com")),
            ),
            (
                h2,
                "https://example.com/a",
                &[("host", "evil.com")],
                Err(HostMismatch),
            ),
            (
                h2,
                "https://example.com/a",
                &[("host", "a"), ("host", "b")],
                Err(RepeatedHost),
            ),
            (
                h2,
                "/a",
                &[("host", "example.com")],
                Ok(Some("example.com")),
            ),
            (h2, "/a", &[], Ok(None)),
            (
                h1,
                "/a",
                &[
                    ("host", "a"),
                    ("content-type", "text/plain"),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                Err(RepeatedContentType),
            ),
            (
                h1,
                "/a",
                &[("host", "a"), ("content-type", "text/plain")],
                Ok(Some("a")),
            ),
        ];
        for (version, uri, headers, want) in cases {
            let (v, u, h) = head(*version, uri, headers);
            let got = validate(v, &u, &h);
            let got = got
                .as_ref()
                .map(|o| o.as_ref().map(|v| v.to_str().unwrap()));
            assert_eq!(
                got,
                want.as_ref().map(|o| *o),
                "{version:?} {uri} {headers:?}"
            );
        }
    }
}
