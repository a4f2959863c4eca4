//! HTTP/1.1 toward an upstream, without I/O: the request head written, the response head
//! parsed (by `httparse`, the parser hyper itself uses) and its body's framing decided
//! (RFC 9112 §6.3), chunked bodies decoded. Everything here is a function of bytes, so the
//! table tests below and the `upstream_response` fuzz target drive it directly. The request
//! head is written in `request.rs`, chunked bodies are decoded in `chunked.rs`, and the
//! response head is read here.
//!
//! The rule throughout: whatever leaves the framing in doubt either fails the exchange (502)
//! or, where the response can still be read safely, marks the connection not reusable.

mod chunked;
mod request;

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, DATE, HeaderName, HeaderValue, SERVER,
    TRANSFER_ENCODING,
};
use http::{HeaderMap, Method, StatusCode, Version};

pub use self::chunked::{ChunkedDecoder, Decoded};
pub use self::request::{HEAD_ROOM, encode_head};

/// Most header fields in a response head or trailer section (hyper's client default).
pub const MAX_HEADERS: usize = 100;
/// Largest response head, interim responses included (hyper's client default buffer limit).
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// Why a response cannot be read; the exchange fails and the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("response header field not representable")]
    BadHeaderValue,
    #[error("invalid or conflicting Content-Length")]
    BadContentLength,
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncodingInHttp10,
    #[error("malformed chunk-size line")]
    BadChunkSize,
    #[error("chunk data not followed by CRLF")]
    BadChunkEnd,
    #[error("malformed or oversized trailer section")]
    BadTrailers,
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, 204, 304 (and the refused 101).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A final (non-1xx, or 101) response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request once this body has been read whole.
    pub reusable: bool,
}

/// Fields the header map of a response is made to hold without growing. hyper's server
/// writes a response's fields, then keeps its emptied map for the fields of the connection's
/// next request, to which the gateway adds its own (`X-Forwarded-*`, `X-Auth-*`,
/// `X-Request-Id`, `Host`): a map sized for the response alone grows, and rehashes, on every
/// request (about 940 instructions, benches/load/callgrind.sh). 24 fields fill 32 slots (a
/// map keeps a quarter of its power-of-two slots free): a client's 16 and the gateway's 8.
const RECYCLED_MAP_FIELDS: usize = 24;

/// Parses the response head at the start of `buf`, skipping interim (1xx) responses other
/// than 101, and removes what it consumed. `Ok(None)`: more bytes are needed.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, FramingError> {
    loop {
        // Uninitialised slots: httparse writes what it parses, and 100 empty headers would
        // be 3.2 KB to fill on every response.
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut fields,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(FramingError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(FramingError::Head(e)),
        };
        if len > MAX_HEAD_BYTES {
            return Err(FramingError::HeadTooLarge);
        }
        let code = response.code.unwrap_or_default();
        if (100..200).contains(&code) && code != 101 {
            buf.advance(len);
            continue;
        }
        let status =
            StatusCode::from_u16(code).map_err(|_| FramingError::Head(httparse::Error::Status))?;
        let version = if response.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // The head is copied out (a few hundred bytes), so that the read buffer stays the
        // connection's alone and is reused as it is; header values are slices of the copy,
        // made in the thread's shared buffer so that neither costs an allocation.
        let head = crate::thread_bytes::copy(&buf[..len]);
        let base = buf.as_ptr() as usize;
        let mut headers = HeaderMap::with_capacity(response.headers.len().max(RECYCLED_MAP_FIELDS));
        let mut facts = Facts::default();
        for field in response.headers.iter() {
            let name = field_name(field.name.as_bytes()).ok_or(FramingError::BadHeaderValue)?;
            // A `Connection` field that lists only `keep-alive` (a keep-alive upstream's) is
            // this hop's alone and names no other field: read for the framing and left out of
            // the map, rather than appended here to be found and removed by
            // `strip_hop_by_hop` (about 600 instructions per response). One that names
            // other fields stays, so that they go too.
            if facts.note(&name, field.value) == Field::ThisHopOnly {
                continue;
            }
            let start = field.value.as_ptr() as usize - base;
            let value =
                HeaderValue::from_maybe_shared(head.slice(start..start + field.value.len()))
                    .map_err(|_| FramingError::BadHeaderValue)?;
            headers.append(name, value);
        }
        buf.advance(len);
        let (framing, reusable) = framing(method, status, version, &facts)?;
        return Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            reusable,
        }));
    }
}

