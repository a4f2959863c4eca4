//! The resource-server guard: where a credential may be (RFC 6750: the `Authorization` header
//! only; one in the query or a form body is refused, never silently ignored or forwarded),
//! bearer-token extraction and the scope check. Pure and IO-free; the token lookup itself is
//! the cache's job.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::crypto::ACCESS_TOKEN_PREFIX;
use crate::principal::Principal;
use crate::scope::ScopeSet;

/// Length of an access token: prefix + 43 base64url characters (256 bits).
const ACCESS_TOKEN_LEN: usize = ACCESS_TOKEN_PREFIX.len() + 43;

/// Why a request was not authorized (RFC 6750 §3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` credentials at all: a bare challenge, no error code.
    #[error("the request carries no bearer token")]
    MissingToken,
    /// Present but malformed, unknown, revoked or expired.
    #[error("the access token is {0}")]
    InvalidToken(&'static str),
    /// Valid, but lacks scopes the route requires.
    #[error("the access token lacks a required scope")]
    InsufficientScope { required: ScopeSet },
}

/// The longest token looked up when imported tokens are accepted (django-oauth-toolkit keeps
/// at most 255 characters).
pub const IMPORTED_TOKEN_MAX_LEN: usize = 255;

/// Whether every byte is one of a b64token's (RFC 6750 §2.1) before its trailing `=`s:
/// ALPHA, DIGIT, `-`, `.`, `_`, `~`, `+`, `/`. Every request with a token is checked byte by
/// byte, so the check is comparisons folded without a branch per byte, which the compiler
/// turns into vector code (16 bytes a step) where a table lookup per byte cannot be.
fn all_b64token(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| {
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        let digit = b.wrapping_sub(b'0') < 10;
        let mark =
            (b == b'-') | (b == b'.') | (b == b'_') | (b == b'~') | (b == b'+') | (b == b'/');
        ok & (letter | digit | mark)
    })
}

/// What `HeaderValue::to_str` accepts: visible ASCII, space and tab.
fn is_visible_ascii(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b)
}

/// The bearer token of a request, taken from the `Authorization` header only.
///
/// A request with another scheme (say `Basic`) carries no bearer token. A token that cannot
/// be one of ours (wrong prefix or length) is rejected here, without a store lookup, unless
/// `imported` (`oauth.accept_imported_tokens`: tokens imported from django-oauth-toolkit have
/// their own shapes), when any token of RFC 6750 syntax up to [`IMPORTED_TOKEN_MAX_LEN`]
/// bytes is looked up.
pub fn bearer_token(headers: &HeaderMap, imported: bool) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::MissingToken);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidToken("malformed"));
    }
    // On bytes, in one pass over the token: a b64token is visible ASCII, so checking it
    // checks what `to_str` would.
    let value = value.as_bytes();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(space) => (&value[..space], &value[space + 1..]),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        // Another scheme's credentials, unless the field is not even text.
        return Err(if value.iter().all(|&b| is_visible_ascii(b)) {
            AuthError::MissingToken
        } else {
            AuthError::InvalidToken("malformed")
        });
    }
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let token = &rest[start..];
    let end = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let body = &token[..end];
    if body.is_empty() || !all_b64token(body) {
        return Err(AuthError::InvalidToken("malformed"));
    }
    let token = std::str::from_utf8(token).map_err(|_| AuthError::InvalidToken("malformed"))?;
    let ours = token.len() == ACCESS_TOKEN_LEN && token.starts_with(ACCESS_TOKEN_PREFIX);
    let looked_up = ours || (imported && token.len() <= IMPORTED_TOKEN_MAX_LEN);
    if !looked_up {
        return Err(AuthError::InvalidToken("unknown"));
    }
    Ok(token)
}

/// True when a query string carries an `access_token` parameter (RFC 6750 §2.3). Parameters
/// are split at `&` and at `;`, which some frameworks also read as a separator.
pub fn credential_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        (q.contains("access_token") || q.contains('%'))
            && q.split(['&', ';']).any(|pair| {
                form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .is_some_and(|(k, _)| k == "access_token")
            })
    })
}

/// True when a form body (RFC 6750 §2.2) carries an `access_token` parameter.
pub fn credential_in_form(body: &[u8]) -> bool {
    form_urlencoded::parse(body).any(|(k, _)| k == "access_token")
}

