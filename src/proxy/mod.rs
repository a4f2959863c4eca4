//! Forwarding to upstreams: one pooled hyper client per upstream, and the header rewriting
//! that decides what an upstream sees (hop-by-hop headers gone, `X-Forwarded-*` set,
//! credentials and client-sent identity headers removed before the gateway adds its own).

mod headers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use headers::{
    Forwarded, Identity, rewrite_request_headers, strip_hop_by_hop, vary_on_authorization,
};

use crate::config::UpstreamConfig;
use crate::http::GatewayError;
use crate::tls::TlsError;

/// Boxed error of request bodies sent upstream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a request sent upstream: the client's, streamed (and size-limited), or one the
/// gateway had to read first.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// One upstream and its connection pool.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: Arc<str>,
    pub config: UpstreamConfig,
    client: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Result<Upstream, TlsError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let tls = if config.scheme == Scheme::HTTPS {
            crate::tls::client_config(config.ca_file.as_deref())?
        } else {
            // Never used for an http:// upstream; no roots needed.
            rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(Upstream {
            name: config.name.as_str().into(),
            config,
            client,
        })
    }

    /// The upstream URI for a canonical path and the original query.
    pub fn uri_for(&self, canonical_path: &str, query: Option<&str>) -> Result<Uri, GatewayError> {
        let mut pq = String::with_capacity(
            self.config.base_path.len() + canonical_path.len() + 1 + query.map_or(0, str::len),
        );
        pq.push_str(&self.config.base_path);
        pq.push_str(canonical_path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let pq = PathAndQuery::try_from(pq).map_err(|e| GatewayError::Internal(e.to_string()))?;
        Uri::builder()
            .scheme(self.config.scheme.clone())
            .authority(self.config.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| GatewayError::Internal(e.to_string()))
    }

    /// Sends the request; the response headers must arrive within the response timeout.
    /// Connection failures are 502, timeouts 504.
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, GatewayError> {
        *req.version_mut() = Version::HTTP_11;
        match tokio::time::timeout(self.config.response_timeout, self.client.request(req)).await {
            Err(_) => Err(GatewayError::UpstreamTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                if caused_by::<http_body_util::LengthLimitError>(&e) {
                    return Err(GatewayError::BodyTooLarge);
                }
                let text = error_chain(&e);
                if text.contains("timed out") || text.contains("timeout") {
                    Err(GatewayError::UpstreamTimeout)
                } else {
                    Err(GatewayError::UpstreamUnavailable(text))
                }
            }
        }
    }
}

fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<E>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// All upstreams by name.
#[derive(Debug, Clone, Default)]
pub struct Upstreams(HashMap<Arc<str>, Upstream>);

impl Upstreams {
    pub fn new<'a>(
        configs: impl IntoIterator<Item = &'a UpstreamConfig>,
    ) -> Result<Upstreams, TlsError> {
        let mut map = HashMap::new();
        for c in configs {
            map.insert(Arc::from(c.name.as_str()), Upstream::new(c.clone())?);
        }
        Ok(Upstreams(map))
    }

    pub fn get(&self, name: &str) -> Option<&Upstream> {
        self.0.get(name)
    }
}