/// The name of a response field. The fields nearly every response carries are matched whole
/// in the two spellings upstreams send them in, to the constant of the same name; any other
/// name goes through `HeaderName::from_bytes`, which copies it lower-cased into a buffer and
/// looks that up among every standard name (about 120 instructions a field, callgrind).
fn field_name(name: &[u8]) -> Option<HeaderName> {
    Some(match name {
        b"Content-Length" | b"content-length" => CONTENT_LENGTH,
        b"Content-Type" | b"content-type" => CONTENT_TYPE,
        b"Date" | b"date" => DATE,
        b"Server" | b"server" => SERVER,
        b"Connection" | b"connection" => CONNECTION,
        b"Transfer-Encoding" | b"transfer-encoding" => TRANSFER_ENCODING,
        _ => return HeaderName::from_bytes(name).ok(),
    })
}

/// What the framing headers of a response say, gathered in the one pass that builds its
/// header map.
#[derive(Default)]
struct Facts {
    close: bool,
    keep_alive: bool,
    transfer_encoding: bool,
    /// Whether the last member of the `Transfer-Encoding` fields is `chunked`.
    chunked_last: bool,
    /// `Content-Length` fields: none, one agreed length, or something else.
    length: Length,
}

#[derive(Default, Clone, Copy)]
enum Length {
    #[default]
    Absent,
    Agreed(u64),
    Invalid,
}

/// Whether a response field goes into the response's header map.
#[derive(Debug, PartialEq, Eq)]
enum Field {
    Kept,
    /// Only this connection's framing: nothing beyond it reads the field.
    ThisHopOnly,
}

impl Facts {
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> Field {
        if name == CONNECTION {
            // `keep-alive` names a field that is hop-by-hop in any case; `close` could name a
            // field of its own (RFC 9110 reserves the name, which a peer may still send), which
            // must go too: the field stays for `strip_hop_by_hop`.
            let mut keep_alive_only = true;
            for t in members(value) {
                let keep_alive = t.eq_ignore_ascii_case(b"keep-alive");
                self.close |= t.eq_ignore_ascii_case(b"close");
                self.keep_alive |= keep_alive;
                keep_alive_only &= keep_alive;
            }
            if keep_alive_only {
                return Field::ThisHopOnly;
            }
        } else if name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
            if let Some(last) = members(value).last() {
                self.chunked_last = last.eq_ignore_ascii_case(b"chunked");
            }
        } else if name == CONTENT_LENGTH {
            for member in value.split(|&b| b == b',') {
                self.length = match (self.length, decimal(member.trim_ascii())) {
                    (_, None) | (Length::Invalid, _) => Length::Invalid,
                    (Length::Absent, Some(n)) => Length::Agreed(n),
                    (Length::Agreed(l), Some(n)) if l == n => Length::Agreed(n),
                    (Length::Agreed(_), Some(_)) => Length::Invalid,
                };
            }
        }
        Field::Kept
    }
}

