//! Parsing of token-endpoint input: the `application/x-www-form-urlencoded` body and HTTP
//! Basic client credentials. Pure and IO-free.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::error::OAuthError;

/// A token request's parameters. RFC 6749 §3.2: a parameter may appear once; parameters sent
/// without a value are treated as omitted (§3.1).
#[derive(Debug, Default)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

/// Most parameters a form may carry. The richest request an endpoint takes has about ten;
/// the bound keeps a hostile body of thousands of tiny keys from costing more than a normal one.
pub const MAX_PARAMETERS: usize = 64;

impl Form {
    /// Parses a form body in time linear in its length: at most [`MAX_PARAMETERS`] pairs,
    /// each name at most once.
    pub fn parse(body: &[u8]) -> Result<Form, OAuthError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (k, v) in form_urlencoded::parse(body) {
            if pairs.len() == MAX_PARAMETERS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            if !seen.insert(k.clone()) {
                return Err(OAuthError::invalid_request(
                    "a parameter was sent more than once",
                ));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Form { pairs })
    }

    /// The non-empty value of `name`, if sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// The value of a parameter the grant requires.
    pub fn require(&self, name: &str, missing: &'static str) -> Result<&str, OAuthError> {
        self.get(name).ok_or(OAuthError::invalid_request(missing))
    }
}

/// Client credentials from an `Authorization: Basic` value (RFC 6749 §2.3.1: id and secret are
/// form-urlencoded before the Base64 step, so both are decoded after it).
pub fn parse_basic(value: &[u8]) -> Result<(String, String), OAuthError> {
    let bad = OAuthError::invalid_request("malformed HTTP Basic credentials");
    let value = std::str::from_utf8(value).map_err(|_| bad.clone())?;
    let (scheme, encoded) = value.split_once(' ').ok_or(bad.clone())?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_request(
            "client authentication must use HTTP Basic",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad.clone())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad.clone())?;
    let (id, secret) = decoded.split_once(':').ok_or(bad.clone())?;
    let unescape = |s: &str| -> Result<String, OAuthError> {
        // form_urlencoded decodes `+` as space and %XX escapes, as §2.3.1 asks.
        let pair = format!("x={s}");
        let mut parts = form_urlencoded::parse(pair.as_bytes());
        let (_, v) = parts.next().ok_or(bad.clone())?;
        if parts.next().is_some() {
            return Err(bad.clone());
        }
        Ok(v.into_owned())
    };
    let (id, secret) = (unescape(id)?, unescape(secret)?);
    if id.is_empty() {
        return Err(bad);
    }
    Ok((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::error::OAuthErrorCode;

    #[test]
    fn form_parameters() {
        let f = Form::parse(b"grant_type=password&username=al%20ice&password=p%26w+x&scope=&extra")
            .unwrap();
        assert_eq!(f.get("grant_type"), Some("password"));
        assert_eq!(f.get("username"), Some("al ice"));
        assert_eq!(f.get("password"), Some("p&w x"));
        assert_eq!(f.get("scope"), None, "empty value counts as omitted");
        assert_eq!(f.get("extra"), None);
        assert_eq!(f.get("missing"), None);
        let dup = Form::parse(b"scope=read&scope=write").unwrap_err();
        assert_eq!(dup.code, OAuthErrorCode::InvalidRequest);
        let dup = Form::parse(b"a=1&scope=read&b=2&sc%6fpe=write").unwrap_err();
        assert_eq!(dup.description, "a parameter was sent more than once");
        let many: String = (0..MAX_PARAMETERS).map(|i| format!("k{i}=v&")).collect();
        assert!(Form::parse(many.as_bytes()).is_ok());
        let too_many = format!("{many}one=more");
        let err = Form::parse(too_many.as_bytes()).unwrap_err();
        assert_eq!(
            (err.code, err.description),
            (OAuthErrorCode::InvalidRequest, "too many parameters")
        );
    }

    #[test]
    fn basic_credentials() {
        let b64 = |s: &str| format!("Basic {}", STANDARD.encode(s));
        let cases: Vec<(String, Option<(&str, &str)>)> = vec![
            (b64("id:secret"), Some(("id", "secret"))),
            (b64("id:sec:ret"), Some(("id", "sec:ret"))),
            (b64("id%3Ax:s%2Bt+u"), Some(("id:x", "s+t u"))),
            (b64("id:"), Some(("id", ""))),
            (
                format!("basic {}", STANDARD.encode("a:b")),
                Some(("a", "b")),
            ),
            (b64("no-colon"), None),
            (b64(":secret"), None),
            ("Basic !!!".into(), None),
            ("Basic".into(), None),
            ("Bearer abc".into(), None),
            (b64("id:%zz"), Some(("id", "%zz"))),
        ];
        for (header, want) in cases {
            let got = parse_basic(header.as_bytes()).ok();
            let got = got.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
            assert_eq!(got, want, "{header}");
        }
    }
}
