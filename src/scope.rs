//! Scopes (RFC 6749 §3.3): [`ScopeSet`], a set of scope tokens in the order first given,
//! shared by reference count, written space-separated. The one place that knows the
//! scope-token grammar and the one way scopes are joined. Pure; a leaf module.

use std::fmt;
use std::sync::Arc;

/// Why a `scope` text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("a scope is not a valid RFC 6749 scope token")]
    Malformed,
    #[error("no scope was given")]
    Empty,
}

/// Scope names, each once, in the order first given. Cloning shares one allocation.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(Arc<[Box<str>]>);

impl ScopeSet {
    /// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
    pub fn is_valid_token(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
    }

    /// Parses a space-delimited `scope` value (RFC 6749 §3.3): at least one valid token;
    /// repeats are dropped, the order kept.
    pub fn parse(text: &str) -> Result<ScopeSet, ScopeError> {
        let words: Vec<&str> = text.split(' ').filter(|s| !s.is_empty()).collect();
        if words.is_empty() {
            return Err(ScopeError::Empty);
        }
        if !words.iter().all(|w| ScopeSet::is_valid_token(w)) {
            return Err(ScopeError::Malformed);
        }
        Ok(words.into_iter().collect())
    }

    /// Reads a set this type wrote (its [`Display`](fmt::Display) form, kept in a store).
    pub fn from_stored(text: &str) -> ScopeSet {
        text.split(' ').filter(|s| !s.is_empty()).collect()
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| **s == *scope)
    }

    /// True when every scope of `other` is in this set.
    pub fn contains_all(&self, other: &ScopeSet) -> bool {
        other.iter().all(|s| self.contains(s))
    }

    /// The scopes of this set that `other` holds too, in this set's order.
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        self.iter().filter(|s| other.contains(s)).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| &**s)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S: AsRef<str>> FromIterator<S> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut out: Vec<Box<str>> = Vec::new();
        for s in iter {
            let s = s.as_ref();
            if !out.iter().any(|x| **x == *s) {
                out.push(s.into());
            }
        }
        ScopeSet(out.into())
    }
}

/// Space-separated, as the `scope` parameter and the `X-Auth-Scopes` header carry it.
impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        let cases: &[(&str, Result<&str, ScopeError>)] = &[
            ("read", Ok("read")),
            ("read write", Ok("read write")),
            ("  write   read ", Ok("write read")),
            ("read read write", Ok("read write")),
            ("a:b/c!#[]", Ok("a:b/c!#[]")),
            ("", Err(ScopeError::Empty)),
            ("   ", Err(ScopeError::Empty)),
            ("read wr\"ite", Err(ScopeError::Malformed)),
            ("read\\write", Err(ScopeError::Malformed)),
            ("read\twrite", Err(ScopeError::Malformed)),
            ("ré", Err(ScopeError::Malformed)),
        ];
        for (text, want) in cases {
            let got = ScopeSet::parse(text).map(|s| s.to_string());
            assert_eq!(got.as_deref(), want.as_ref().map(|s| *s), "{text:?}");
        }
    }

    #[test]
    fn set_operations() {
        let rw = ScopeSet::parse("read write").unwrap();
        let r = ScopeSet::parse("read").unwrap();
        let g = ScopeSet::parse("groups read").unwrap();
        assert!(rw.contains_all(&r));
        assert!(!r.contains_all(&rw));
        assert!(rw.contains_all(&ScopeSet::default()));
        assert_eq!(g.intersection(&rw).to_string(), "read");
        assert_eq!(rw.intersection(&g), r);
        assert_eq!(ScopeSet::from_stored(&rw.to_string()), rw);
        assert_eq!(ScopeSet::from_stored(""), ScopeSet::default());
        assert_eq!(format!("{:?}", rw), r#"["read", "write"]"#);
    }
}
