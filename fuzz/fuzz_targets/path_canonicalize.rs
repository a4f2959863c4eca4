//! Path canonicalization never panics, and what it accepts is canonical: absolute, no empty,
//! `.` or `..` segments, no control characters, and a fixed point of canonicalization. Under
//! the strict rules the output keeps its meaning for a server that decodes it twice: no
//! dot-segments, backslashes or control characters appear, and no overlong UTF-8 lead bytes
//! (`%C0`/`%C1`) are forwarded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::routes::{PathOptions, canonicalize_with};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    for options in [PathOptions::STRICT, PathOptions::LENIENT] {
        if let Ok(out) = canonicalize_with(path, options) {
            assert!(out.starts_with('/'), "{path:?} -> {out:?}");
            assert!(!out.contains("//"), "{path:?} -> {out:?}");
            for segment in out.split('/') {
                assert!(segment != "." && segment != "..", "{path:?} -> {out:?}");
            }
            assert!(
                !out.bytes().any(|b| b < 0x20 || b == 0x7f),
                "{path:?} -> {out:?}"
            );
            let again = canonicalize_with(&out, options).expect("canonical output is accepted");
            assert_eq!(again, out, "not idempotent for {path:?}");
            if options == PathOptions::STRICT {
                // What a server that decodes twice reads.
                let once = decode_once(&decode_once(&out));
                assert!(!once.contains("/../") && !once.ends_with("/.."), "{path:?} -> {out:?}");
                assert!(!once.contains("/./") && !once.ends_with("/."), "{path:?} -> {out:?}");
                assert!(
                    !once.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\'),
                    "{path:?} -> {out:?}"
                );
                let upper = out.to_ascii_uppercase();
                assert!(!upper.contains("%C0") && !upper.contains("%C1"), "{path:?} -> {out:?}");
            }
        }
    }
});

/// What an upstream that decodes escapes once more would read (invalid escapes kept).
fn decode_once(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
