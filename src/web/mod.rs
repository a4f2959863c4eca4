//! The person-facing pages under `/o/`: sign-in and sign-out, the authorization endpoint
//! (RFC 6749 §4.1 with PKCE) and its consent page, the applications a user registers and the
//! applications a user has authorized. Plain HTML from templates that escape by default, one
//! stylesheet served from the binary, no scripts; every page is `no-store`, framed by nobody
//! (`frame-ancestors 'none'`), and every form carries a CSRF token.

mod applications;
mod authorize;
mod authorized;
pub mod session;
mod templates;

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http::{Body, full, is_form_urlencoded};
use crate::oauth::form::Form;
use crate::oauth::{AuthServer, Origin, read_limited};
use session::Signed;

/// The stylesheet, served at `/o/static/portcullis.css`.
const STYLESHEET: &str = include_str!("portcullis.css");

/// A page of the gateway's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    Authorize,
    Login,
    Logout,
    Stylesheet,
    /// `/o/applications/…`.
    Applications(applications::Route),
    /// `/o/authorized_tokens/…`.
    AuthorizedTokens(authorized::Route),
}

impl Page {
    /// The page that serves a canonical path, if any (with or without its trailing slash).
    pub fn for_path(path: &str) -> Option<Page> {
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        let rest = trimmed.strip_prefix("/o/")?;
        Some(match rest {
            "authorize" => Page::Authorize,
            "login" => Page::Login,
            "logout" => Page::Logout,
            "static/portcullis.css" => Page::Stylesheet,
            _ => {
                if let Some(r) = rest.strip_prefix("applications") {
                    Page::Applications(applications::Route::parse(r)?)
                } else if let Some(r) = rest.strip_prefix("authorized_tokens") {
                    Page::AuthorizedTokens(authorized::Route::parse(r)?)
                } else {
                    return None;
                }
            }
        })
    }
}

/// Serves the pages, over the authorization server's state.
#[derive(Clone)]
pub struct Pages {
    auth: AuthServer,
}

/// What a page shows in its header, and its forms' CSRF token.
struct Frame<'a> {
    signed_in: Option<&'a str>,
    csrf: String,
}

impl<'a> Frame<'a> {
    fn of(signed: &'a Signed) -> Frame<'a> {
        Frame {
            signed_in: Some(&signed.username),
            csrf: signed.csrf(),
        }
    }

    fn anonymous() -> Frame<'static> {
        Frame {
            signed_in: None,
            csrf: String::new(),
        }
    }
}

impl Pages {
    pub fn new(auth: AuthServer) -> Pages {
        Pages { auth }
    }

    /// Serves `page`. Every failure is a page of its own (never JSON, never a redirect where
    /// RFC 6749 §4.1.2.1 forbids one).
    pub async fn handle(
        &self,
        page: Page,
        req: Request<Incoming>,
        origin: Origin,
    ) -> Response<Body> {
        if page == Page::Stylesheet {
            return stylesheet();
        }
        // Sign-in and consent carry credentials: the same rule as the token endpoint.
        if self.auth.require_tls && !origin.tls {
            return self.error_page(
                StatusCode::FORBIDDEN,
                &Frame::anonymous(),
                "TLS required",
                "These pages need TLS: credentials must not cross the network in clear.",
                None,
            );
        }
        match page {
            Page::Authorize => self.authorize(req, origin).await,
            Page::Login => self.login(req, origin).await,
            Page::Logout => self.logout(req, origin).await,
            Page::Applications(route) => self.applications(route, req).await,
            Page::AuthorizedTokens(route) => self.authorized(route, req).await,
            Page::Stylesheet => stylesheet(),
        }
    }

    /// The signed-in session of a request, if any; a store failure is an error page.
    async fn signed(&self, req: &Request<Incoming>) -> Result<Option<Signed>, Response<Body>> {
        session::current(&self.auth.store, req.headers(), self.auth.clock.now())
            .await
            .map_err(|e| self.unavailable(&e))
    }

    /// The signed-in session, or a redirect to the sign-in page that comes back here.
    async fn require_signed(&self, req: &Request<Incoming>) -> Result<Signed, Response<Body>> {
        match self.signed(req).await? {
            Some(s) => Ok(s),
            None => {
                let back = req
                    .uri()
                    .path_and_query()
                    .map_or("/o/applications/", |pq| pq.as_str());
                let next = if *req.method() == Method::GET {
                    back
                } else {
                    "/o/applications/"
                };
                Err(see_other(&format!(
                    "/o/login/?next={}",
                    form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                )))
            }
        }
    }

    /// A POST form of a signed-in user, bounded like the token endpoint's, with its CSRF
    /// token checked.
    async fn signed_form(
        &self,
        req: Request<Incoming>,
        signed: &Signed,
    ) -> Result<Form, Response<Body>> {
        let form = self.read_form(req, &Frame::of(signed)).await?;
        if !form
            .get("csrf")
            .is_some_and(|t| session::same(t, &signed.csrf()))
        {
            return Err(self.error_page(
                StatusCode::FORBIDDEN,
                &Frame::of(signed),
                "Request refused",
                "The form was not sent from this site (its CSRF token is missing or wrong).",
                None,
            ));
        }
        Ok(form)
    }

