//! `X-Request-Id`: one id per request, in the access log, sent upstream and returned to the
//! client, so that one request can be followed through the gateway and the API behind it.
//! A well-formed id the client sent is kept (a caller's tracing keeps working); anything else
//! is replaced by a generated one.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::crypto::{ACCESS_TOKEN_PREFIX, CLIENT_SECRET_PREFIX, REFRESH_TOKEN_PREFIX};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id kept from a client.
const MAX_LEN: usize = 128;

/// Whether a client's id is kept: 1 to 128 of `A-Z a-z 0-9 - _ . : + = / @` (UUIDs, W3C trace
/// ids, most tracers' formats), and not one of Portcullis' own credentials (an id is logged;
/// a token must never be).
pub fn well_formed(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+=/@".contains(b))
        && ![
            ACCESS_TOKEN_PREFIX,
            REFRESH_TOKEN_PREFIX,
            CLIENT_SECRET_PREFIX,
        ]
        .iter()
        .any(|p| id.starts_with(p.as_bytes()))
}

/// The request's id: the client's when it sent exactly one well-formed `X-Request-Id`, else a
/// new one.
pub fn of(headers: &HeaderMap) -> HeaderValue {
    let mut sent = headers.get_all(&X_REQUEST_ID).iter();
    match (sent.next(), sent.next()) {
        (Some(id), None) if well_formed(id.as_bytes()) => id.clone(),
        _ => generate(),
    }
}

/// 32 hex digits: a random half drawn once per process (and written out once), then a
/// counter. Unique without a system call per request; an id needs to be distinct, not
/// secret.
fn generate() -> HeaderValue {
    static PROCESS: OnceLock<[u8; 16]> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // Without the OS generator, the time still tells processes apart.
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = (nanos as u64).to_le_bytes();
        }
        hex(u64::from_le_bytes(bytes))
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 32];
    id[..16].copy_from_slice(process);
    id[16..].copy_from_slice(&hex(n));
    // In the thread's shared buffer: the response's clone of the id is then a reference
    // count, not a promotion to an allocation of its own.
    HeaderValue::from_maybe_shared(crate::thread_bytes::copy(&id))
        .expect("hex digits are a valid header")
}

/// `word` as 16 lower-case hex digits, most significant first. By hand, a byte at a time:
/// `format!` costs ten times as many instructions, and all 32 digits a digit at a time (the
/// word shifted for each) made `of` cost 666 instructions of every request without an id
/// where it now costs 400 (benches/load/callgrind.sh, built without LTO).
fn hex(word: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (pair, byte) in out.chunks_exact_mut(2).zip(word.to_be_bytes()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_ids_are_kept() {
        let cases: &[(&str, bool)] = &[
            ("3f2b8c1e-6a4d-4e0f-9b7a-2c5d8e1f0a3b", true),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                true,
            ),
            ("req:42/a+b=c@edge", true),
            ("", false),
            ("has space", false),
            ("quote\"d", false),
            ("semi;colon", false),
            ("pcat_kXp0cW1Q2xN7", false),
            ("pcrt_kXp0cW1Q2xN7", false),
            ("pccs_kXp0cW1Q2xN7", false),
        ];
        for (id, kept) in cases {
            assert_eq!(well_formed(id.as_bytes()), *kept, "{id:?}");
        }
        assert!(well_formed("a".repeat(128).as_bytes()));
        assert!(!well_formed("a".repeat(129).as_bytes()));
    }

    #[test]
    fn hex_is_the_word_in_sixteen_digits() {
        let cases: &[(u64, &str)] = &[
            (0, "0000000000000000"),
            (1, "0000000000000001"),
            (0xf0, "00000000000000f0"),
            (0x0123_4567_89ab_cdef, "0123456789abcdef"),
            (0xfedc_ba98_7654_3210, "fedcba9876543210"),
            (u64::MAX, "ffffffffffffffff"),
        ];
        for (word, digits) in cases {
            assert_eq!(
                std::str::from_utf8(&hex(*word)).unwrap(),
                *digits,
                "{word:#x}"
            );
        }
    }

    #[test]
    fn one_good_id_is_kept_anything_else_replaced() {
        let mut h = HeaderMap::new();
        let first = of(&h);
        let second = of(&h);
        assert_ne!(first, second, "generated ids are distinct");
        assert_eq!(first.len(), 32);
        // The process half and the counter, as 16 lower-case hex digits each.
        for id in [&first, &second] {
            let id = id.to_str().unwrap();
            let process = u64::from_str_radix(&id[..16], 16).unwrap();
            let n = u64::from_str_radix(&id[16..], 16).unwrap();
            assert_eq!(id, format!("{process:016x}{n:016x}"));
        }
        assert_eq!(first.as_bytes()[..16], second.as_bytes()[..16]);
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(of(&h), "abc-123");
        h.append(&X_REQUEST_ID, HeaderValue::from_static("def-456"));
        assert_eq!(of(&h).len(), 32, "two ids: neither is trusted");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("a b"));
        assert_ne!(of(&h), "a b");
    }
}
