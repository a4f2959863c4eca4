//! `upstreams`: the backends routes forward to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, Scheme};

use super::Validator;
use super::defaults::{CONNECT_TIMEOUT_MS, RESPONSE_TIMEOUT_MS};
use super::raw::RawUpstream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Prepended to the canonical request path; empty or starting with `/`, no trailing `/`.
    pub base_path: String,
    pub connect_timeout: Duration,
    /// Time allowed from sending the request until the upstream's response headers arrive.
    pub response_timeout: Duration,
    /// Trust roots for an https:// upstream; `None`: the system's.
    pub ca_file: Option<PathBuf>,
}

impl UpstreamConfig {
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

impl Validator {
    pub(super) fn upstreams(
        &mut self,
        raw: &BTreeMap<String, RawUpstream>,
        base_dir: &Path,
    ) -> BTreeMap<String, UpstreamConfig> {
        let mut out = BTreeMap::new();
        for (name, up) in raw {
            let url = &up.url;
            let parsed = url.value.parse::<Uri>().ok().and_then(|uri| {
                let parts = uri.into_parts();
                Some((parts.scheme?, parts.authority?, parts.path_and_query))
            });
            let Some((scheme, authority, path_and_query)) = parsed else {
                self.at(&url.referenced, format!("`upstreams.{name}.url` must be an absolute URL such as http://127.0.0.1:9000, got {:?}", url.value));
                continue;
            };
            if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
                self.at(
                    &url.referenced,
                    format!("`upstreams.{name}.url` must be http:// or https://"),
                );
            }
            let ca_file = up.ca_file.as_ref().map(|ca| {
                let path = base_dir.join(&ca.value);
                if scheme != Scheme::HTTPS {
                    self.at(
                        &ca.referenced,
                        format!("`upstreams.{name}.ca_file` needs an https:// URL"),
                    );
                } else if !path.is_file() {
                    self.at(
                        &ca.referenced,
                        format!(
                            "`upstreams.{name}.ca_file`: no such file {}",
                            path.display()
                        ),
                    );
                }
                path
            });
            if authority.as_str().contains('@') {
                self.at(
                    &url.referenced,
                    format!("`upstreams.{name}.url`: credentials in the URL are not supported"),
                );
            }
            let mut base_path = String::new();
            if let Some(pq) = path_and_query {
                if pq.query().is_some() {
                    self.at(
                        &url.referenced,
                        format!("`upstreams.{name}.url` must not have a query"),
                    );
                }
                base_path = pq.path().trim_end_matches('/').to_owned();
            }
            let connect = self
                .positive(
                    &up.connect_timeout_ms,
                    &format!("upstreams.{name}.connect_timeout_ms"),
                )
                .unwrap_or(CONNECT_TIMEOUT_MS);
            let response = self
                .positive(
                    &up.response_timeout_ms,
                    &format!("upstreams.{name}.response_timeout_ms"),
                )
                .unwrap_or(RESPONSE_TIMEOUT_MS);
            out.insert(
                name.clone(),
                UpstreamConfig {
                    name: name.clone(),
                    scheme,
                    authority,
                    base_path,
                    connect_timeout: Duration::from_millis(connect),
                    response_timeout: Duration::from_millis(response),
                    ca_file,
                },
            );
        }
        out
    }
}
