//! Path canonicalization never panics, and what it accepts is canonical: absolute, no empty,
//! `.` or `..` segments, no control characters, and a fixed point of canonicalization.
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
        }
    }
});
