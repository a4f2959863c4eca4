//! Hop-by-hop fields (RFC 9110 §7.6.1): what one connection's framing and options were, which
//! the next hop must not see. Pure: table-tested without sockets.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

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

/// Removes the headers named in `Connection`, then the hop-by-hop set. Runs before the
/// gateway adds anything, so a client cannot use `Connection` to delete the gateway's headers.
/// A message that came with `Transfer-Encoding` was framed by it: a `Content-Length` beside it
/// is stale (RFC 9112 §6.3) and goes too, so that the next hop frames the body afresh.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (most messages carry one hop-by-hop header at most,
    // `Connection: keep-alive`) instead of a lookup per hop-by-hop name.
    let mut present = 0u16;
    for name in headers.keys() {
        let name = name.as_str();
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        } else if name == "close" {
            present |= CLOSE_FIELD;
        }
    }
    if present & !CLOSE_FIELD == 0 {
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
            // The common values whole, before any splitting: `close` names a field of its
            // own, which the scan above has seen or not.
            if value.as_bytes().eq_ignore_ascii_case(b"keep-alive") {
                continue;
            }
            if value.as_bytes().eq_ignore_ascii_case(b"close") {
                if present & CLOSE_FIELD != 0 {
                    headers.remove("close");
                }
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

/// The bit after [`HOP_BY_HOP`]'s: a field named `close` is present, which `Connection: close`
/// (every request of a client that opens a connection per request) names. Known from the scan,
/// it spares the lookup of that name in the map when no such field came, as nearly always.
const CLOSE_FIELD: u16 = 1 << HOP_BY_HOP.len();

/// The position of `name` in [`HOP_BY_HOP`]: one match on the name's text (by length, then
/// bytes) instead of nine comparisons for every header of every message.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
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

#[cfg(test)]
mod tests {
    use super::super::tests::map;
    use super::*;

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
            (vec![("connection", "Close"), ("a", "1")], &["a"]),
            (
                vec![("connection", "CLOSE"), ("Close", "1"), ("a", "1")],
                &["a"],
            ),
            (vec![("close", "1"), ("a", "1")], &["a", "close"]),
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
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i), "{name}");
        }
        for other in [
            "content-length",
            "host",
            "x-connection",
            "trailers",
            "upgrade-insecure-requests",
        ] {
            assert_eq!(hop_by_hop_index(other), None, "{other}");
        }
    }
}
