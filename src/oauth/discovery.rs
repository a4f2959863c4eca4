//! `GET /.well-known/oauth-authorization-server` (RFC 8414), built from the config.

use http::header::{CACHE_CONTROL, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{AuthServer, INTROSPECT_PATH, REVOKE_PATH, TOKEN_PATH};
use crate::http::{Body, GatewayError, json_response};
use crate::store::GrantType;

impl AuthServer {
    pub(super) fn metadata(&self, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(GatewayError::MethodNotAllowed { allow: "GET, HEAD" });
        }
        let issuer = self.oauth.issuer.as_deref().unwrap_or_default();
        let auth_methods = ["client_secret_basic", "client_secret_post"];
        let mut resp = json_response(
            StatusCode::OK,
            &json!({
                "issuer": issuer,
                "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
                "revocation_endpoint": format!("{issuer}{REVOKE_PATH}"),
                "introspection_endpoint": format!("{issuer}{INTROSPECT_PATH}"),
                // authorization_code is listed with the authorization endpoint that issues
                // its codes.
                "grant_types_supported": GrantType::ALL
                    .iter()
                    .filter(|g| **g != GrantType::AuthorizationCode)
                    .map(|g| g.as_str())
                    .collect::<Vec<_>>(),
                "response_types_supported": [],
                "token_endpoint_auth_methods_supported": auth_methods,
                "revocation_endpoint_auth_methods_supported": auth_methods,
                "introspection_endpoint_auth_methods_supported": auth_methods,
                "scopes_supported": self.oauth.scopes.keys().collect::<Vec<_>>(),
            }),
        );
        resp.headers_mut().insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        Ok(resp)
    }
}
