//! `identity_headers`: the headers that carry the caller's identity upstream.

use std::collections::BTreeSet;

use http::HeaderName;
use serde_saphyr::Spanned;

use super::defaults::{IDENTITY_CLIENT_HEADER, IDENTITY_SCOPES_HEADER, IDENTITY_USER_HEADER};
use super::raw::RawIdentityHeaders;
use super::{Problem, Validator};

#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user: HeaderName,
    pub client: HeaderName,
    pub scopes: HeaderName,
}

impl Validator {
    pub(super) fn identity_headers(&mut self, raw: Option<&RawIdentityHeaders>) -> IdentityHeaders {
        let mut pick = |v: Option<&Spanned<String>>, key: &str, default: &'static str| match v {
            None => HeaderName::from_static(default),
            Some(s) => HeaderName::from_bytes(s.value.as_bytes()).unwrap_or_else(|_| {
                self.at(
                    &s.referenced,
                    format!(
                        "`identity_headers.{key}`: {:?} is not a valid header name",
                        s.value
                    ),
                );
                HeaderName::from_static(default)
            }),
        };
        let headers = IdentityHeaders {
            user: pick(
                raw.and_then(|r| r.user.as_ref()),
                "user",
                IDENTITY_USER_HEADER,
            ),
            client: pick(
                raw.and_then(|r| r.client.as_ref()),
                "client",
                IDENTITY_CLIENT_HEADER,
            ),
            scopes: pick(
                raw.and_then(|r| r.scopes.as_ref()),
                "scopes",
                IDENTITY_SCOPES_HEADER,
            ),
        };
        let names: BTreeSet<String> = [&headers.user, &headers.client, &headers.scopes]
            .iter()
            .map(|h| h.as_str().replace('_', "-"))
            .collect();
        if names.len() != 3 {
            self.problems.push(Problem {
                line: 0,
                column: 0,
                message: "`identity_headers` must name three different headers".into(),
            });
        }
        headers
    }
}
