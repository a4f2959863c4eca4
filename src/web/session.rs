//! Browser sessions at `/o/`: a random id in an `HttpOnly`, `SameSite=Lax` cookie scoped to
//! `/o/` (`Secure` over TLS), stored server-side only as its digest, with an expiry; and CSRF
//! tokens — bound to the session once signed in (a digest of its id), a double-submitted
//! random cookie before (the sign-in form itself).

use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};
use sha2::{Digest as _, Sha256};

use crate::crypto::{Digest, generate_secret, same_bytes};
use crate::store::{SessionRecord, SharedStore, StoreError};

pub const SESSION_COOKIE: &str = "portcullis_session";
/// The double-submitted CSRF cookie of the sign-in form.
pub const CSRF_COOKIE: &str = "portcullis_csrf";

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Signed {
    pub username: String,
    /// The session's own id (from the cookie): never logged, never stored.
    pub id: String,
}

impl Signed {
    /// The CSRF token of this session's forms.
    pub fn csrf(&self) -> String {
        csrf_of(&self.id)
    }
}

/// The CSRF token bound to a session id: unforgeable without the id, which only the cookie
/// holds.
fn csrf_of(session_id: &str) -> String {
    use base64::Engine as _;
    let mut h = Sha256::new();
    h.update(b"portcullis csrf\0");
    h.update(session_id.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// True when the two are equal, compared in constant time.
pub fn same(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// A cookie's value from the request (every `Cookie` field, HTTP/2 may send several).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for `/o/`: `HttpOnly`, the given `SameSite`, `Secure` over TLS.
/// `max_age` 0 deletes the cookie.
pub fn set_cookie(
    name: &str,
    value: &str,
    max_age: i64,
    same_site: &str,
    secure: bool,
) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/o/; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
    ))
    // Names, base64url values and fixed attributes are always valid header text.
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The signed-in session the request's cookie names, if it is live.
pub async fn current(
    store: &SharedStore,
    headers: &HeaderMap,
    now: i64,
) -> Result<Option<Signed>, StoreError> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    Ok(store.session(Digest::of(id), now).await?.map(|s| Signed {
        username: s.username,
        id: id.to_owned(),
    }))
}

/// Starts a session for `username`; returns it (the id goes into the cookie).
pub async fn start(
    store: &SharedStore,
    username: &str,
    now: i64,
    lifetime: i64,
) -> Result<Signed, StoreError> {
    let id = generate_secret("");
    store
        .insert_session(SessionRecord {
            digest: Digest::of(&id),
            username: username.to_owned(),
            created_at: now,
            expires_at: now + lifetime,
        })
        .await?;
    Ok(Signed {
        username: username.to_owned(),
        id,
    })
}

/// A fresh random value for the sign-in form's double-submitted CSRF cookie.
pub fn new_csrf() -> String {
    generate_secret("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_from_every_field() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; portcullis_csrf=xyz"));
        h.append(COOKIE, HeaderValue::from_static("portcullis_session=abc"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "portcullis"), None);
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let a = Signed {
            username: "u".into(),
            id: "one".into(),
        };
        let b = Signed {
            username: "u".into(),
            id: "two".into(),
        };
        assert_eq!(a.csrf(), a.csrf());
        assert_ne!(a.csrf(), b.csrf());
        assert!(same(&a.csrf(), &a.csrf()));
        assert!(!same(&a.csrf(), &b.csrf()));
        assert!(!same("", "x"));
    }

    #[test]
    fn session_cookies_are_scoped_and_guarded() {
        let v = set_cookie(SESSION_COOKIE, "abc", 60, "Lax", true);
        assert_eq!(
            v.to_str().unwrap(),
            "portcullis_session=abc; Path=/o/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        let plain = set_cookie(SESSION_COOKIE, "abc", 0, "Lax", false);
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }
}
