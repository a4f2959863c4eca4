//! The token endpoint's input parsers never panic: the form body, HTTP Basic credentials and
//! the scope parameter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::oauth::form::{Form, parse_basic};
use portcullis::oauth::scope;

fuzz_target!(|data: &[u8]| {
    if let Ok(form) = Form::parse(data) {
        for name in [
            "grant_type",
            "username",
            "password",
            "scope",
            "refresh_token",
            "client_id",
        ] {
            let _ = form.get(name);
        }
        if let Some(s) = form.get("scope") {
            if let Ok(scopes) = scope::parse(s) {
                assert!(!scopes.is_empty());
                assert!(scopes.iter().all(|s| !s.is_empty() && !s.contains(' ')));
            }
        }
    }
    if let Ok((id, _secret)) = parse_basic(data) {
        assert!(!id.is_empty());
    }
});
