//! `routes`: which requests go where, and what they need.

use std::collections::{BTreeMap, BTreeSet};

use http::Method;
use serde_saphyr::Location;

use super::raw::RawRoute;
use super::{OAuthConfig, UpstreamConfig, Validator, join};
use crate::routes::{PathOptions, Route, RouteAuth, RouteTable, canonicalize_with, is_reserved};

impl Validator {
    pub(super) fn routes(
        &mut self,
        raw: &[RawRoute],
        oauth: &OAuthConfig,
        upstreams: &BTreeMap<String, UpstreamConfig>,
        default_max_body_bytes: u64,
    ) -> RouteTable {
        let mut routes: Vec<(Route, Location)> = Vec::new();
        let mut ids = BTreeSet::new();
        for (i, r) in raw.iter().enumerate() {
            let loc = r.path.referenced;
            let path = &r.path.value;
            let options = PathOptions {
                allow_encoded_slashes: r.allow_encoded_slashes.unwrap_or(false),
                allow_semicolons: r.allow_semicolons.unwrap_or(false),
                allow_double_encoding: r.allow_double_encoding.unwrap_or(false),
            };
            let prefix = match canonicalize_with(path, options) {
                Ok(c) if c == path.as_str() => path.clone(),
                Ok(c) => {
                    self.at(
                        &loc,
                        format!("route path {path:?} is not canonical; write it as {c:?}"),
                    );
                    c.into_owned()
                }
                Err(e) => {
                    self.at(&loc, format!("route path {path:?} is invalid: {e}"));
                    continue;
                }
            };
            if is_reserved(&prefix) {
                self.at(
                    &loc,
                    "the /o/ path namespace is reserved for the OAuth endpoints",
                );
            }
            let methods = r.methods.as_ref().map(|ms| {
                let mut out: Vec<Method> = Vec::new();
                for m in ms {
                    match Method::from_bytes(m.value.as_bytes()) {
                        Ok(method) if m.value.bytes().all(|b| b.is_ascii_uppercase()) => {
                            if !out.contains(&method) {
                                out.push(method)
                            }
                        }
                        _ => self.at(
                            &m.referenced,
                            format!(
                                "{:?} is not an HTTP method (write methods in upper case)",
                                m.value
                            ),
                        ),
                    }
                }
                if ms.is_empty() {
                    self.at(&loc, "`methods` is empty: omit it to allow every method");
                }
                out.into_boxed_slice()
            });
            let public = match &r.auth {
                None => false,
                Some(a) if a.value == "none" => true,
                Some(a) if a.value == "bearer" => false,
                Some(a) => {
                    self.at(
                        &a.referenced,
                        format!("`auth` must be `bearer` or `none`, got {:?}", a.value),
                    );
                    false
                }
            };
            let mut scopes: Vec<&str> = Vec::new();
            for s in r.scopes.iter().flatten() {
                if !oauth.scopes.contains_key(&s.value) {
                    self.at(
                        &s.referenced,
                        format!(
                            "unknown scope {:?} (defined: {})",
                            s.value,
                            join(oauth.scopes.keys())
                        ),
                    );
                } else {
                    scopes.push(&s.value);
                }
            }
            if public && r.scopes.is_some() {
                self.at(&loc, "a route with `auth: none` cannot require `scopes`");
            }
            let upstream_index = upstreams.keys().position(|k| *k == r.upstream.value);
            if upstream_index.is_none() {
                self.at(
                    &r.upstream.referenced,
                    format!(
                        "unknown upstream {:?} (defined: {})",
                        r.upstream.value,
                        join(upstreams.keys())
                    ),
                );
            }
            let id = match &r.id {
                Some(id) => id.value.clone(),
                None => match &methods {
                    Some(ms) => {
                        let names: Vec<&str> = ms.iter().map(Method::as_str).collect();
                        format!("{} {prefix}", names.join(","))
                    }
                    None => prefix.clone(),
                },
            };
            if !ids.insert(id.clone()) {
                self.at(
                    &loc,
                    format!("route id {id:?} is used twice; give one of them an `id:`"),
                );
            }
            let route = Route {
                id: id.into(),
                prefix: prefix.into(),
                methods,
                auth: if public {
                    RouteAuth::Public
                } else {
                    RouteAuth::Bearer {
                        scopes: scopes.into_iter().collect(),
                    }
                },
                upstream: r.upstream.value.as_str().into(),
                // A route naming no upstream fails the whole config (above).
                upstream_index: upstream_index.unwrap_or_default(),
                path_options: options,
                case_insensitive: r.case_insensitive.unwrap_or(false),
                max_body_bytes: self
                    .positive(&r.max_body_bytes, &format!("routes[{i}].max_body_bytes"))
                    .unwrap_or(default_max_body_bytes),
                index: 0,
                line: loc.line(),
            };
            if let Some((_, first)) = routes.iter().find(|(other, _)| {
                other.prefix == route.prefix
                    && match (&other.methods, &route.methods) {
                        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
                        _ => true,
                    }
            }) {
                self.at(
                    &loc,
                    format!(
                        "duplicate route: path {:?} with these methods is already routed at line {}",
                        route.prefix,
                        first.line()
                    ),
                );
            }
            routes.push((route, loc));
        }
        RouteTable::new(routes.into_iter().map(|(r, _)| r).collect())
    }
}
