//! Header rewriting for proxied requests and responses. Pure: table-tested without sockets.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::config::IdentityHeaders;
use crate::principal::IdentityValues;
use crate::request_id::X_REQUEST_ID;

mod hop_by_hop;
mod spoofable;

pub use self::hop_by_hop::strip_hop_by_hop;
use self::spoofable::spoofs_identity;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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

/// Where the request came from, for `X-Forwarded-*`. Borrowed where it can be: the peer's
/// value is the connection's, and a clone of it (a shared `Bytes`) costs a reference count
/// taken and released on every request.
#[derive(Debug, Clone)]
pub struct Forwarded<'a> {
    /// `X-Forwarded-For`: the peer's address (see [`forwarded_for`]).
    pub peer: &'a HeaderValue,
    /// `X-Forwarded-Proto`: [`Forwarded::proto`].
    pub proto: &'static HeaderValue,
    /// The `Host` the client asked for (or the HTTP/2 `:authority`).
    pub host: Option<HeaderValue>,
}

static PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");
static PROTO_HTTPS: HeaderValue = HeaderValue::from_static("https");

impl Forwarded<'_> {
    /// `X-Forwarded-Proto` for a connection with or without TLS.
    pub fn proto(tls: bool) -> &'static HeaderValue {
        if tls { &PROTO_HTTPS } else { &PROTO_HTTP }
    }
}

/// The `X-Forwarded-For` value for a peer: its address, alone (the gateway is the edge).
/// Computed once per client connection.
pub fn forwarded_for(peer: IpAddr) -> HeaderValue {
    let value = match peer {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let len = dotted_decimal(v4, &mut text);
            HeaderValue::from_bytes(&text[..len])
        }
        // IPv6 text has its own rules (the longest run of zero groups shortened, an embedded
        // IPv4 address): std's `Display` keeps them.
        IpAddr::V6(v6) => HeaderValue::from_str(&v6.to_string()),
    };
    // An IP address in text is always a valid header value.
    value.unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Writes `addr` in dotted decimal into `out` and returns its length. By hand because this