    /// A POST form body: URL-encoded, bounded in size and time, each parameter once.
    async fn read_form(
        &self,
        req: Request<Incoming>,
        frame: &Frame<'_>,
    ) -> Result<Form, Response<Body>> {
        if *req.method() != Method::POST {
            return Err(self.error_page(
                StatusCode::METHOD_NOT_ALLOWED,
                frame,
                "Method not allowed",
                "This address takes a form submission (POST).",
                None,
            ));
        }
        if !is_form_urlencoded(req.headers()) {
            return Err(self.error_page(
                StatusCode::BAD_REQUEST,
                frame,
                "Bad request",
                "The form must be sent as application/x-www-form-urlencoded.",
                None,
            ));
        }
        let body = tokio::time::timeout(
            self.auth.body_read_timeout,
            read_limited(req.into_body(), self.auth.max_body_bytes),
        )
        .await;
        let bytes: Bytes = match body {
            Ok(Ok(b)) => b,
            _ => {
                return Err(self.error_page(
                    StatusCode::BAD_REQUEST,
                    frame,
                    "Bad request",
                    "The form could not be read (too large, or too slow).",
                    None,
                ));
            }
        };
        Form::parse(&bytes).map_err(|e| {
            self.error_page(
                StatusCode::BAD_REQUEST,
                frame,
                "Bad request",
                e.description,
                None,
            )
        })
    }

    fn error_page(
        &self,
        status: StatusCode,
        frame: &Frame<'_>,
        heading: &str,
        message: &str,
        error_code: Option<&str>,
    ) -> Response<Body> {
        let page = templates::ErrorPage {
            signed_in: frame.signed_in,
            csrf: &frame.csrf,
            heading,
            message,
            error_code,
        };
        html(status, render(&page), BASE_CSP)
    }

    /// The store could not answer: 503, and the operator's log says why.
    fn unavailable(&self, e: &dyn std::fmt::Display) -> Response<Body> {
        tracing::error!(error = %e, "a page could not reach the store");
        self.error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &Frame::anonymous(),
            "Temporarily unavailable",
            "Please try again in a moment.",
            None,
        )
    }
}

/// The policy of every page: nothing but our own stylesheet, forms posted to ourselves, never
/// framed (no clickjacking of the consent button).
const BASE_CSP: &str = "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Renders a template; the templates are checked at compile time, so this cannot fail short
/// of running out of memory.
/// The `/`-separated segments of what follows a page's prefix (`""` → none, `"/a/b"` → `a`,
/// `b`); `None` when it does not start a new segment (`/o/applicationsX`).
fn segments(rest: &str) -> Option<Vec<&str>> {
    if rest.is_empty() {
        return Some(Vec::new());
    }
    rest.strip_prefix('/').map(|r| r.split('/').collect())
}

fn render(t: &impl askama::Template) -> String {
    t.render()
        .unwrap_or_else(|e| format!("<!doctype html><title>Error</title><p>{e}</p>"))
}

/// An HTML page with the headers every page carries.
fn html(status: StatusCode, body: String, csp: &str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(HeaderName::from_static("content-security-policy"), v);
    }
    resp
}

fn stylesheet() -> Response<Body> {
    let mut resp = Response::new(full(STYLESHEET));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// `303 See Other` to a page of ours (after a form, the browser GETs the next page).
fn see_other(location: &str) -> Response<Body> {
    redirect(StatusCode::SEE_OTHER, location)
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// Adds a `Set-Cookie` to a response.
fn with_cookie(mut resp: Response<Body>, cookie: HeaderValue) -> Response<Body> {
    resp.headers_mut().append(SET_COOKIE, cookie);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_paths() {
        let cases = [
            ("/o/authorize/", Some(Page::Authorize)),
            ("/o/authorize", Some(Page::Authorize)),
            ("/o/login/", Some(Page::Login)),
            ("/o/logout/", Some(Page::Logout)),
            ("/o/static/portcullis.css", Some(Page::Stylesheet)),
            (
                "/o/applications/",
                Some(Page::Applications(applications::Route::List)),
            ),
            (
                "/o/applications/register/",
                Some(Page::Applications(applications::Route::Register)),
            ),
            (
                "/o/applications/abc/update/",
                Some(Page::Applications(applications::Route::Update(
                    "abc".into(),
                ))),
            ),
            (
                "/o/authorized_tokens/",
                Some(Page::AuthorizedTokens(authorized::Route::List)),
            ),
            ("/o/token/", None),
            ("/o/", None),
            ("/o/static/other.css", None),
            ("/o/applications/a/b/c/", None),
            ("/api/o/login/", None),
        ];
        for (path, want) in cases {
            assert_eq!(Page::for_path(path), want, "{path}");
        }
    }
}
