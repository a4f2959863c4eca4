//! The authorization endpoint (RFC 6749 §4.1, RFC 7636, RFC 9207) and the sign-in it needs.
//!
//! `GET /o/authorize/` checks the request; an unknown client or a redirect URI that is not
//! registered is shown on an error page and never redirected (RFC 6749 §4.1.2.1); every other
//! error goes back to the client with its `state`. A signed-in user sees the consent page
//! (unless the client skips consent, or the user already granted these scopes and
//! `approval_prompt` is `auto`); approving sends a code back, denying `access_denied`.

use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::session::{self, CSRF_COOKIE, SESSION_COOKIE, Signed};
use super::templates::{Consent, Login};
use super::{BASE_CSP, Frame, Pages, html, redirect, render, see_other, with_cookie};
use crate::http::Body;
use crate::metrics::OutcomeLabels;
use crate::oauth::code::Approval;
use crate::oauth::form::Form;
use crate::oauth::throttle::Key;
use crate::oauth::{Origin, pkce, redirect as redirect_uri, scope};
use crate::scope::ScopeSet;
use crate::store::{ClientRecord, GrantType};

/// A checked authorization request.
struct Authorization {
    client: ClientRecord,
    redirect_uri: String,
    scopes: ScopeSet,
    state: Option<String>,
    code_challenge: String,
}

/// Why an authorization request was refused, and where that is said.
enum Refusal {
    /// On our own page: the client or its redirect URI cannot be trusted with an answer.
    Page(&'static str),
    /// Back to the client's redirect URI (RFC 6749 §4.1.2.1).
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: &'static str,
    },
    /// The store did not answer.
    Unavailable(String),
}

/// Where a sign-in may send the browser next: a page of ours, never another site.
fn local_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/o/") && !n.contains("//") && !n.contains('\\') => n,
        _ => "/o/applications/",
    }
}

/// `uri` with `params` added to its query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = String::from(uri);
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        sep = '&';
        out.push_str(k);
        out.push('=');
        out.extend(form_urlencoded::byte_serialize(v.as_bytes()));
    }
    out
}

/// The origin (`scheme://authority`) of a URI, for the consent page's `form-action`.
fn origin_of(uri: &str) -> Option<String> {
    let u: http::Uri = uri.parse().ok()?;
    Some(format!("{}://{}", u.scheme_str()?, u.authority()?))
}

impl Pages {
    pub(super) async fn authorize(&self, req: Request<Incoming>, origin: Origin) -> Response<Body> {
        let _ = origin;
        match *req.method() {
            Method::GET => self.authorize_get(req).await,
            Method::POST => self.authorize_post(req).await,
            _ => self.error_page(
                StatusCode::METHOD_NOT_ALLOWED,
                &Frame::anonymous(),
                "Method not allowed",
                "Use GET (or the consent form).",
                None,
            ),
        }
    }

    async fn authorize_get(&self, req: Request<Incoming>) -> Response<Body> {
        let query = req.uri().query().unwrap_or("").to_owned();
        let params = match Form::parse(query.as_bytes()) {
            Ok(p) => p,
            Err(e) => return self.refused(Refusal::Page(e.description), None),
        };
        let authorization = match self.check(&params).await {
            Ok(a) => a,
            Err(r) => return self.refused(r, None),
        };
        let signed = match self.require_signed(&req).await {
            Ok(s) => s,
            Err(to_login) => return to_login,
        };
        let granted = match self
            .auth
            .store
            .consent(&signed.username, &authorization.client.client_id)
            .await
        {
            Ok(g) => g,
            Err(e) => return self.unavailable(&e),
        };
        let remembered = !self.auth.oauth.always_prompt
            && granted.is_some_and(|g| g.contains_all(&authorization.scopes));
        if authorization.client.skip_consent || remembered {
            return self.approve(&signed, authorization, false).await;
        }
        self.consent_page(&signed, &authorization)
    }

