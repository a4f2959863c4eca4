//! Header rewriting for proxied requests and responses. Pure: table-tested without sockets.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::config::IdentityHeaders;
use crate::principal::IdentityValues;
use crate::request_id::X_REQUEST_ID;

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the legacy ones proxies also drop.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the headers named in `Connection`, then the hop-by-hop set. Runs before the
/// gateway adds anything, so a client cannot use `Connection` to delete the gateway's headers.
/// A message that came with `Transfer-Encoding` was framed by it: a `Content-Length` beside it
/// is stale (RFC 9112 §6.3) and goes too, so that the next hop frames the body afresh.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (most messages carry one hop-by-hop header at most,
    // `Connection: keep-alive`) instead of a lookup per hop-by-hop name.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // HOP_BY_HOP[0] is `Connection`: the fields it lists go too. `keep-alive`, the option
    // nearly every message lists, is in HOP_BY_HOP already and is not parsed again.
    if present & 1 == 1 {
        // The values are read while the map changes, so they are cloned first (a reference
        // count each; an empty Vec for the usual single field does not allocate), and each
        // option is looked up by its text: no `HeaderName` is made for `close` or any other
        // option that names no field of the message.
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let more: Vec<HeaderValue> = values.cloned().collect();
        for value in first.iter().chain(&more) {
            // The common value whole, before any splitting.
            if value.as_bytes().eq_ignore_ascii_case(b"keep-alive") {
                continue;
            }
            let Ok(list) = value.to_str() else { continue };
            for option in list.split(',').map(str::trim) {
                if !option.is_empty() && !option.eq_ignore_ascii_case("keep-alive") {
                    headers.remove(option);
                }
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & (1 << TRANSFER_ENCODING_INDEX) != 0 {
        headers.remove(header::CONTENT_LENGTH);
    }
}

/// Position of `Transfer-Encoding` in [`HOP_BY_HOP`].
const TRANSFER_ENCODING_INDEX: usize = 7;

/// The position of `name` in [`HOP_BY_HOP`]: one match on the name's text (by length, then
/// bytes) instead of nine comparisons for every header of every message.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Joins several `Cookie` fields into one, separated by `; ` (RFC 9113 §8.2.3: HTTP/2 clients
/// may split cookies into fields of their own; an HTTP/1.1 upstream expects one).
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined: Vec<u8> = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // Joined valid values with `; ` are a valid value.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Where the request came from, for `X-Forwarded-*`.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// `X-Forwarded-For`: the peer's address (see [`forwarded_for`]).
    pub peer: HeaderValue,
    /// `X-Forwarded-Proto`: `http` or `https`.
    pub proto: HeaderValue,
    /// The `Host` the client asked for (or the HTTP/2 `:authority`).
    pub host: Option<HeaderValue>,
}

/// The `X-Forwarded-For` value for a peer: its address, alone (the gateway is the edge).
/// Computed once per client connection.
pub fn forwarded_for(peer: IpAddr) -> HeaderValue {
    // An IP address in text is always a valid header value.
    HeaderValue::from_str(&peer.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

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

/// True when a client-sent header could pass for identity (see [`SPOOFABLE`]) or for one of
/// the configured identity headers.
fn spoofs_identity(name: &HeaderName, identity: &IdentityHeaders) -> bool {
    let n = normalized(name.as_str());
    SPOOFABLE.binary_search(&&*n).is_ok()
        || [&identity.user, &identity.client, &identity.scopes]
            .iter()
            .any(|id| *normalized(id.as_str()) == *n)
}

/// Adds `Vary: Authorization` to a response to an authenticated request, so that no shared
/// cache serves it to someone else, unless the upstream already made it private or uncacheable.
pub fn vary_on_authorization(headers: &mut HeaderMap) {
    let private = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store")
        });
    let varies = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == "*" || f.trim().eq_ignore_ascii_case("authorization"));
    if !private && !varies {
        headers.append(header::VARY, HeaderValue::from_static("Authorization"));
    }
}