/// 1 to 19 ASCII digits (no sign, no space), as a number.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// The non-empty comma-separated members of a field value.
fn members(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The body's framing and whether the connection may be reused after it (RFC 9112 §6.3, §9.3).
fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    facts: &Facts,
) -> Result<(Framing, bool), FramingError> {
    let persistent = if version == Version::HTTP_11 {
        !facts.close
    } else {
        facts.keep_alive
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok((Framing::Empty, false));
    }
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, persistent));
    }
    if facts.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(FramingError::TransferEncodingInHttp10);
        }
        if !facts.chunked_last {
            return Ok((Framing::UntilClose, false));
        }
        // A stale Content-Length beside it: read as chunked, then close (framing in doubt).
        let stale_length = !matches!(facts.length, Length::Absent);
        return Ok((Framing::Chunked, persistent && !stale_length));
    }
    match facts.length {
        Length::Agreed(n) => Ok((Framing::Length(n), persistent)),
        Length::Invalid => Err(FramingError::BadContentLength),
        Length::Absent => Ok((Framing::UntilClose, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: Method) -> Result<Option<Head>, FramingError> {
        parse_head(&mut BytesMut::from(raw), &method)
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        use Framing::*;
        type Case = (
            &'static str,
            Method,
            Result<(u16, Framing, bool), FramingError>,
        );
        let cases: &[Case] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::GET,
                Ok((200, Length(5), true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n",
                Method::GET,
                Ok((200, Length(5), true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Method::GET,
                Err(FramingError::BadContentLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                Method::GET,
                Err(FramingError::BadContentLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                Method::GET,
                Err(FramingError::BadContentLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
                Method::GET,
                Err(FramingError::BadContentLength),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::GET,
                Ok((200, Chunked, true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                Method::GET,
                Ok((200, Chunked, true)),
            ),
            // Both: chunked wins, and the connection is not reused.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::GET,
                Ok((200, Chunked, false)),
            ),
            // Not chunked last: until close.
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Method::GET,
                Ok((200, UntilClose, false)),
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::GET,
                Err(FramingError::TransferEncodingInHttp10),
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                Method::GET,
                Ok((200, UntilClose, false)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Close\r\n\r\n",
                Method::GET,
                Ok((200, Length(5), false)),
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::GET,
                Ok((200, Length(5), false)),
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
                Method::GET,
                Ok((200, Length(5), true)),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::HEAD,
                Ok((200, Empty, true)),
            ),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                Method::GET,
                Ok((204, Empty, true)),
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::GET,
                Ok((304, Empty, true)),
            ),
            // Interim responses are skipped; 101 is final (and refused by the caller).
            (
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
                Method::POST,
                Ok((201, Length(0), true)),
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
                Method::GET,
                Ok((101, Empty, false)),
            ),
            // Malformed heads.
            (
                "HTTP/1.1 200 OK\r\nFoo : bar\r\n\r\n",
                Method::GET,
                Err(FramingError::Head(httparse::Error::HeaderName)),
            ),
            (
                "HTTP/1.1 200 OK\r\nFoo: bar\r\n baz\r\n\r\n",
                Method::GET,
                Err(FramingError::Head(httparse::Error::HeaderName)),
            ),
            (
                "HTTP/2 200 OK\r\n\r\n",
                Method::GET,
                Err(FramingError::Head(httparse::Error::Version)),
            ),
        ];
        for (raw, method, want) in cases {
            let got = head(raw, method.clone())
                .map(|h| h.expect(raw))
                .map(|h| (h.status.as_u16(), h.framing, h.reusable));
            assert_eq!(&got, want, "{raw:?}");
        }
    }

    #[test]
    fn heads_are_bounded_and_may_arrive_in_pieces() {
        let full = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok";
        for cut in 0..full.len() - 2 {
            assert!(head(&full[..cut], Method::GET).unwrap().is_none(), "{cut}");
        }
        let mut buf = BytesMut::from(full);
        let h = parse_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(&buf[..], b"ok", "the body stays in the buffer");

        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert_eq!(
            head(&raw, Method::GET).unwrap_err(),
            FramingError::Head(httparse::Error::TooManyHeaders)
        );
        let endless = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            head(&endless, Method::GET).unwrap_err(),
            FramingError::HeadTooLarge
        );
    }

    /// A `Connection` field that only keeps this hop alive stays out of the response's map;
    /// one that names anything else stays in it, for `strip_hop_by_hop` to remove what it
    /// names (a field called `close` included).
    #[test]
    fn only_a_keep_alive_connection_field_is_left_out() {
        let cases: &[(&str, Option<&str>, bool)] = &[
            ("keep-alive", None, true),
            ("Keep-Alive", None, true),
            (" keep-alive , keep-alive ", None, true),
            ("close", Some("close"), false),
            ("keep-alive, close", Some("keep-alive, close"), false),
            ("keep-alive, x-secret", Some("keep-alive, x-secret"), true),
            ("upgrade", Some("upgrade"), true),
        ];
        for (value, kept, reusable) in cases {
            let raw = format!(
                "HTTP/1.1 200 OK\r\nConnection: {value}\r\nX-Secret: s\r\nContent-Length: 0\r\n\r\n"
            );
            let h = head(&raw, Method::GET).unwrap().unwrap();
            let got = h.headers.get(CONNECTION).map(|v| v.to_str().unwrap());
            assert_eq!(got, *kept, "{value:?}");
            assert_eq!(h.reusable, *reusable, "{value:?}");
            assert_eq!(h.headers["x-secret"], "s");
            assert_eq!(
                h.headers.len(),
                2 + usize::from(kept.is_some()),
                "{value:?}"
            );
        }
    }

    /// A field's name is the one `HeaderName::from_bytes` makes of it, whether matched whole
    /// or not: every spelling in case of the common names, and others.
    #[test]
    fn field_names_are_read_as_http_reads_them() {
        let names = [
            "Content-Length",
            "content-length",
            "CONTENT-LENGTH",
            "Content-Type",
            "content-type",
            "Date",
            "date",
            "DATE",
            "Server",
            "server",
            "Connection",
            "connection",
            "cOnNeCtIoN",
            "Transfer-Encoding",
            "transfer-encoding",
            "Cache-Control",
            "X-Custom",
            "x-a",
            "Dates",
            "Serve",
        ];
        for name in names {
            let want = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(field_name(name.as_bytes()), Some(want), "{name}");
        }
        for bad in ["", "a b", "x:y", "\u{e9}t\u{e9}"] {
            assert_eq!(field_name(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
