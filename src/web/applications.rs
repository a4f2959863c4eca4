//! `/o/applications/`: a signed-in user lists, registers, edits and deletes their own
//! applications; an administrator, every application. A new client secret is shown once.
//! Only administrators may mark an application first-party (no consent asked): anyone else's
//! application could otherwise take other users' tokens without asking them.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::session::Signed;
use super::templates::{AppView, Application, ApplicationDelete, ApplicationForm, Applications};
use super::{BASE_CSP, Frame, Pages, html, render, see_other};
use crate::http::Body;
use crate::manage::{self, ClientSpec, ManageError};
use crate::oauth::form::Form;
use crate::store::{ClientRecord, GrantType};

/// Where under `/o/applications/` a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    List,
    Register,
    Detail(String),
    Update(String),
    Delete(String),
}

impl Route {
    /// `rest` is what follows `/o/applications` (no trailing slash).
    pub fn parse(rest: &str) -> Option<Route> {
        Some(match super::segments(rest)?.as_slice() {
            [] => Route::List,
            ["register"] => Route::Register,
            [id] => Route::Detail((*id).to_owned()),
            [id, "update"] => Route::Update((*id).to_owned()),
            [id, "delete"] => Route::Delete((*id).to_owned()),
            _ => return None,
        })
    }
}

