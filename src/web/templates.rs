//! The pages' templates (`templates/`): askama checks them at compile time and escapes every
//! value by default, so a client name, a scope or a redirect URI can never become markup.
//! Every page has `signed_in` and `csrf` for the shared header (`base.html`).

use askama::Template;

#[derive(Template)]
#[template(path = "login.html")]
pub struct Login<'a> {
    pub signed_in: Option<&'a str>,
    pub csrf: &'a str,
    pub next: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct Consent<'a> {
    pub signed_in: Option<&'a str>,
    pub csrf: &'a str,
    pub client_name: &'a str,
    /// Each scope asked for, with its description from `oauth.scopes`.
    pub scopes: Vec<(&'a str, &'a str)>,
    pub redirect_uri: &'a str,
    /// The authorization request, carried through the form.
    pub fields: Vec<(&'a str, &'a str)>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub signed_in: Option<&'a str>,
    pub csrf: &'a str,
    pub heading: &'a str,
    pub message: &'a str,
    pub error_code: Option<&'a str>,
}

/// An application as the pages show it.
pub struct AppView {
    pub client_id: String,
    pub name: String,
    /// `confidential` or `public`.
    pub kind: &'static str,
    pub grants: String,
    pub scopes: String,
    pub owner: String,
}

#[derive(Template)]
#[template(path = "applications.html")]
pub struct Applications<'a> {
    pub signed_in: Option<&'a str>,
    pub csrf: &'a str,
    pub admin: bool,
    pub apps: Vec<AppView>,
}

#[derive(Template)]
#[template(path = "application.html")]
pub struct Application<'a> {
    pub signed_in: Option<&'a str>,
    pub csrf: &'a str,
    pub app: AppView,
    pub redirect_uris: &'a [String],
    pub skip_consent: bool,
    /// A secret just made: shown this once.
    pub new_secret: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "application_form.html")]
pub struct ApplicationForm<'a> {
    pub signed_in: Option<&'a str>,
    pub csrf: &'a str,
    pub heading: &'a str,
    pub action: &'a str,
    pub error: Option<&'a str>,
    /// Registering (the client type can be chosen) rather than editing.
    pub creating: bool,
    pub admin: bool,
    pub name: &'a str,
    pub public: bool,
    /// Each grant type and whether it is chosen.
    pub grants: Vec<(&'static str, bool)>,
    pub redirect_uris: &'a str,
    /// Each scope, its description, and whether it is chosen.
    pub scopes: Vec<(&'a str, &'a str, bool)>,
    pub skip_consent: bool,
}

#[derive(Template)]
#[template(path = "application_delete.html")]
pub struct ApplicationDelete<'a> {
    pub signed_in: Option<&'a str>,
    pub csrf: &'a str,
    pub name: &'a str,
    pub client_id: &'a str,
}

/// One application holding live tokens for the user.
pub struct GrantView {
    pub client_id: String,
    pub name: String,
    pub scopes: String,
    pub granted: String,
    pub expires: String,
}

#[derive(Template)]
#[template(path = "authorized_tokens.html")]
pub struct AuthorizedTokens<'a> {
    pub signed_in: Option<&'a str>,
    pub csrf: &'a str,
    pub grants: Vec<GrantView>,
}
