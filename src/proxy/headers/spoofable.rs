//! Client-sent fields that could pass for identity: the names backends, frameworks and other
//! auth proxies read as a user, a "real" URL or method, or forwarding metadata, and the
//! configured identity headers, in any spelling. Pure: table-tested without sockets.

use http::header::HeaderName;

use crate::config::IdentityHeaders;

/// Client-sent headers that backends or frameworks may read as identity, as the request's
/// "real" URL or method (`X-Original-URL`, `X-Rewrite-URL`, `X-HTTP-Method-Override`…), as
/// forwarding metadata (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`…) or as another auth
/// proxy's identity headers (`Remote-User`, `X-Forwarded-User`, `X-Auth-Request-*`…). The
/// gateway removes every one (in any case, with `_` for `-`) on every route and sets the
/// `X-Forwarded-*` ones itself. Sorted, for binary search on the request path.
const SPOOFABLE: &[&str] = &[
    "forwarded",
    "forwarded-for",
    "front-end-https",
    "remote-user",
    "true-client-ip",
    "x-auth-request-access-token",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-user",
    "x-authenticated-user",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-forwarded",
    "x-forwarded-access-token",
    "x-forwarded-email",
    "x-forwarded-for",
    "x-forwarded-groups",
    "x-forwarded-host",
    "x-forwarded-path",
    "x-forwarded-port",
    "x-forwarded-preferred-username",
    "x-forwarded-prefix",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-uri",
    "x-forwarded-user",
    "x-http-method",
    "x-http-method-override",
    "x-method-override",
    "x-original-method",
    "x-original-uri",
    "x-original-url",
    "x-originating-ip",
    "x-real-ip",
    "x-remote-addr",
    "x-remote-ip",
    "x-remote-user",
    "x-rewrite-url",
    "x-url-scheme",
    "x-user",
];

/// `name` with `_` read as `-` (header names are already lower case), as Django's `META`,
/// CGI and others merge them.
fn normalized(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains('_') {
        std::borrow::Cow::Owned(name.replace('_', "-"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// The first bytes of the [`SPOOFABLE`] names, as a table: every field of every request is
/// checked, and most (`accept`, `user-agent`, `cookie`, `content-type`, `host`…) are told
/// apart by their first byte, without the search.
const SPOOFABLE_FIRST: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < SPOOFABLE.len() {
        table[SPOOFABLE[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    table
};

/// True when a client-sent header could pass for identity (see [`SPOOFABLE`]) or for one of
/// the configured identity headers. Cheap for the fields that are neither, since it runs for
/// every field of every request: the search (and the name's normalized copy, when it has a
/// `_`) only for a name whose first byte some spoofable name has, and the identity headers'
/// names compared byte by byte, `_` as `-`, with no copy.
pub(super) fn spoofs_identity(name: &HeaderName, identity: &IdentityHeaders) -> bool {
    let name = name.as_str();
    let first = name.as_bytes().first().map_or(0, |&b| dash(b));
    (SPOOFABLE_FIRST[usize::from(first)] && SPOOFABLE.binary_search(&&*normalized(name)).is_ok())
        || [&identity.user, &identity.client, &identity.scopes]
            .iter()
            .any(|id| same_name(id.as_str(), name))
}

/// `b`, with `_` read as `-`.
fn dash(b: u8) -> u8 {
    if b == b'_' { b'-' } else { b }
}

/// Whether two (lower-case) header names are the same with `_` read as `-`.
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| dash(x) == dash(y))
}

#[cfg(test)]
mod tests {
    use super::super::tests::ids;
    use super::*;

    #[test]
    fn spoofable_list_is_sorted_for_binary_search() {
        assert!(SPOOFABLE.windows(2).all(|w| w[0] < w[1]));
        let id = ids();
        for name in [
            "x-original-url",
            "forwarded",
            "x-auth-request-user",
            "x-forwarded-for",
            "x-auth-user",
        ] {
            assert!(
                spoofs_identity(&HeaderName::from_static(name), &id),
                "{name}"
            );
        }
        // Every listed name, in either spelling.
        for name in SPOOFABLE {
            let underscored = name.replace('-', "_");
            for spelling in [name.to_string(), underscored] {
                let header = HeaderName::from_bytes(spelling.as_bytes()).unwrap();
                assert!(spoofs_identity(&header, &id), "{spelling}");
            }
        }
        // Common fields are not, whatever their first byte.
        for name in [
            "accept",
            "accept-encoding",
            "authorization",
            "cache-control",
            "cookie",
            "from",
            "host",
            "range",
            "referer",
            "te",
            "user-agent",
            "x-csrf-token",
            "x-requested-with",
            "x-auth-use",
            "x-auth-users",
        ] {
            let header = HeaderName::from_static(name);
            assert!(!spoofs_identity(&header, &id), "{name}");
        }
        for name in ["accept", "content-type", "x-request-id", "x-forwarded"] {
            assert_eq!(
                spoofs_identity(&HeaderName::from_static(name), &id),
                name == "x-forwarded",
                "{name}"
            );
        }
    }
}
