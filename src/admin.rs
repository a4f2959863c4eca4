//! The admin listener: `/metrics` (the Prometheus text format, or OpenMetrics when the scraper
//! asks for it: `exposition`), `/healthz` (the process serves),
//! `/readyz` (the store answers). Kept off the proxy port so it is never exposed by accident.

use std::sync::Arc;

use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue, VARY};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::exposition::{self, Format};
use crate::http::{Body, full, json_response};
use crate::store::SharedStore;

pub struct Admin {
    pub registry: Registry,
    pub store: SharedStore,
    /// `portcullis_ready`, set by every `/readyz` probe.
    pub ready: Gauge,
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method_not_allowed"}),
            );
        }
        match req.uri().path() {
            "/metrics" => {
                let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
                let format = exposition::negotiate(accept);
                let openmetrics = crate::metrics::render(&self.registry);
                let body = match format {
                    Format::OpenMetrics => openmetrics,
                    Format::PrometheusText => exposition::to_prometheus_text(&openmetrics),
                };
                let mut resp = Response::new(full(body));
                let headers = resp.headers_mut();
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                );
                headers.insert(VARY, HeaderValue::from_static("accept"));
                resp
            }
            "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" => match self.store.ping().await {
                Ok(()) => {
                    self.ready.set(1);
                    json_response(StatusCode::OK, &json!({"status": "ready"}))
                }
                Err(e) => {
                    self.ready.set(0);
                    tracing::warn!(error = %e, "readiness check failed");
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"status": "unavailable", "reason": "the store does not answer"}),
                    )
                }
            },
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }
}