/// Clears a request's headers for its upstream, in this order: hop-by-hop ones (including
/// the `Connection`-listed ones) removed; `Cookie` fields joined into one; `Authorization`,
/// `Host`, `X-Request-Id`, every client-sent variant of the identity headers and every other
/// spoofable header removed. What the gateway sets in their place is [`GatewayFields`].
pub fn strip_request_headers(headers: &mut HeaderMap, identity_headers: &IdentityHeaders) {
    strip_hop_by_hop(headers);
    join_cookies(headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| **name == X_REQUEST_ID || spoofs_identity(name, identity_headers))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// The fields the gateway sets on a request for its upstream, once [`strip_request_headers`]
/// has removed every client-sent one of their names: `X-Forwarded-*` (the gateway is the
/// edge: `X-Forwarded-For` is the peer address, not appended to), the identity headers of an
/// authorized request, and `X-Request-Id`. The lean HTTP/1.1 client writes them straight
/// into the request head (inserted into the header map, they cost a hash and an insertion
/// each, and often the map's growth); the pooled client takes them in the map.
pub struct GatewayFields<'a> {
    pub identity_headers: &'a IdentityHeaders,
    pub forwarded: &'a Forwarded,
    pub identity: Option<&'a IdentityValues>,
    pub request_id: &'a HeaderValue,
}

