//! Which scopes a token request gets. Pure: the rules of RFC 6749 §3.3 and §6 as tables.

use std::collections::BTreeMap;

use super::error::OAuthError;
use crate::scope::ScopeSet;

/// Parses a requested `scope` parameter (space-delimited, RFC 6749 §3.3).
pub fn parse(requested: &str) -> Result<ScopeSet, OAuthError> {
    ScopeSet::parse(requested)
        .map_err(|_| OAuthError::invalid_scope("the scope parameter is malformed"))
}

/// Scopes for a new grant. With no request, the configured defaults the client is allowed;
/// otherwise every requested scope must exist and be allowed to the client.
pub fn for_new_grant(
    requested: Option<&str>,
    known: &BTreeMap<String, String>,
    allowed: &ScopeSet,
    defaults: &ScopeSet,
) -> Result<ScopeSet, OAuthError> {
    let Some(requested) = requested else {
        let granted = defaults.intersection(allowed);
        if granted.is_empty() {
            return Err(OAuthError::invalid_scope(
                "no scope was requested and no default scope is allowed to this client",
            ));
        }
        return Ok(granted);
    };
    let requested = parse(requested)?;
    for s in requested.iter() {
        if !known.contains_key(s) {
            return Err(OAuthError::invalid_scope("a requested scope is unknown"));
        }
        if !allowed.contains(s) {
            return Err(OAuthError::invalid_scope(
                "a requested scope is not allowed to this client",
            ));
        }
    }
    Ok(requested)
}

/// Scopes of an access token obtained by refresh (RFC 6749 §6): the original grant's, or a
/// subset of them when the request narrows it; never more.
pub fn for_refresh(requested: Option<&str>, original: &ScopeSet) -> Result<ScopeSet, OAuthError> {
    let Some(requested) = requested else {
        return Ok(original.clone());
    };
    let requested = parse(requested)?;
    if !original.contains_all(&requested) {
        return Err(OAuthError::invalid_scope(
            "a refresh cannot add scopes beyond those originally granted",
        ));
    }
    Ok(requested)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> ScopeSet {
        s.iter().collect()
    }

    #[test]
    fn new_grant_scopes() {
        let known: BTreeMap<String, String> = ["read", "write", "groups"]
            .iter()
            .map(|s| (s.to_string(), String::new()))
            .collect();
        let allowed = v(&["read", "write"]);
        let defaults = v(&["read"]);
        type Case<'a> = (Option<&'a str>, Result<&'a [&'a str], ()>);
        let cases: &[Case] = &[
            (None, Ok(&["read"])),
            (Some("read"), Ok(&["read"])),
            (Some("write read"), Ok(&["write", "read"])),
            (Some("read  read write"), Ok(&["read", "write"])),
            (Some("groups"), Err(())),
            (Some("admin"), Err(())),
            (Some("read admin"), Err(())),
            (Some("   "), Err(())),
            (Some("re\"ad"), Err(())),
        ];
        for (requested, want) in cases {
            let got = for_new_grant(*requested, &known, &allowed, &defaults);
            match want {
                Ok(w) => assert_eq!(got.unwrap(), v(w), "{requested:?}"),
                Err(()) => assert_eq!(
                    got.unwrap_err().code.as_str(),
                    "invalid_scope",
                    "{requested:?}"
                ),
            }
        }
        // Defaults the client may not have are dropped; none left is an error.
        assert_eq!(
            for_new_grant(None, &known, &v(&["write"]), &defaults)
                .unwrap_err()
                .code
                .as_str(),
            "invalid_scope"
        );
    }

    #[test]
    fn refresh_scopes_never_widen() {
        let original = v(&["read", "write"]);
        assert_eq!(for_refresh(None, &original).unwrap(), original);
        assert_eq!(for_refresh(Some("read"), &original).unwrap(), v(&["read"]));
        assert!(for_refresh(Some("read groups"), &original).is_err());
        assert!(for_refresh(Some("groups"), &original).is_err());
    }
}