    async fn authorize_post(&self, req: Request<Incoming>) -> Response<Body> {
        let Some(signed) = (match self.signed(&req).await {
            Ok(s) => s,
            Err(resp) => return resp,
        }) else {
            return self.error_page(
                StatusCode::UNAUTHORIZED,
                &Frame::anonymous(),
                "Signed out",
                "Your session has ended. Start again from the application.",
                None,
            );
        };
        let form = match self.signed_form(req, &signed).await {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        let authorization = match self.check(&form).await {
            Ok(a) => a,
            Err(r) => return self.refused(r, Some(&signed)),
        };
        if form.get("allow").is_none() {
            self.count("denied");
            tracing::info!(client_id = %authorization.client.client_id, user = %signed.username, "authorization denied");
            return Self::back_to_client(
                &authorization.redirect_uri,
                &[
                    ("error", "access_denied"),
                    ("error_description", "the user denied the request"),
                ],
                authorization.state.as_deref(),
                self.issuer(),
            );
        }
        self.approve(&signed, authorization, true).await
    }

    /// Checks an authorization request's parameters (the query of a GET, the fields of the
    /// consent form).
    async fn check(&self, params: &Form) -> Result<Authorization, Refusal> {
        let client_id = params.get("client_id").ok_or(Refusal::Page(
            "The request names no application (client_id is missing).",
        ))?;
        let client = self
            .auth
            .store
            .client(client_id)
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?
            .ok_or(Refusal::Page(
                "The request names an application that is not registered.",
            ))?;
        let redirect_uri = params.get("redirect_uri").ok_or(Refusal::Page(
            "The request has no redirect_uri: where to send you back is unknown.",
        ))?;
        if !redirect_uri::matches(&client.redirect_uris, redirect_uri) {
            return Err(Refusal::Page(
                "The redirect_uri is not registered for this application; the request is not sent back there.",
            ));
        }
        // From here on the client is known and the redirect URI is its own: errors go back.
        let state = params.get("state").map(str::to_owned);
        let back = |error: &'static str, description: &'static str| Refusal::Redirect {
            redirect_uri: redirect_uri.to_owned(),
            state: state.clone(),
            error,
            description,
        };
        if params.get("response_type") != Some("code") {
            return Err(back(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
        if !client.grants.contains(&GrantType::AuthorizationCode) {
            return Err(back(
                "unauthorized_client",
                "this client is not registered for the authorization code grant",
            ));
        }
        let code_challenge = pkce::check_challenge(
            params.get("code_challenge"),
            params.get("code_challenge_method"),
        )
        .map_err(|e| {
            back(
                "invalid_request",
                match e {
                    pkce::PkceError::MissingChallenge => "code_challenge is required (PKCE, S256)",
                    pkce::PkceError::UnsupportedMethod => "code_challenge_method must be S256",
                    _ => "code_challenge is malformed",
                },
            )
        })?;
        let scopes = scope::for_new_grant(
            params.get("scope"),
            &self.auth.oauth.scopes,
            &client.scopes,
            &self.auth.oauth.default_scopes,
        )
        .map_err(|e| back("invalid_scope", e.description))?;
        Ok(Authorization {
            client,
            redirect_uri: redirect_uri.to_owned(),
            scopes,
            state,
            code_challenge,
        })
    }

    /// Issues the code (remembering the consent when the user gave it) and sends it back.
    async fn approve(&self, signed: &Signed, a: Authorization, consented: bool) -> Response<Body> {
        let now = self.auth.clock.now();
        if consented
            && let Err(e) = self
                .auth
                .store
                .grant_consent(&signed.username, &a.client.client_id, a.scopes.clone(), now)
                .await
        {
            return self.unavailable(&e);
        }
        let code = match self
            .auth
            .issue_code(Approval {
                client: &a.client,
                username: &signed.username,
                redirect_uri: &a.redirect_uri,
                scopes: a.scopes.clone(),
                code_challenge: a.code_challenge,
            })
            .await
        {
            Ok(code) => code,
            Err(e) => return self.unavailable(&e),
        };
        self.count("approved");
        tracing::info!(client_id = %a.client.client_id, user = %signed.username, scope = %a.scopes, "authorization approved");
        Self::back_to_client(
            &a.redirect_uri,
            &[("code", &code)],
            a.state.as_deref(),
            self.issuer(),
        )
    }

    /// `302` to the client's redirect URI with `params`, the `state` and the issuer (RFC 9207:
    /// the client can tell which server answered). Never a token: only a code or an error.
    fn back_to_client(
        redirect_uri: &str,
        params: &[(&str, &str)],
        state: Option<&str>,
        issuer: &str,
    ) -> Response<Body> {
        let mut all: Vec<(&str, &str)> = params.to_vec();
        if let Some(s) = state {
            all.push(("state", s));
        }
        all.push(("iss", issuer));
        redirect(StatusCode::FOUND, &with_query(redirect_uri, &all))
    }

    fn issuer(&self) -> &str {
        self.auth.oauth.issuer.as_deref().unwrap_or_default()
    }

    fn consent_page(&self, signed: &Signed, a: &Authorization) -> Response<Body> {
        let scopes: Vec<(&str, &str)> = a
            .scopes
            .iter()
            .map(|s| {
                let description = self.auth.oauth.scopes.get(s).map_or("", String::as_str);
                (s, description)
            })
            .collect();
        let scope_text = a.scopes.to_string();
        let mut fields: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &a.client.client_id),
            ("redirect_uri", &a.redirect_uri),
            ("scope", &scope_text),
            ("code_challenge", &a.code_challenge),
            ("code_challenge_method", "S256"),
        ];
        if let Some(state) = &a.state {
            fields.push(("state", state));
        }
        let frame = Frame::of(signed);
        let page = Consent {
            signed_in: frame.signed_in,
            csrf: &frame.csrf,
            client_name: &a.client.name,
            scopes,
            redirect_uri: &a.redirect_uri,
            fields,
        };
        // The consent form posts here, and its answer redirects to the client: both are
        // allowed form targets (browsers apply form-action to the redirect too).
        let csp = match origin_of(&a.redirect_uri) {
            Some(o) => BASE_CSP.replace("form-action 'self'", &format!("form-action 'self' {o}")),
            None => BASE_CSP.to_owned(),
        };
        html(StatusCode::OK, render(&page), &csp)
    }

    fn refused(&self, refusal: Refusal, signed: Option<&Signed>) -> Response<Body> {
        let frame = match signed {
            Some(s) => Frame::of(s),
            None => Frame::anonymous(),
        };
        match refusal {
            Refusal::Page(message) => {
                self.count("refused");
                self.error_page(
                    StatusCode::BAD_REQUEST,
                    &frame,
                    "Authorization request refused",
                    message,
                    Some("invalid_request"),
                )
            }
            Refusal::Redirect {
                redirect_uri,
                state,
                error,
                description,
            } => {
                self.count(error);
                Self::back_to_client(
                    &redirect_uri,
                    &[("error", error), ("error_description", description)],
                    state.as_deref(),
                    self.issuer(),
                )
            }
            Refusal::Unavailable(e) => self.unavailable(&e),
        }
    }

    fn count(&self, outcome: &'static str) {
        self.auth
            .metrics
            .authorizations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// `GET` shows the sign-in form; `POST` checks the password (rate-limited and backed off
    /// like the password grant) and starts a session.
    pub(super) async fn login(&self, req: Request<Incoming>, origin: Origin) -> Response<Body> {
        if *req.method() == Method::GET {
            let next = req
                .uri()
                .query()
                .and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "next")
                        .map(|(_, v)| v.into_owned())
                })
                .unwrap_or_default();
            return self.login_page(
                StatusCode::OK,
                local_next(Some(&next)),
                "",
                None,
                origin.tls,
            );
        }
        let cookie_csrf = session::cookie(req.headers(), CSRF_COOKIE).map(str::to_owned);
        let form = match self.read_form(req, &Frame::anonymous()).await {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        let next = local_next(form.get("next")).to_owned();
        let username = form.get("username").unwrap_or_default().to_owned();
        let csrf_ok = match (cookie_csrf.as_deref(), form.get("csrf")) {
            (Some(c), Some(f)) => session::same(c, f),
            _ => false,
        };
        if !csrf_ok {
            return self.login_page(
                StatusCode::FORBIDDEN,
                &next,
                &username,
                Some("The sign-in form expired or was not sent from this site. Please try again."),
                origin.tls,
            );
        }
        let password = form.get("password").unwrap_or_default();
        let keys = [Key::User(username.as_str().into())];
        let throttle = &self.auth.throttle;
        if let Err(held) = throttle
            .check_address(origin.address)
            .and_then(|()| throttle.check(&keys, origin.address))
        {
            let _ = self.auth.throttled(held, origin.address);
            self.count_sign_in("throttled");
            let wait = held.retry_after.as_secs_f64().ceil() as u64;
            let mut resp = self.login_page(
                StatusCode::TOO_MANY_REQUESTS,
                &next,
                &username,
                Some(&format!("Too many attempts. Try again in {wait} seconds.")),
                origin.tls,
            );
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
            return resp;
        }
        let user = match self.auth.store.user(&username).await {
            Ok(u) => u,
            Err(e) => return self.unavailable(&e),
        };
        // An unknown user is checked against a dummy hash: the same path and time.
        let verified = self
            .auth
            .hasher
            .verify(
                password.to_owned(),
                user.as_ref().map(|u| u.password_hash.clone()),
            )
            .await
            .unwrap_or(false);
        let Some(user) = user.filter(|_| verified && !password.is_empty()) else {
            throttle.failed(&keys, origin.address);
            self.count_sign_in("failed");
            tracing::info!("sign-in refused: invalid credentials");
            return self.login_page(
                StatusCode::UNAUTHORIZED,
                &next,
                &username,
                Some("Invalid username or password."),
                origin.tls,
            );
        };
        throttle.succeeded(&keys, origin.address);
        self.auth.upgrade_password(&user, password).await;
        let now = self.auth.clock.now();
        let lifetime = self.auth.oauth.session_expire_seconds;
        let signed = match session::start(&self.auth.store, &user.username, now, lifetime).await {
            Ok(s) => s,
            Err(e) => return self.unavailable(&e),
        };
        self.count_sign_in("signed_in");
        tracing::info!(user = %user.username, "signed in");
        let resp = with_cookie(
            see_other(&next),
            session::set_cookie(SESSION_COOKIE, &signed.id, lifetime, "Lax", origin.tls),
        );
        with_cookie(
            resp,
            session::set_cookie(CSRF_COOKIE, "", 0, "Strict", origin.tls),
        )
    }

    fn login_page(
        &self,
        status: StatusCode,
        next: &str,
        username: &str,
        error: Option<&str>,
        secure: bool,
    ) -> Response<Body> {
        // A fresh double-submitted token for each form shown.
        let csrf = session::new_csrf();
        let page = Login {
            signed_in: None,
            csrf: &csrf,
            next,
            username,
            error,
        };
        with_cookie(
            html(status, render(&page), BASE_CSP),
            // Strict: sent only with forms of this site, never with a cross-site POST.
            session::set_cookie(CSRF_COOKIE, &csrf, 3600, "Strict", secure),
        )
    }

    /// Ends the session (a POST with the session's CSRF token).
    pub(super) async fn logout(&self, req: Request<Incoming>, origin: Origin) -> Response<Body> {
        let signed = match self.require_signed(&req).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        if let Err(resp) = self.signed_form(req, &signed).await {
            return resp;
        }
        if let Err(e) = self
            .auth
            .store
            .remove_session(crate::crypto::Digest::of(&signed.id))
            .await
        {
            return self.unavailable(&e);
        }
        tracing::info!(user = %signed.username, "signed out");
        with_cookie(
            see_other("/o/login/"),
            session::set_cookie(SESSION_COOKIE, "", 0, "Lax", origin.tls),
        )
    }

    fn count_sign_in(&self, outcome: &'static str) {
        self.auth
            .metrics
            .sign_ins
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_only_sends_the_browser_to_our_own_pages() {
        let cases = [
            (
                Some("/o/authorize/?client_id=x"),
                "/o/authorize/?client_id=x",
            ),
            (Some("/o/applications/"), "/o/applications/"),
            (Some("https://evil.example/"), "/o/applications/"),
            (Some("//evil.example/o/"), "/o/applications/"),
            (Some("/o//evil.example"), "/o/applications/"),
            (Some("/o/\\evil"), "/o/applications/"),
            (Some("/api/"), "/o/applications/"),
            (None, "/o/applications/"),
        ];
        for (next, want) in cases {
            assert_eq!(local_next(next), want, "{next:?}");
        }
    }

    #[test]
    fn answers_keep_the_redirect_uris_own_query() {
        assert_eq!(
            with_query("https://a.example/cb", &[("code", "x y"), ("state", "s&t")]),
            "https://a.example/cb?code=x+y&state=s%26t"
        );
        assert_eq!(
            with_query("https://a.example/cb?k=1", &[("code", "c")]),
            "https://a.example/cb?k=1&code=c"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:9000/cb?x").as_deref(),
            Some("http://127.0.0.1:9000")
        );
    }
}