/// Every scope in `required` must be held by the principal.
pub fn check_scopes(principal: &Principal, required: &ScopeSet) -> Result<(), AuthError> {
    if principal.scopes.contains_all(required) {
        Ok(())
    } else {
        Err(AuthError::InsufficientScope {
            required: required.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Identity;
    use http::HeaderValue;

    const TOKEN: &str = "pcat_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_extraction() {
        assert_eq!(TOKEN.len(), ACCESS_TOKEN_LEN);
        let ok = format!("Bearer {TOKEN}");
        let lower = format!("bearer {TOKEN}");
        let spaces = format!("Bearer   {TOKEN}");
        let two = [ok.as_str(), ok.as_str()];
        let trailing = format!("Bearer {TOKEN} ");
        let cases: Vec<(Vec<&str>, Result<&str, AuthError>)> = vec![
            (vec![], Err(AuthError::MissingToken)),
            (vec![&ok], Ok(TOKEN)),
            (vec![&lower], Ok(TOKEN)),
            (vec![&spaces], Ok(TOKEN)),
            (vec!["Basic dXNlcjpwYXNz"], Err(AuthError::MissingToken)),
            (vec!["Bearer"], Err(AuthError::InvalidToken("malformed"))),
            (vec!["Bearer "], Err(AuthError::InvalidToken("malformed"))),
            (
                vec!["Bearer a,b"],
                Err(AuthError::InvalidToken("malformed")),
            ),
            (vec![&trailing], Err(AuthError::InvalidToken("malformed"))),
            (two.to_vec(), Err(AuthError::InvalidToken("malformed"))),
            (vec!["Bearer abc"], Err(AuthError::InvalidToken("unknown"))),
            (
                vec!["Bearer abc=="],
                Err(AuthError::InvalidToken("unknown")),
            ),
            (
                vec!["Bearer ==="],
                Err(AuthError::InvalidToken("malformed")),
            ),
            (
                vec!["Bearer ab=c"],
                Err(AuthError::InvalidToken("malformed")),
            ),
            (
                vec!["Bearer \tabc"],
                Err(AuthError::InvalidToken("malformed")),
            ),
            (vec!["Bearer\tabc"], Err(AuthError::MissingToken)),
            (vec!["Bearerabc"], Err(AuthError::MissingToken)),
            (
                vec!["Bearer pcrt_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"],
                Err(AuthError::InvalidToken("unknown")),
            ),
        ];
        for (values, want) in cases {
            assert_eq!(bearer_token(&headers(&values), false), want, "{values:?}");
        }
        // A field that is not text (obs-text bytes) is malformed, whatever its scheme.
        for value in [&b"Basic \xe9t\xe9"[..], b"Bearer abc\xe9", b"\xe9 abc"] {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
            assert_eq!(
                bearer_token(&h, true),
                Err(AuthError::InvalidToken("malformed")),
                "{value:?}"
            );
        }
    }

    /// Every byte value, against RFC 6750 §2.1's b64token as the RFC spells it.
    #[test]
    fn b64token_bytes() {
        let rfc = |b: u8| b.is_ascii_alphabetic() || b.is_ascii_digit() || b"-._~+/".contains(&b);
        for b in 0..=255u8 {
            for at in [0, 7, 15, 16, 30, 46] {
                let mut token = *b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJK";
                token[at] = b;
                assert_eq!(all_b64token(&token), rfc(b), "byte {b:#04x} at {at}");
            }
        }
        assert!(all_b64token(b""));
    }

    #[test]
    fn imported_tokens_are_looked_up_only_when_accepted() {
        let dot = "Bearer dot-access-alice-live-token-0001";
        let long = format!("Bearer {}", "a".repeat(IMPORTED_TOKEN_MAX_LEN + 1));
        let cases: Vec<(&str, bool, Result<&str, AuthError>)> = vec![
            (dot, false, Err(AuthError::InvalidToken("unknown"))),
            (dot, true, Ok("dot-access-alice-live-token-0001")),
            (&long, true, Err(AuthError::InvalidToken("unknown"))),
            (
                "Bearer a,b",
                true,
                Err(AuthError::InvalidToken("malformed")),
            ),
        ];
        for (value, imported, want) in cases {
            assert_eq!(
                bearer_token(&headers(&[value]), imported),
                want,
                "{value} {imported}"
            );
        }
        let ours = format!("Bearer {TOKEN}");
        assert_eq!(bearer_token(&headers(&[&ours]), true), Ok(TOKEN));
    }

    #[test]
    fn credentials_outside_the_header() {
        let cases = [
            (None, false),
            (Some("a=1"), false),
            (Some("access_token=x"), true),
            (Some("a=1&access_token=x"), true),
            (Some("access_tokens=x"), false),
            (Some("x=access_token"), false),
            (Some("access%5Ftoken=x"), true),
            (Some("a=1;access_token=x"), true),
            (Some("a=1;access%5ftoken=x"), true),
            (Some("a=access_token;b=1"), false),
            (Some("access_token"), true),
        ];
        for (q, want) in cases {
            assert_eq!(credential_in_query(q), want, "{q:?}");
        }
        assert!(credential_in_form(b"a=1&access_token=x"));
        assert!(credential_in_form(b"access%5Ftoken=x"));
        assert!(!credential_in_form(b"a=access_token"));
    }

    #[test]
    fn all_required_scopes_must_be_held() {
        let p = Principal::new(
            Identity::new("c".into(), None, ScopeSet::parse("read write").unwrap()),
            0,
        );
        let req = |s: &[&str]| -> ScopeSet { s.iter().collect() };
        let cases: &[(&[&str], bool)] = &[
            (&[], true),
            (&["read"], true),
            (&["read", "write"], true),
            (&["groups"], false),
            (&["read", "groups"], false),
            (&["rea"], false),
        ];
        for (required, ok) in cases {
            assert_eq!(
                check_scopes(&p, &req(required)).is_ok(),
                *ok,
                "{required:?}"
            );
        }
    }
}
