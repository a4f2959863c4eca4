//! Redirect URIs (RFC 6749 §3.1.2, RFC 9700 §2.1, RFC 8252 §7.3): what may be registered, and
//! whether a request's `redirect_uri` is one that was. Exact string matching, with one
//! exemption: the port of a loopback IP literal over `http` (native apps listen on whatever
//! port they get). Pure.

use http::Uri;

/// Why a redirect URI cannot be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("a redirect URI must be an absolute URI")]
    NotAbsolute,
    #[error("a redirect URI must not have a fragment")]
    Fragment,
    #[error("a redirect URI must use https, or http on a loopback address")]
    Insecure,
}

/// The loopback hosts of RFC 8252 §7.3 (and `localhost`, which RFC 8252 §8.3 discourages but
/// native apps still register).
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks a redirect URI for registration: absolute, no fragment, `https` (or `http` for a
/// loopback host). Returns the parsed URI.
pub fn check_registration(uri: &str) -> Result<Uri, RedirectError> {
    if uri.contains('#') {
        return Err(RedirectError::Fragment);
    }
    let parsed: Uri = uri.parse().map_err(|_| RedirectError::NotAbsolute)?;
    let (Some(scheme), Some(authority)) = (parsed.scheme_str(), parsed.authority()) else {
        return Err(RedirectError::NotAbsolute);
    };
    if authority.as_str().contains('@') {
        return Err(RedirectError::NotAbsolute);
    }
    match scheme {
        "https" => Ok(parsed),
        "http" if is_loopback(authority.host()) => Ok(parsed),
        _ => Err(RedirectError::Insecure),
    }
}

/// True when `requested` is one of `registered`: the same string, or — for an `http` loopback
/// IP literal — the same string but for the port (RFC 8252 §7.3).
pub fn matches(registered: &[String], requested: &str) -> bool {
    registered.iter().any(|r| {
        r == requested || {
            let (Ok(a), Ok(b)) = (r.parse::<Uri>(), requested.parse::<Uri>()) else {
                return false;
            };
            let ip_literal = |u: &Uri| u.host().is_some_and(|h| h != "localhost" && is_loopback(h));
            a.scheme_str() == Some("http")
                && b.scheme_str() == Some("http")
                && ip_literal(&a)
                && a.host() == b.host()
                && a.path_and_query() == b.path_and_query()
                && !requested.contains('#')
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration() {
        use RedirectError::*;
        let cases: &[(&str, Result<(), RedirectError>)] = &[
            ("https://app.example/cb", Ok(())),
            ("https://app.example:8443/cb?x=1", Ok(())),
            ("http://127.0.0.1/cb", Ok(())),
            ("http://127.0.0.1:9000/cb", Ok(())),
            ("http://[::1]:9000/cb", Ok(())),
            ("http://localhost:9000/cb", Ok(())),
            ("http://app.example/cb", Err(Insecure)),
            ("http://10.0.0.1/cb", Err(Insecure)),
            ("ftp://app.example/cb", Err(Insecure)),
            ("https://app.example/cb#frag", Err(Fragment)),
            ("/cb", Err(NotAbsolute)),
            ("app.example/cb", Err(NotAbsolute)),
            ("https://user@app.example/cb", Err(NotAbsolute)),
            ("not a uri", Err(NotAbsolute)),
        ];
        for (uri, want) in cases {
            assert_eq!(check_registration(uri).map(|_| ()), *want, "{uri}");
        }
    }

    #[test]
    fn matching_is_exact_but_for_loopback_ports() {
        let registered = vec![
            "https://app.example/cb".to_owned(),
            "http://127.0.0.1/native".to_owned(),
            "http://localhost:8000/dev".to_owned(),
        ];
        let cases = [
            ("https://app.example/cb", true),
            ("https://app.example/cb/", false),
            ("https://app.example/cb?x=1", false),
            ("https://APP.example/cb", false),
            ("https://app.example:443/cb", false),
            ("http://app.example/cb", false),
            ("http://127.0.0.1/native", true),
            ("http://127.0.0.1:53187/native", true),
            ("http://127.0.0.1:53187/native?x", false),
            ("http://127.0.0.1:53187/other", false),
            ("http://127.0.0.2:53187/native", false),
            ("http://localhost:8000/dev", true),
            ("http://localhost:8001/dev", false),
        ];
        for (requested, want) in cases {
            assert_eq!(matches(&registered, requested), want, "{requested}");
        }
    }
}
