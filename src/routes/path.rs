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
    #[error("the path contains a double-encoded '.', '/', '\\', '%' or control character")]
    DoubleEncoded,
    #[error("the path contains an overlong UTF-8 encoding")]
    OverlongUtf8,
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

/// Forms a route may opt into for a legacy API that needs them; all are refused by default
/// because servers disagree about their meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathOptions {
    /// Keep `%2F` and `%5C` (never decoded) instead of refusing them.
    pub allow_encoded_slashes: bool,
    /// Treat `;` as an ordinary character instead of refusing it.
    pub allow_semicolons: bool,
    /// Keep `%25` followed by the escape of `.`, `/`, `\`, `%` or a control character
    /// (`%252e`) instead of refusing it. An upstream that decodes twice reads such a path
    /// differently from the gateway (`/public/%252e%252e/admin` becomes `/admin`).
    pub allow_double_encoding: bool,
}

impl PathOptions {
    pub const STRICT: PathOptions = PathOptions {
        allow_encoded_slashes: false,
        allow_semicolons: false,
        allow_double_encoding: false,
    };
    pub const LENIENT: PathOptions = PathOptions {
        allow_encoded_slashes: true,
        allow_semicolons: true,
        allow_double_encoding: true,
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

/// The byte a `%XX` escape at `bytes[i..]` encodes.
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    if bytes.get(i) != Some(&b'%') {
        return None;
    }
    let hi = bytes.get(i + 1).copied().and_then(hex)?;
    let lo = bytes.get(i + 2).copied().and_then(hex)?;
    Some(hi << 4 | lo)
}

/// True for the bytes whose escape, escaped once more, changes a path's meaning for a server
/// that decodes twice: `.` and the separators (dot-segments, new segments), `%` (a third
/// round), control characters (header injection, truncation) and the overlong UTF-8 lead
/// bytes (a second spelling of `.` and `/`).
fn dangerous_when_decoded(b: u8) -> bool {
    matches!(
        b,
        b'.' | b'/' | b'\\' | b'%' | 0..=0x1f | 0x7f | 0xC0 | 0xC1
    )
}

/// True when a decoded segment holds `%25` followed by two hex digits that escape a
/// [`dangerous_when_decoded`] byte: `%252e`, and also `%25%32%65`, whose escaped digits were
/// decoded on the way (so the check runs on the output, not the input).
fn double_encoded(segment: &str) -> bool {
    let b = segment.as_bytes();
    b.windows(5).any(|w| {
        w[..3] == *b"%25"
            && matches!((hex(w[3]), hex(w[4])), (Some(hi), Some(lo)) if dangerous_when_decoded(hi << 4 | lo))
    })
}

/// True when the escape `lead` followed by the escape `next` starts an overlong UTF-8
/// encoding (RFC 3629 §3): `%C0%AE` is a second spelling of `.` that some decoders accept.
fn overlong(lead: u8, next: Option<u8>) -> bool {
    match lead {
        0xC0 | 0xC1 => true,
        0xE0 => next.is_some_and(|n| (0x80..=0x9F).contains(&n)),
        0xF0 => next.is_some_and(|n| (0x80..=0x8F).contains(&n)),
        _ => false,
    }
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
        let Some(decoded) = escape_at(bytes, i) else {
            return Err(PathError::BadPercentEncoding);
        };
        if overlong(decoded, escape_at(bytes, i + 3)) {
            return Err(PathError::OverlongUtf8);
        }
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
    if !options.allow_double_encoding && double_encoded(&out) {
        return Err(PathError::DoubleEncoded);
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
            // A literal `%` followed by harmless text, and real multi-byte UTF-8, stay.
            ("/a/100%25", "/a/100%25"),
            ("/a/%2541", "/a/%2541"),
            ("/a/%25zz", "/a/%25zz"),
            ("/a/%e2%82%ac", "/a/%E2%82%AC"),
            ("/a/%e0%a4%85", "/a/%E0%A4%85"),
            ("/a/%f0%9f%98%80", "/a/%F0%9F%98%80"),
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
            ("/files/%252e%252e/x", Ok("/files/%252e%252e/x")),
            ("/files/%c0%ae", Err(PathError::OverlongUtf8)),
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
            ..PathOptions::STRICT
        };
        assert_eq!(
            canonicalize_with("/a/%252e", slashes_only),
            Err(PathError::DoubleEncoded)
        );
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
            ("/public/%252e%252e/admin", PathError::DoubleEncoded),
            ("/a/%252E", PathError::DoubleEncoded),
            ("/a/%252f", PathError::DoubleEncoded),
            ("/a/%255C", PathError::DoubleEncoded),
            ("/a/%2525", PathError::DoubleEncoded),
            ("/a/%2500", PathError::DoubleEncoded),
            ("/a/%250d%250a", PathError::DoubleEncoded),
            ("/a/%257F", PathError::DoubleEncoded),
            ("/a/%25%32%65", PathError::DoubleEncoded),
            ("/a/%25%32%45%25%32%45", PathError::DoubleEncoded),
            ("/a/%25c0%25ae", PathError::DoubleEncoded),
            ("/a/%c0%ae", PathError::OverlongUtf8),
            ("/a/%C1%9C", PathError::OverlongUtf8),
            ("/a/%e0%80%ae", PathError::OverlongUtf8),
            ("/a/%f0%80%80%ae", PathError::OverlongUtf8),
        ];
        for (input, want) in cases {
            assert_eq!(canonicalize(input), Err(want), "input {input:?}");
        }
    }
}