impl<'a> GatewayFields<'a> {
    /// Each field, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + use<'a> {
        let forwarded: &'a Forwarded = self.forwarded;
        let names: &'a IdentityHeaders = self.identity_headers;
        let identity = self.identity;
        [
            Some((&X_FORWARDED_FOR, &forwarded.peer)),
            Some((&X_FORWARDED_PROTO, &forwarded.proto)),
            forwarded.host.as_ref().map(|v| (&X_FORWARDED_HOST, v)),
            identity
                .and_then(|i| i.user.as_ref())
                .map(|v| (&names.user, v)),
            identity
                .and_then(|i| i.client.as_ref())
                .map(|v| (&names.client, v)),
            identity
                .and_then(|i| i.scopes.as_ref())
                .map(|v| (&names.scopes, v)),
            Some((&X_REQUEST_ID, self.request_id)),
        ]
        .into_iter()
        .flatten()
    }

    /// Sets each field in `headers`.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.iter() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> IdentityHeaders {
        IdentityHeaders {
            user: HeaderName::from_static("x-auth-user"),
            client: HeaderName::from_static("x-auth-client"),
            scopes: HeaderName::from_static("x-auth-scopes"),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn fwd() -> Forwarded {
        Forwarded {
            peer: forwarded_for("127.0.0.9".parse().unwrap()),
            proto: HeaderValue::from_static("http"),
            host: Some(HeaderValue::from_static("api.example")),
        }
    }

    /// client sends -> upstream sees
    #[test]
    fn client_sends_upstream_sees() {
        let scopes = crate::scope::ScopeSet::parse("read write").unwrap();
        let identity = IdentityValues::new(Some("alice"), "cid", &scopes);
        let service = IdentityValues::new(None, "svc", &scopes);
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            Option<&'a IdentityValues>,
            &'a [(&'a str, Option<&'a str>)],
        );
        let cases: &[Case] = &[
            (
                &[
                    ("authorization", "Bearer x"),
                    ("host", "api.example"),
                    ("accept", "*/*"),
                ],
                Some(&identity),
                &[
                    ("authorization", None),
                    ("host", None),
                    ("accept", Some("*/*")),
                    ("x-auth-user", Some("alice")),
                    ("x-auth-client", Some("cid")),
                    ("x-auth-scopes", Some("read write")),
                    ("x-forwarded-for", Some("127.0.0.9")),
                    ("x-forwarded-proto", Some("http")),
                    ("x-forwarded-host", Some("api.example")),
                ],
            ),
            (
                &[
                    ("x-auth-user", "mallory"),
                    ("X_AUTH_USER", "mallory"),
                    ("x_auth-client", "evil"),
                    ("x-auth-scopes", "admin"),
                ],
                None,
                &[
                    ("x-auth-user", None),
                    ("x_auth_user", None),
                    ("x_auth-client", None),
                    ("x-auth-scopes", None),
                ],
            ),
            (
                &[("x-auth-user", "mallory")],
                Some(&service),
                &[("x-auth-user", None), ("x-auth-client", Some("svc"))],
            ),
            (
                &[
                    (
                        "connection",
                        "close, x-forwarded-for, x-auth-client, x-custom",
                    ),
                    ("x-custom", "1"),
                    ("keep-alive", "5"),
                    ("te", "trailers"),
                    ("upgrade", "h2c"),
                ],
                Some(&identity),
                &[
                    ("connection", None),
                    ("x-custom", None),
                    ("keep-alive", None),
                    ("te", None),
                    ("upgrade", None),
                    ("x-forwarded-for", Some("127.0.0.9")),
                    ("x-auth-client", Some("cid")),
                ],
            ),
            (
                &[
                    ("x-forwarded-for", "10.0.0.1"),
                    ("X_Forwarded_For", "10.0.0.2"),
                    ("forwarded", "for=10.0.0.3"),
                ],
                None,
                &[
                    ("x-forwarded-for", Some("127.0.0.9")),
                    ("x_forwarded_for", None),
                    ("forwarded", None),
                ],
            ),
            (
                &[
                    ("x-original-url", "/admin"),
                    ("X-Rewrite-URL", "/admin"),
                    ("x-forwarded-uri", "/admin"),
                    ("x_http_method_override", "DELETE"),
                    ("x-real-ip", "10.0.0.1"),
                    ("x-forwarded-user", "root"),
                    ("remote_user", "root"),
                ],
                None,
                &[
                    ("x-original-url", None),
                    ("x-rewrite-url", None),
                    ("x-forwarded-uri", None),
                    ("x_http_method_override", None),
                    ("x-real-ip", None),
                    ("x-forwarded-user", None),
                    ("remote_user", None),
                ],
            ),
            (
                &[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")],
                None,
                &[("cookie", Some("a=1; b=2; c=3"))],
            ),
            (&[("cookie", "a=1")], None, &[("cookie", Some("a=1"))]),
            (
                &[("x-forwarded-proto", "https"), ("x-forwarded-host", "evil")],
                None,
                &[
                    ("x-forwarded-proto", Some("http")),
                    ("x-forwarded-host", Some("api.example")),
                ],
            ),
        ];
        let (names, forwarded) = (ids(), fwd());
        let request_id = HeaderValue::from_static("gw-1");
        for (i, (sent, identity, seen)) in cases.iter().enumerate() {
            let mut h = map(sent);
            h.append(&X_REQUEST_ID, HeaderValue::from_static("client-chosen"));
            strip_request_headers(&mut h, &names);
            let fields = GatewayFields {
                identity_headers: &names,
                forwarded: &forwarded,
                identity: *identity,
                request_id: &request_id,
            };
            // The lean client writes the gateway's fields into the head; the pooled one takes
            // them in the map: the upstream must see the same fields either way.
            let mut head = bytes::BytesMut::new();
            let method = http::Method::GET;
            crate::proxy::h1::codec::encode_head(&mut head, &method, "/", &h, fields.iter(), None);
            fields.insert_into(&mut h);
            let mut written: Vec<String> = std::str::from_utf8(&head)
                .unwrap()
                .split("\r\n")
                .skip(1)
                .filter(|line| !line.is_empty() && !line.starts_with("transfer-encoding"))
                .map(str::to_owned)
                .collect();
            let mut in_map: Vec<String> = h
                .iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
                .collect();
            written.sort();
            in_map.sort();
            assert_eq!(written, in_map, "case {i}: written and mapped differ");
            assert_eq!(
                h.get_all(&X_REQUEST_ID).iter().collect::<Vec<_>>(),
                [&request_id],
                "case {i}: the gateway's request id alone"
            );
            for (name, want) in *seen {
                let got = h.get(*name).map(|v| v.to_str().unwrap());
                assert_eq!(got, *want, "case {i}: header {name}");
            }
        }
    }

    #[test]
    fn a_length_beside_transfer_encoding_is_stale() {
        assert_eq!(
            HOP_BY_HOP[TRANSFER_ENCODING_INDEX],
            header::TRANSFER_ENCODING
        );
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (
                &[("content-length", "5"), ("transfer-encoding", "chunked")],
                None,
            ),
            (&[("content-length", "5")], Some("5")),
            (
                &[("content-length", "5"), ("connection", "keep-alive")],
                Some("5"),
            ),
        ];
        for (sent, length) in cases {
            let mut h = map(sent);
            strip_hop_by_hop(&mut h);
            assert_eq!(
                h.get("content-length").map(|v| v.to_str().unwrap()),
                *length,
                "{sent:?}"
            );
            assert!(h.get("transfer-encoding").is_none());
        }
    }

    #[test]
    fn the_fields_connection_lists_go() {
        // (sent, fields left). A name longer than http's 64-byte scratch buffer is compared
        // without lowercasing first: it must still match whatever its case.
        let long = "X-LONG".to_string() + &"Long".repeat(16);
        let long_lower = long.to_ascii_lowercase();
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a [&'a str]);
        let cases: Vec<Case> = vec![
            (
                vec![("connection", "close"), ("close", "1"), ("a", "1")],
                &["a"],
            ),
            (
                vec![("connection", "X-One"), ("x-one", "1"), ("a", "1")],
                &["a"],
            ),
            (
                vec![
                    ("connection", "x-one"),
                    ("connection", " , X-Two ,,keep-alive"),
                    ("x-one", "1"),
                    ("x-two", "2"),
                    ("a", "1"),
                ],
                &["a"],
            ),
            (
                vec![
                    ("connection", long.as_str()),
                    (long_lower.as_str(), "1"),
                    ("a", "1"),
                ],
                &["a"],
            ),
            (
                vec![
                    ("connection", "bad name, x-one"),
                    ("x-one", "1"),
                    ("a", "1"),
                ],
                &["a"],
            ),
            (vec![("connection", "Keep-Alive"), ("a", "1")], &["a"]),
            (vec![("connection", "x-absent"), ("a", "1")], &["a"]),
        ];
        for (i, (sent, left)) in cases.iter().enumerate() {
            let mut h = map(sent);
            strip_hop_by_hop(&mut h);
            let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
            names.sort_unstable();
            assert_eq!(names, *left, "case {i}: {sent:?}");
        }
    }

    #[test]
    fn hop_by_hop_names_are_found_where_the_list_has_them() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for other in [
            "content-length",
            "host",
            "x-connection",
            "trailers",
            "upgrade-insecure-requests",
        ] {
            assert_eq!(
                hop_by_hop_index(&HeaderName::from_static(other)),
                None,
                "{other}"
            );
        }
    }

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
        for name in ["accept", "content-type", "x-request-id", "x-forwarded"] {
            assert_eq!(
                spoofs_identity(&HeaderName::from_static(name), &id),
                name == "x-forwarded",
                "{name}"
            );
        }
    }

    #[test]
    fn vary_on_authorization_unless_private() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[], &["Authorization"]),
            (&[("vary", "Accept")], &["Accept", "Authorization"]),
            (&[("vary", "authorization")], &["authorization"]),
            (&[("vary", "*")], &["*"]),
            (&[("cache-control", "private, max-age=60")], &[]),
            (&[("cache-control", "No-Store")], &[]),
            (
                &[("cache-control", "public, max-age=60")],
                &["Authorization"],
            ),
        ];
        for (given, want) in cases {
            let mut h = map(given);
            vary_on_authorization(&mut h);
            let got: Vec<&str> = h
                .get_all("vary")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(got, *want, "{given:?}");
        }
    }
}