fn view(c: &ClientRecord) -> AppView {
    AppView {
        client_id: c.client_id.clone(),
        name: c.name.clone(),
        kind: if c.is_public() {
            "public"
        } else {
            "confidential"
        },
        grants: c
            .grants
            .iter()
            .map(|g| g.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        scopes: c.scopes.to_string(),
        owner: c.owner.clone().unwrap_or_else(|| "the command line".into()),
    }
}

impl Pages {
    pub(super) async fn applications(
        &self,
        route: Route,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let signed = match self.require_signed(&req).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        let admin = match self.auth.store.user(&signed.username).await {
            Ok(u) => u.is_some_and(|u| u.is_admin),
            Err(e) => return self.unavailable(&e),
        };
        let get = *req.method() == Method::GET;
        match route {
            Route::List if get => self.app_list(&signed, admin).await,
            Route::Register if get => {
                self.app_form(&signed, admin, None, &ClientSpec::default(), None)
            }
            Route::Register => self.app_register(&signed, admin, req).await,
            Route::Detail(id) if get => match self.own_app(&signed, admin, &id).await {
                Ok(app) => self.app_page(&signed, &app, None),
                Err(resp) => resp,
            },
            Route::Update(id) => match self.own_app(&signed, admin, &id).await {
                Ok(app) if get => {
                    let spec = spec_of(&app);
                    self.app_form(&signed, admin, Some(&app), &spec, None)
                }
                Ok(app) => self.app_update(&signed, admin, &app, req).await,
                Err(resp) => resp,
            },
            Route::Delete(id) => match self.own_app(&signed, admin, &id).await {
                Ok(app) if get => {
                    let frame = Frame::of(&signed);
                    let page = ApplicationDelete {
                        signed_in: frame.signed_in,
                        csrf: &frame.csrf,
                        name: &app.name,
                        client_id: &app.client_id,
                    };
                    html(StatusCode::OK, render(&page), BASE_CSP)
                }
                Ok(app) => {
                    if let Err(resp) = self.signed_form(req, &signed).await {
                        return resp;
                    }
                    match manage::remove_client(&self.auth.store, &app.client_id).await {
                        Ok(()) => {
                            tracing::info!(client_id = %app.client_id, user = %signed.username, "application deleted");
                            see_other("/o/applications/")
                        }
                        Err(e) => self.unavailable(&e),
                    }
                }
                Err(resp) => resp,
            },
            _ => self.error_page(
                StatusCode::METHOD_NOT_ALLOWED,
                &Frame::of(&signed),
                "Method not allowed",
                "This page is only shown, not posted to.",
                None,
            ),
        }
    }

    async fn app_list(&self, signed: &Signed, admin: bool) -> Response<Body> {
        let clients = match self.auth.store.clients().await {
            Ok(c) => c,
            Err(e) => return self.unavailable(&e),
        };
        let apps = clients
            .iter()
            .filter(|c| admin || c.owner.as_deref() == Some(&signed.username))
            .map(view)
            .collect();
        let frame = Frame::of(signed);
        let page = Applications {
            signed_in: frame.signed_in,
            csrf: &frame.csrf,
            admin,
            apps,
        };
        html(StatusCode::OK, render(&page), BASE_CSP)
    }

    /// The application, if this user may manage it; a "not found" page otherwise (whether
    /// another user's application exists is not said).
    async fn own_app(
        &self,
        signed: &Signed,
        admin: bool,
        id: &str,
    ) -> Result<ClientRecord, Response<Body>> {
        match self.auth.store.client(id).await {
            Ok(Some(c)) if admin || c.owner.as_deref() == Some(&signed.username) => Ok(c),
            Ok(_) => Err(self.error_page(
                StatusCode::NOT_FOUND,
                &Frame::of(signed),
                "Not found",
                "You have no application with this id.",
                None,
            )),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    fn app_page(
        &self,
        signed: &Signed,
        app: &ClientRecord,
        new_secret: Option<&str>,
    ) -> Response<Body> {
        let frame = Frame::of(signed);
        let page = Application {
            signed_in: frame.signed_in,
            csrf: &frame.csrf,
            app: view(app),
            redirect_uris: &app.redirect_uris,
            skip_consent: app.skip_consent,
            new_secret,
        };
        html(StatusCode::OK, render(&page), BASE_CSP)
    }

    fn app_form(
        &self,
        signed: &Signed,
        admin: bool,
        editing: Option<&ClientRecord>,
        spec: &ClientSpec,
        error: Option<&str>,
    ) -> Response<Body> {
        let frame = Frame::of(signed);
        let action = match editing {
            Some(app) => format!("/o/applications/{}/update/", app.client_id),
            None => "/o/applications/register/".to_owned(),
        };
        let redirect_uris = spec.redirect_uris.join("\n");
        let page = ApplicationForm {
            signed_in: frame.signed_in,
            csrf: &frame.csrf,
            heading: if editing.is_some() {
                "Edit application"
            } else {
                "Register an application"
            },
            action: &action,
            error,
            creating: editing.is_none(),
            admin,
            name: &spec.name,
            public: spec.public,
            grants: GrantType::ALL
                .iter()
                .map(|g| (g.as_str(), spec.grants.contains(g)))
                .collect(),
            redirect_uris: &redirect_uris,
            scopes: self
                .auth
                .oauth
                .scopes
                .iter()
                .map(|(name, description)| {
                    (
                        name.as_str(),
                        description.as_str(),
                        spec.scopes.contains(name),
                    )
                })
                .collect(),
            skip_consent: spec.skip_consent,
        };
        let status = if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        html(status, render(&page), BASE_CSP)
    }

    /// The spec a submitted form describes.
    fn spec_from(&self, form: &Form, admin: bool, owner: Option<String>) -> ClientSpec {
        ClientSpec {
            name: form.get("name").unwrap_or_default().trim().to_owned(),
            grants: GrantType::ALL
                .into_iter()
                .filter(|g| form.get(&format!("grant_{}", g.as_str())).is_some())
                .collect(),
            scopes: self
                .auth
                .oauth
                .scopes
                .keys()
                .filter(|s| form.get(&format!("scope_{s}")).is_some())
                .cloned()
                .collect(),
            redirect_uris: form
                .get("redirect_uris")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            public: form.get("client_type") == Some("public"),
            // Only an administrator makes an application first-party.
            skip_consent: admin && form.get("skip_consent").is_some(),
            owner,
        }
    }

    async fn app_register(
        &self,
        signed: &Signed,
        admin: bool,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let form = match self.signed_form(req, signed).await {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        let spec = self.spec_from(&form, admin, Some(signed.username.clone()));
        match manage::add_client(&self.auth.store, &self.auth.oauth, spec.clone()).await {
            Ok(new) => {
                tracing::info!(client_id = %new.client.client_id, user = %signed.username, "application registered");
                self.app_page(signed, &new.client, new.secret.as_deref())
            }
            Err(ManageError::Invalid(why)) => self.app_form(signed, admin, None, &spec, Some(&why)),
            Err(e) => self.unavailable(&e),
        }
    }

    async fn app_update(
        &self,
        signed: &Signed,
        admin: bool,
        app: &ClientRecord,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let form = match self.signed_form(req, signed).await {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        let mut spec = self.spec_from(&form, admin, app.owner.clone());
        if !admin {
            // Not an administrator's to change.
            spec.skip_consent = app.skip_consent;
        }
        match manage::update_client(&self.auth.store, &self.auth.oauth, app, spec.clone()).await {
            Ok(updated) => {
                tracing::info!(client_id = %updated.client_id, user = %signed.username, "application updated");
                see_other(&format!("/o/applications/{}/", updated.client_id))
            }
            Err(ManageError::Invalid(why)) => {
                self.app_form(signed, admin, Some(app), &spec, Some(&why))
            }
            Err(e) => self.unavailable(&e),
        }
    }
}

/// The form values of an existing application.
fn spec_of(app: &ClientRecord) -> ClientSpec {
    ClientSpec {
        name: app.name.clone(),
        grants: app.grants.clone(),
        scopes: app.scopes.iter().map(str::to_owned).collect(),
        redirect_uris: app.redirect_uris.clone(),
        public: app.is_public(),
        skip_consent: app.skip_consent,
        owner: app.owner.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases = [
            ("", Some(Route::List)),
            ("/register", Some(Route::Register)),
            ("/abc", Some(Route::Detail("abc".into()))),
            ("/abc/update", Some(Route::Update("abc".into()))),
            ("/abc/delete", Some(Route::Delete("abc".into()))),
            ("/abc/other", None),
            ("/a/b/c", None),
            ("x", None),
        ];
        for (rest, want) in cases {
            assert_eq!(Route::parse(rest), want, "{rest:?}");
        }
    }
}
