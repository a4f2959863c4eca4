//! Request-path canonicalization: the one place a request target's path is interpreted.
//!
//! The canonical form is what routes are matched against *and* what the upstream receives, so
//! the gateway and the upstream can never disagree about which resource was asked for.
//! Forms whose meaning differs between servers are rejected rather than guessed at.

use std::borrow::Cow;

/// Why a request path was refused. Every variant is the client's fault (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target must be an absolute path")]
    NotOriginForm,
    #[error("the path contains a control character, a non-ASCII byte, a backslash or a raw '#'")]
    ForbiddenCharacter,
    #[error("the path contains a malformed percent-encoding")]
    BadPercentEncoding,
    #[error("the path contains an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("the path contains an encoded control character")]
    EncodedControl,
    #[error("the path contains a ';' parameter")]
    Parameter,
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Forms a route may opt into for a legacy API that needs them; both are refused by default
/// because servers disagree about their meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathOptions {
    /// Keep `%2F` and `%5C` (never decoded) instead of refusing them.
    pub allow_encoded_slashes: bool,
    /// Treat `;` as an ordinary character instead of refusing it.
    pub allow_semicolons: bool,
}

impl PathOptions {
    pub const STRICT: PathOptions = PathOptions {
        allow_encoded_slashes: false,
        allow_semicolons: false,
    };
    pub const LENIENT: PathOptions = PathOptions {
        allow_encoded_slashes: true,
        allow_semicolons: true,
    };
}

/// Canonicalizes an origin-form path (no query) with the strict defaults.
pub fn canonicalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    canonicalize_with(path, PathOptions::STRICT)
}

/// Canonicalizes an origin-form path (no query): RFC 3986 §6.2.2 normalization
/// (percent-encoded unreserved characters decoded, other escapes upper-cased, dot-segments
/// removed) plus duplicate slashes collapsed. Returns the input unchanged, without copying,
/// when it is already canonical.
pub fn canonicalize_with(path: &str, options: PathOptions) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let mut needs_rewrite = false;
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            // A request target is ASCII (RFC 3986); raw bytes above it are read differently
            // by different servers.
            0..=0x1f | 0x7f..=0xff | b'\\' | b'#' => return Err(PathError::ForbiddenCharacter),
            b';' if !options.allow_semicolons => return Err(PathError::Parameter),
            b'%' => needs_rewrite = true,
            b'/' if prev == b'/' => needs_rewrite = true,
            b'.' if prev == b'/' => {
                let next = bytes.get(i + 1).copied();
                let after = bytes.get(i + 2).copied();
                if matches!(next, None | Some(b'/'))
                    || (next == Some(b'.') && matches!(after, None | Some(b'/')))
                {
                    needs_rewrite = true;
                }
            }
            _ => {}
        }
        prev = b;
    }
    if !needs_rewrite {
        return Ok(Cow::Borrowed(path));
    }

    let mut segments: Vec<String> = Vec::new();
    let trailing_slash = path.len() > 1 && path.ends_with('/');
    for raw in path[1..].split('/') {
        let segment = decode_segment(raw, options)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || (trailing_slash || path.ends_with("/.") || path.ends_with("/..")) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Decodes the escapes of unreserved characters in one segment and upper-cases the rest.
fn decode_segment(raw: &str, options: PathOptions) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b as char);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadPercentEncoding);
        };
        let decoded = hi << 4 | lo;
        match decoded {
            b'/' | b'\\' if !options.allow_encoded_slashes => {
                return Err(PathError::EncodedSeparator);
            }
            0..=0x1f | 0x7f => return Err(PathError::EncodedControl),
            d if is_unreserved(d) => out.push(d as char),
            d => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(d >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(d & 0xf)]));
            }
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let cases = [
            ("/", "/"),
            ("/api/users", "/api/users"),
            ("/api/users/", "/api/users/"),
            ("//api///users", "/api/users"),
            ("/api/./users", "/api/users"),
            ("/api/x/../users", "/api/users"),
            ("/api/users/.", "/api/users/"),
            ("/api/users/x/..", "/api/users/"),
            ("/%61pi/%7Eme", "/api/~me"),
            ("/api/%2e%2e/admin", "/admin"),
            ("/api/a%3fb", "/api/a%3Fb"),
            ("/api/a%c3%a9", "/api/a%C3%A9"),
            ("/api/.hidden", "/api/.hidden"),
            ("/api/..x", "/api/..x"),
            ("//", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(canonicalize(input).as_deref(), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn opt_ins_keep_what_they_allow_and_nothing_else() {
        let both = PathOptions::LENIENT;
        let cases = [
            ("/files/a%2fb", Ok("/files/a%2Fb")),
            ("/files/a%5Cb/../c", Ok("/files/c")),
            ("/jsp;jsessionid=1/x", Ok("/jsp;jsessionid=1/x")),
            ("/files/%2e%2e/%2e%2e/x", Err(PathError::AboveRoot)),
            ("/files/%00", Err(PathError::EncodedControl)),
            ("/files/a\\b", Err(PathError::ForbiddenCharacter)),
        ];
        for (input, want) in cases {
            assert_eq!(
                canonicalize_with(input, both).as_deref().map_err(|e| *e),
                want,
                "{input}"
            );
        }
        let slashes_only = PathOptions {
            allow_encoded_slashes: true,
            allow_semicolons: false,
        };
        assert_eq!(
            canonicalize_with("/a;b", slashes_only),
            Err(PathError::Parameter)
        );
    }

    #[test]
    fn already_canonical_paths_are_borrowed() {
        for p in ["/", "/api/users/1", "/api/.well-known", "/a..b/c"] {
            assert!(matches!(canonicalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn ambiguous_forms_are_rejected() {
        let cases = [
            ("", PathError::NotOriginForm),
            ("*", PathError::NotOriginForm),
            ("api", PathError::NotOriginForm),
            ("/api/%2fadmin", PathError::EncodedSeparator),
            ("/api/%2Fadmin", PathError::EncodedSeparator),
            ("/api/%5cadmin", PathError::EncodedSeparator),
            ("/api/%00", PathError::EncodedControl),
            ("/api/a%0d%0aX-Injected:%201", PathError::EncodedControl),
            ("/api/%7f", PathError::EncodedControl),
            ("/api\\admin", PathError::ForbiddenCharacter),
            ("/api/a\tb", PathError::ForbiddenCharacter),
            ("/api/a#b", PathError::ForbiddenCharacter),
            ("/api/\u{5ff}", PathError::ForbiddenCharacter),
            ("/api/é", PathError::ForbiddenCharacter),
            ("/api;jsessionid=1/users", PathError::Parameter),
            ("/api/%zz", PathError::BadPercentEncoding),
            ("/api/%4", PathError::BadPercentEncoding),
            ("/..", PathError::AboveRoot),
            ("/api/../../etc", PathError::AboveRoot),
            ("/%2e%2e/x", PathError::AboveRoot),
        ];
        for (input, want) in cases {
            assert_eq!(canonicalize(input), Err(want), "input {input:?}");
        }
    }
}
