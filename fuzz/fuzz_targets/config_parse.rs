//! Config parsing never panics: any input is a valid config or a list of located problems.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text, "fuzz.yaml".as_ref(), "/nonexistent".as_ref()) {
        assert!(!e.problems.is_empty());
        let _ = e.to_string();
    }
});
