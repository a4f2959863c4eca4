//! What a config's route table does, for operators: `portcullis routes explain METHOD PATH`
//! (the path as the gateway canonicalizes it, the route it reaches or why none, what that
//! route demands and where it forwards) and `portcullis check`'s warnings (routes, or methods
//! of routes, that can never receive a request). The same `routes::resolve` the gateway runs.

use http::{Method, Uri, Version};

use crate::config::Config;
use crate::oauth::{Endpoint, METADATA_PATH};
use crate::routes::{ResolveError, Resolved, Route, RouteAuth, canonicalize, resolve};
use crate::web::Page;

/// Paths the gateway serves itself.
fn own(path: &str) -> bool {
    Endpoint::for_path(path).is_some() || Page::for_path(path).is_some()
}

/// What `routes explain` found.
#[derive(Debug)]
pub struct Explanation {
    /// Lines to print.
    pub lines: Vec<String>,
    /// The request would be forwarded or served by Portcullis (not refused).
    pub reaches: bool,
}

fn describe(r: &Route) -> String {
    match r.line {
        0 => format!("{:?}", &*r.id),
        line => format!("{:?} (line {line})", &*r.id),
    }
}

/// What the gateway would do with `method` `target` (a path with an optional query).
pub fn explain(config: &Config, method: &Method, target: &str) -> Explanation {
    let mut lines = vec![format!("{method} {target}")];
    let uri: Uri = match target.parse() {
        Ok(u) if target.starts_with('/') => u,
        _ => {
            lines.push(
                "  refused (400): not a request target (an origin-form path such as /api/x?y=1)"
                    .into(),
            );
            return Explanation {
                lines,
                reaches: false,
            };
        }
    };
    match canonicalize(uri.path()) {
        Ok(c) => lines.push(format!("  canonical path: {c}")),
        Err(e) => lines.push(format!("  strict canonical form: none ({e})")),
    }
    let reaches = match resolve(&config.routes, method, Version::HTTP_11, &uri, own) {
        Ok(Resolved::Own(path)) => {
            let what = match Endpoint::for_path(&path) {
                Some(Endpoint::Token) => "the token endpoint",
                Some(Endpoint::Revoke) => "the revocation endpoint",
                Some(Endpoint::Introspect) => "the introspection endpoint",
                Some(Endpoint::Metadata) => "the authorization server metadata",
                None => "a sign-in, consent or management page",
            };
            lines.push(format!("  served by Portcullis: {what} (never forwarded)"));
            true
        }
        Ok(Resolved::Route(route, canonical)) => {
            lines.push(format!("  route: {}", describe(route)));
            lines.push(match &route.auth {
                RouteAuth::Public => {
                    "  needs: nothing (auth: none); identity headers are still stripped".into()
                }
                RouteAuth::Bearer { scopes } if scopes.is_empty() => {
                    "  needs: a valid bearer token (no particular scope)".into()
                }
                RouteAuth::Bearer { scopes } => {
                    format!("  needs: a bearer token with the scopes {scopes}")
                }
            });
            match config.upstreams.get(&*route.upstream) {
                Some(up) => {
                    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                    lines.push(format!(
                        "  forwards to: upstream {:?}, {}{}{query}",
                        &*route.upstream,
                        up.url(),
                        canonical.as_str()
                    ));
                }
                None => lines.push(format!("  forwards to: upstream {:?}", &*route.upstream)),
            }
            true
        }
        Err(ResolveError::NoRoute) => {
            let canonical = canonicalize(uri.path()).map(|c| c.into_owned());
            let covering: Vec<&Route> = match &canonical {
                Ok(c) => config.routes.iter().filter(|r| r.covers(c)).collect(),
                Err(_) => Vec::new(),
            };
            if canonical.as_deref().is_ok_and(crate::routes::is_reserved) {
                lines.push("  refused (404): /o/ is reserved for the OAuth endpoints, and this is none of them".into());
            } else if covering.is_empty() {
                lines.push("  refused (404): no route's path covers it".into());
            } else {
                lines.push(format!(
                    "  refused (404): routes cover the path, but none takes {method}:"
                ));
                for r in covering {
                    let methods = r
                        .methods
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .map(Method::as_str)
                        .collect::<Vec<_>>()
                        .join(", ");
                    lines.push(format!("    {} takes {methods}", describe(r)));
                }
            }
            false
        }
        Err(e) => {
            lines.push(format!("  refused (400): {e}"));
            false
        }
    };
    Explanation { lines, reaches }
}