/// runs for every new connection, and `Display` through `core::fmt` cost about 1,600
/// instructions there (4% of a request on a connection of its own, under callgrind).
fn dotted_decimal(addr: std::net::Ipv4Addr, out: &mut [u8; 15]) -> usize {
    let mut len = 0;
    for (i, octet) in addr.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            out[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            out[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        out[len] = b'0' + octet % 10;
        len += 1;
    }
    len
}

/// Adds `Vary: Authorization` to a response to an authenticated request, so that no shared
/// cache serves it to someone else, unless the upstream already made it private or uncacheable.
pub fn vary_on_authorization(headers: &mut HeaderMap) {
    // One pass over the response's few fields (comparing standard names is comparing two
    // small numbers) instead of a hashed lookup for each of the two names.
    fn members(v: &HeaderValue) -> impl Iterator<Item = &str> {
        v.to_str().unwrap_or_default().split(',').map(str::trim)
    }
    for (name, value) in headers.iter() {
        let covered = if name == header::CACHE_CONTROL {
            members(value)
                .any(|d| d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store"))
        } else if name == header::VARY {
            members(value).any(|f| f == "*" || f.eq_ignore_ascii_case("authorization"))
        } else {
            false
        };
        if covered {
            return;
        }
    }
    headers.append(header::VARY, HeaderValue::from_static("Authorization"));
}

/// Client fields the upstream never gets that are left in the request's map rather than
/// taken out: `Host` (the upstream's own is sent) and `Authorization` (the credential stops
/// at the gateway). Nearly every request carries both, and taking a field out of a map costs
/// a hash and a shift of its entries. So both ways of sending leave them out: the lean client
/// as it writes the head (`h1::Outgoing::new`'s `left_out`), the pooled client from the map
/// ([`GatewayFields::insert_into`]).
pub static LEFT_OUT: [HeaderName; 2] = [header::HOST, header::AUTHORIZATION];

/// Clears a request's headers for its upstream, in this order: hop-by-hop ones (including
/// the `Connection`-listed ones) removed; `Cookie` fields joined into one; `X-Request-Id`,
/// every client-sent variant of the identity headers and every other spoofable header
/// removed. `Host` and `Authorization` stay, and are never sent ([`LEFT_OUT`]). What the
/// gateway sets in their place is [`GatewayFields`].
pub fn strip_request_headers(headers: &mut HeaderMap, identity_headers: &IdentityHeaders) {
    strip_hop_by_hop(headers);
    // One pass over the names finds both the spoofed ones and whether a `Cookie` is there:
    // most API requests carry none, and looking it up cost a hash of every request.
    let mut cookie = false;
    let mut spoofed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if name == header::COOKIE {
            cookie = true;
        } else if *name == X_REQUEST_ID || spoofs_identity(name, identity_headers) {
            spoofed.push(name.clone());
        }
    }
    if cookie {
        join_cookies(headers);
    }
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
    pub forwarded: &'a Forwarded<'a>,
    pub identity: Option<&'a IdentityValues>,
    pub request_id: &'a HeaderValue,
}

impl<'a> GatewayFields<'a> {
    /// Each field, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + use<'a> {
        let forwarded: &'a Forwarded<'a> = self.forwarded;
        let names: &'a IdentityHeaders = self.identity_headers;
        let identity = self.identity;
        [
            Some((&X_FORWARDED_FOR, forwarded.peer)),
            Some((&X_FORWARDED_PROTO, forwarded.proto)),
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

    /// Sets each field in `headers`, once the fields never sent ([`LEFT_OUT`]) are out of
    /// it: a map the pooled client sends whole. `Host` is the caller's to set after.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for name in &LEFT_OUT {
            headers.remove(name);
        }
        for (name, value) in self.iter() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn ids() -> IdentityHeaders {
        IdentityHeaders {
            user: HeaderName::from_static("x-auth-user"),
            client: HeaderName::from_static("x-auth-client"),
            scopes: HeaderName::from_static("x-auth-scopes"),
        }
    }

    pub(super) fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn fwd(peer: &HeaderValue) -> Forwarded<'_> {
        Forwarded {
            peer,
            proto: Forwarded::proto(false),
            host: Some(HeaderValue::from_static("api.example")),
        }
    }

    /// The peer's address as `X-Forwarded-For` carries it: the same text as std's `Display`,
    /// every octet value in every position of an IPv4 address.
    #[test]
    fn forwarded_for_is_the_address_as_text() {
        let cases: &[(&str, &str)] = &[
            ("0.0.0.0", "0.0.0.0"),
            ("255.255.255.255", "255.255.255.255"),
            ("10.0.0.1", "10.0.0.1"),
            ("192.168.100.9", "192.168.100.9"),
            ("::1", "::1"),
            ("2001:db8::8:800:200c:417a", "2001:db8::8:800:200c:417a"),
            ("::ffff:10.1.2.3", "::ffff:10.1.2.3"),
        ];
        for (peer, sent) in cases {
            let value = forwarded_for(peer.parse().unwrap());
            assert_eq!(value.to_str().unwrap(), *sent, "{peer}");
        }
        for octet in 0..=255u8 {
            for position in 0..4 {
                let mut octets = [1, 22, 133, 4];
                octets[position] = octet;
                let addr = std::net::Ipv4Addr::from(octets);
                let value = forwarded_for(addr.into());
                assert_eq!(value.to_str().unwrap(), addr.to_string());
            }
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
                &[
                    ("x-real-ip", "10.0.0.1"),
                    ("cookie", "a=1"),
                    ("x-auth-user", "root"),
                    ("cookie", "b=2"),
                ],
                None,
                &[
                    ("cookie", Some("a=1; b=2")),
                    ("x-real-ip", None),
                    ("x-auth-user", None),
                ],
            ),
            (
                &[
                    ("connection", "cookie"),
                    ("cookie", "a=1"),
                    ("cookie", "b=2"),
                ],
                None,
                &[("cookie", None)],
            ),
            (
                &[("x-forwarded-proto", "https"), ("x-forwarded-host", "evil")],
                None,
                &[
                    ("x-forwarded-proto", Some("http")),
                    ("x-forwarded-host", Some("api.example")),
                ],
            ),
        ];
        let peer = forwarded_for("127.0.0.9".parse().unwrap());
        let (names, forwarded) = (ids(), fwd(&peer));
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
            crate::proxy::h1::codec::encode_head(
                &mut head,
                &method,
                "/",
                &h,
                &LEFT_OUT,
                fields.iter(),
                None,
            );
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
            (
                &[
                    ("cache-control", "max-age=60"),
                    ("cache-control", " private"),
                ],
                &[],
            ),
            (
                &[("vary", "Accept"), ("vary", "Origin, Authorization")],
                &["Accept", "Origin, Authorization"],
            ),
            (
                &[("vary", "Accept-Authorization")],
                &["Accept-Authorization", "Authorization"],
            ),
            (&[("x-cache-control", "private")], &["Authorization"]),
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
