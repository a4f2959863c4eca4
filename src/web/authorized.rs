//! `/o/authorized_tokens/`: the applications holding live tokens for the signed-in user
//! (scopes, when granted, when they expire), each revocable at once. Revoking takes every
//! token of that grant out of the store and this gateway's cache (the next API call fails),
//! and forgets the consent, so the application must ask again.

use std::collections::BTreeMap;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::templates::{AuthorizedTokens, GrantView};
use super::{BASE_CSP, Frame, Pages, html, render, see_other};
use crate::http::Body;
use crate::scope::ScopeSet;
use crate::store::{TokenOwner, TokenStatus};

/// Where under `/o/authorized_tokens/` a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    List,
    /// Revoke everything granted to this client id.
    Revoke(String),
}

impl Route {
    /// `rest` is what follows `/o/authorized_tokens` (no trailing slash).
    pub fn parse(rest: &str) -> Option<Route> {
        Some(match super::segments(rest)?.as_slice() {
            [] => Route::List,
            [id, "delete"] => Route::Revoke((*id).to_owned()),
            _ => return None,
        })
    }
}

/// A time for people, to the minute (UTC).
fn when(unix: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.get(..16)
        .map_or(text.clone(), |m| format!("{} UTC", m.replace('T', " ")))
}

impl Pages {
    pub(super) async fn authorized(&self, route: Route, req: Request<Incoming>) -> Response<Body> {
        let signed = match self.require_signed(&req).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        let now = self.auth.clock.now();
        match route {
            Route::List if *req.method() == Method::GET => {
                let tokens = match self
                    .auth
                    .store
                    .list_tokens(TokenOwner::User(signed.username.clone()), now)
                    .await
                {
                    Ok(t) => t,
                    Err(e) => return self.unavailable(&e),
                };
                // One row per application: the union of the live tokens' scopes, the earliest
                // grant, the latest expiry.
                let mut by_client: BTreeMap<String, (Vec<String>, i64, i64)> = BTreeMap::new();
                for t in tokens.iter().filter(|t| t.status == TokenStatus::Active) {
                    let m = &t.meta;
                    let e = by_client.entry(m.client_id.clone()).or_insert((
                        Vec::new(),
                        m.issued_at,
                        m.expires_at,
                    ));
                    e.0.extend(m.scopes.iter().map(str::to_owned));
                    e.1 = e.1.min(m.issued_at);
                    e.2 = e.2.max(m.expires_at);
                }
                let mut grants = Vec::new();
                for (client_id, (scopes, granted, expires)) in by_client {
                    let name = match self.auth.store.client(&client_id).await {
                        Ok(c) => c.map_or_else(|| client_id.clone(), |c| c.name),
                        Err(e) => return self.unavailable(&e),
                    };
                    grants.push(GrantView {
                        client_id,
                        name,
                        scopes: scopes.iter().collect::<ScopeSet>().to_string(),
                        granted: when(granted),
                        expires: when(expires),
                    });
                }
                let frame = Frame::of(&signed);
                let page = AuthorizedTokens {
                    signed_in: frame.signed_in,
                    csrf: &frame.csrf,
                    grants,
                };
                html(StatusCode::OK, render(&page), BASE_CSP)
            }
            Route::Revoke(client_id) => {
                if let Err(resp) = self.signed_form(req, &signed).await {
                    return resp;
                }
                let grant = TokenOwner::Grant {
                    user: signed.username.clone(),
                    client: client_id.clone(),
                };
                let revoked = match self.auth.store.revoke_tokens_of(grant, now).await {
                    Ok(r) => r,
                    Err(e) => return self.unavailable(&e),
                };
                for d in &revoked.access {
                    self.auth.cache.invalidate(d);
                }
                self.auth
                    .metrics
                    .count_revoked("user", revoked.access.len(), revoked.refresh);
                tracing::info!(client_id = %client_id, user = %signed.username, access_revoked = revoked.access.len(), refresh_revoked = revoked.refresh, "authorization revoked by its user");
                see_other("/o/authorized_tokens/")
            }
            Route::List => self.error_page(
                StatusCode::METHOD_NOT_ALLOWED,
                &Frame::of(&signed),
                "Method not allowed",
                "This page is only shown, not posted to.",
                None,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_times() {
        assert_eq!(Route::parse(""), Some(Route::List));
        assert_eq!(
            Route::parse("/abc/delete"),
            Some(Route::Revoke("abc".into()))
        );
        assert_eq!(Route::parse("/abc"), None);
        assert_eq!(Route::parse("x"), None);
        assert_eq!(when(1_800_000_000), "2027-01-15 08:00 UTC");
    }
}
