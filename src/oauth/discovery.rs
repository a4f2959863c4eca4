//! `GET /.well-known/oauth-authorization-server` (RFC 8414), built from the config.

use http::header::{CACHE_CONTROL, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{AUTHORIZE_PATH, AuthServer, INTROSPECT_PATH, REVOKE_PATH, TOKEN_PATH};
use crate::http::{Body, GatewayError, json_response};
use crate::store::GrantType;

impl AuthServer {
    pub(super) fn metadata(&self, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(GatewayError::MethodNotAllowed { allow: "GET, HEAD" });
        }
        let issuer = self.oauth.issuer.as_deref().unwrap_or_default();
        let auth_methods = ["client_secret_basic", "client_secret_post"];
        // Public clients identify themselves by client_id alone (no secret).
        let with_public = ["client_secret_basic", "client_secret_post", "none"];
        let mut resp = json_response(
            StatusCode::OK,
            &json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}{AUTHORIZE_PATH}"),
                "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
                "revocation_endpoint": format!("{issuer}{REVOKE_PATH}"),
                "introspection_endpoint": format!("{issuer}{INTROSPECT_PATH}"),
                "grant_types_supported": GrantType::ALL.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "code_challenge_methods_supported": ["S256"],
                // RFC 9207: authorization responses carry `iss`.
                "authorization_response_iss_parameter_supported": true,
                "token_endpoint_auth_methods_supported": with_public,
                "revocation_endpoint_auth_methods_supported": with_public,
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