/// Routes, or methods of routes, that no request can reach, with the line that defines each.
pub fn warnings(config: &Config) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let routes: Vec<&Route> = config.routes.iter().collect();
    for r in &routes {
        // Earlier routes (in matching order) of the same length whose path covers every path
        // this one covers: they take the methods they share.
        let covering: Vec<&&Route> = routes
            .iter()
            .filter(|s| s.index < r.index && s.prefix.len() == r.prefix.len())
            .filter(|s| {
                s.prefix.eq_ignore_ascii_case(&r.prefix)
                    && (s.case_insensitive || (s.prefix == r.prefix && !r.case_insensitive))
                    && (s.path_options.allow_semicolons || !r.path_options.allow_semicolons)
            })
            .collect();
        let takes = |s: &Route, m: Option<&Method>| match (&s.methods, m) {
            (None, _) => true,
            (Some(ms), Some(m)) => ms.contains(m),
            (Some(_), None) => false,
        };
        match &r.methods {
            None => {
                if let Some(s) = covering.iter().find(|s| takes(s, None)) {
                    out.push((
                        r.line,
                        format!(
                            "route {} is never used: route {} takes every request it would",
                            describe(r),
                            describe(s)
                        ),
                    ));
                }
            }
            Some(methods) => {
                let mut lost: Vec<String> = Vec::new();
                for m in methods.iter() {
                    if *m == Method::CONNECT {
                        lost.push("CONNECT (refused before routing: only origin-form requests are proxied)".into());
                    } else if let Some(s) = covering.iter().find(|s| takes(s, Some(m))) {
                        lost.push(format!("{m} (route {} takes it)", describe(s)));
                    }
                }
                if lost.len() == methods.len() {
                    out.push((
                        r.line,
                        format!("route {} is never used: {}", describe(r), lost.join("; ")),
                    ));
                } else if !lost.is_empty() {
                    out.push((
                        r.line,
                        format!(
                            "route {} can never receive {}",
                            describe(r),
                            lost.join("; ")
                        ),
                    ));
                }
            }
        }
        if r.prefix
            .trim_end_matches('/')
            .eq_ignore_ascii_case(METADATA_PATH)
        {
            out.push((
                r.line,
                format!(
                    "route {}: {METADATA_PATH} itself is Portcullis' own metadata endpoint; only paths below it reach this route",
                    describe(r)
                ),
            ));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(routes: &str) -> Config {
        let text = format!(
            "
listen: 127.0.0.1:8080
store:
  sqlite: data/p.db
oauth:
  scopes: {{ read: Read, write: Write }}
upstreams:
  legacy: {{ url: http://10.0.0.1:9000/base }}
routes:
{routes}"
        );
        Config::parse(&text, Path::new("t.yaml"), Path::new("/etc")).unwrap()
    }

    #[test]
    fn explanations() {
        let c = config(
            "  - { path: /api/users, methods: [GET, HEAD], scopes: [read], upstream: legacy }
  - { path: /api, methods: [POST], scopes: [write], upstream: legacy }
  - { path: /public, auth: none, upstream: legacy }
",
        );
        let cases: &[(&str, &str, bool, &[&str])] = &[
            (
                "GET",
                "/api/./users//7?x=1",
                true,
                &[
                    "  canonical path: /api/users/7",
                    "  route: \"GET,HEAD /api/users\" (line 10)",
                    "  needs: a bearer token with the scopes read",
                    "  forwards to: upstream \"legacy\", http://10.0.0.1:9000/base/api/users/7?x=1",
                ],
            ),
            (
                "GET",
                "/public/a",
                true,
                &["  needs: nothing (auth: none); identity headers are still stripped"],
            ),
            (
                "DELETE",
                "/api/users/7",
                false,
                &[
                    "  refused (404): routes cover the path, but none takes DELETE:",
                    "    \"GET,HEAD /api/users\" (line 10) takes GET, HEAD",
                    "    \"POST /api\" (line 11) takes POST",
                ],
            ),
            (
                "GET",
                "/nowhere",
                false,
                &["  refused (404): no route's path covers it"],
            ),
            (
                "POST",
                "/o/token/",
                true,
                &["  served by Portcullis: the token endpoint (never forwarded)"],
            ),
            (
                "GET",
                "/O/other",
                false,
                &[
                    "  refused (404): /o/ is reserved for the OAuth endpoints, and this is none of them",
                ],
            ),
            (
                "GET",
                "/api/users/%252e%252e/x",
                false,
                &["  refused (400): "],
            ),
            (
                "GET",
                "api",
                false,
                &["  refused (400): not a request target"],
            ),
        ];
        for (method, target, reaches, want) in cases {
            let e = explain(&c, &method.parse().unwrap(), target);
            assert_eq!(e.reaches, *reaches, "{method} {target}: {:?}", e.lines);
            for line in *want {
                assert!(
                    e.lines.iter().any(|l| l.starts_with(line)),
                    "{method} {target}: no line {line:?} in {:#?}",
                    e.lines
                );
            }
        }
    }

    #[test]
    fn routes_that_cannot_be_reached() {
        let cases: &[(&str, &[(u64, &str)])] = &[
            (
                "  - { path: /api, upstream: legacy }
  - { path: /other, methods: [GET], upstream: legacy }
",
                &[],
            ),
            (
                "  - { path: /API, case_insensitive: true, upstream: legacy }
  - { path: /api, methods: [GET], upstream: legacy }
",
                &[(
                    11,
                    "route \"GET /api\" (line 11) is never used: GET (route \"/API\" (line 10) takes it)",
                )],
            ),
            (
                "  - { path: /Api, case_insensitive: true, methods: [GET], upstream: legacy }
  - { path: /api, methods: [GET, POST], upstream: legacy }
",
                &[(
                    11,
                    "route \"GET,POST /api\" (line 11) can never receive GET (route \"GET /Api\" (line 10) takes it)",
                )],
            ),
            (
                "  - { path: /api, methods: [GET, CONNECT], upstream: legacy }
",
                &[(
                    10,
                    "route \"GET,CONNECT /api\" (line 10) can never receive CONNECT (refused before routing",
                )],
            ),
            (
                "  - { path: /API, case_insensitive: true, upstream: legacy }
  - { path: /api, upstream: legacy }
",
                &[(
                    11,
                    "route \"/api\" (line 11) is never used: route \"/API\" (line 10) takes every request it would",
                )],
            ),
            (
                // The exact route first: the case-insensitive one still gets /Api and /API.
                "  - { path: /api, upstream: legacy }
  - { path: /API, case_insensitive: true, upstream: legacy }
",
                &[],
            ),
            (
                "  - { path: /.well-known/oauth-authorization-server, upstream: legacy }
",
                &[(
                    10,
                    "route \"/.well-known/oauth-authorization-server\" (line 10): /.well-known/oauth-authorization-server itself is Portcullis' own",
                )],
            ),
        ];
        for (routes, want) in cases {
            let got = warnings(&config(routes));
            assert_eq!(got.len(), want.len(), "{routes}: {got:#?}");
            for ((line, text), (want_line, want_text)) in got.iter().zip(want.iter()) {
                assert_eq!(line, want_line, "{routes}");
                assert!(text.starts_with(want_text), "{routes}: {text}");
            }
        }
    }
}
