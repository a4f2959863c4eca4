//! Where a request target leads: the gateway's own endpoints, a route, or nowhere. Path
//! canonicalization is decided here once: the strict canonical form is tried first; a form
//! only some routes accept (encoded slashes, `;`, double encoding) is accepted when the route
//! it lands on opts in, and then re-canonicalized with that route's options. Nothing in the
//! `/o/` namespace is ever routed, whatever its spelling. Pure: tested as a table.

use std::borrow::Cow;

use http::uri::PathAndQuery;
use http::{Method, Uri, Version};

use super::{
    PathError, PathOptions, Route, RouteTable, canonicalize, canonicalize_with, is_reserved,
};

/// Where a request goes.
#[derive(Debug)]
pub enum Resolved<'a> {
    /// A path the gateway serves itself (as `own` said), in canonical form.
    Own(String),
    /// A route, and the canonical path matched against it (and forwarded).
    Route(&'a Route, CanonicalPath),
}

/// A routed request's canonical path. Nearly always the request's own path is canonical
/// already: then it is the request's parsed target, shared (one reference count) rather than
/// copied into a string of its own on every request, and the upstream is sent that target
/// as it came ([`crate::proxy::Upstream::path_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanonicalPath {
    /// The request's target (path and query), whose path is canonical as it came.
    Target(PathAndQuery),
    /// The canonical form of a path that was not canonical as it came.
    Rewritten(String),
}

impl CanonicalPath {
    /// `canonical`, the canonical form of `uri`'s path: the target itself when that form is
    /// the path as it came. Compared, not taken on trust from `Cow::Borrowed`: what is
    /// forwarded must be what was matched, and a rewrite may also come back unchanged (a
    /// lenient form re-canonicalized with the route's options).
    pub fn of(uri: &Uri, canonical: Cow<'_, str>) -> CanonicalPath {
        match uri.path_and_query() {
            Some(target) if *canonical == *target.path() => CanonicalPath::Target(target.clone()),
            _ => CanonicalPath::Rewritten(canonical.into_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            CanonicalPath::Target(target) => target.path(),
            CanonicalPath::Rewritten(path) => path,
        }
    }
}

/// Why a request target leads nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    #[error("no route matches this method and path")]
    NoRoute,
}

/// Resolves a request target. `own` tells the gateway's own paths (canonical), which win over
/// any route.
pub fn resolve<'a>(
    table: &'a RouteTable,
    method: &Method,
    version: Version,
    uri: &Uri,
    own: impl Fn(&str) -> bool,
) -> Result<Resolved<'a>, ResolveError> {
    // Only origin-form targets: an absolute-form (or authority-form) HTTP/1 target could be
    // read differently by the upstream. HTTP/2 always carries scheme and authority.
    if version < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err(PathError::NotOriginForm.into());
    }
    let path = uri.path();
    match canonicalize(path) {
        Ok(canonical) => {
            if own(&canonical) {
                return Ok(Resolved::Own(canonical.into_owned()));
            }
            if is_reserved(&canonical) {
                return Err(ResolveError::NoRoute);
            }
            let route = table
                .find(method, &canonical)
                .ok_or(ResolveError::NoRoute)?;
            Ok(Resolved::Route(route, CanonicalPath::of(uri, canonical)))
        }
        Err(
            strict
            @ (PathError::EncodedSeparator | PathError::Parameter | PathError::DoubleEncoded),
        ) => {
            let lenient = canonicalize_with(path, PathOptions::LENIENT)?;
            if is_reserved(&lenient) {
                return Err(strict.into());
            }
            let route = table.find(method, &lenient).ok_or(strict)?;
            let canonical = canonicalize_with(path, route.path_options)?;
            Ok(Resolved::Route(route, CanonicalPath::of(uri, canonical)))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::RouteAuth;

    /// The request's target is forwarded only when the canonical path is its path, however
    /// the canonical form was come by; what is forwarded is what was matched.
    #[test]
    fn a_canonical_path_is_the_target_only_when_it_is_its_path() {
        let uri: Uri = "/a/b?q=1".parse().unwrap();
        let cases: [(Cow<'_, str>, bool); 4] = [
            (Cow::Borrowed("/a/b"), true),
            (Cow::Borrowed("/a/c"), false),
            (Cow::Owned("/a/b".into()), true),
            (Cow::Owned("/a/b/".into()), false),
        ];
        for (canonical, shared) in cases {
            let path = CanonicalPath::of(&uri, canonical.clone());
            assert_eq!(
                matches!(path, CanonicalPath::Target(_)),
                shared,
                "{canonical}"
            );
            assert_eq!(path.as_str(), &*canonical);
        }
    }

    fn route(id: &str, prefix: &str, options: PathOptions) -> Route {
        Route {
            id: id.into(),
            prefix: prefix.into(),
            methods: None,
            auth: RouteAuth::Public,
            upstream: "up".into(),
            upstream_index: 0,
            path_options: options,
            case_insensitive: false,
            max_body_bytes: 1024,
            index: 0,
            line: 0,
        }
    }

    #[test]
    fn request_targets() {
        let table = RouteTable::new(vec![
            route("api", "/api", PathOptions::STRICT),
            route(
                "files",
                "/files",
                PathOptions {
                    allow_encoded_slashes: true,
                    ..PathOptions::STRICT
                },
            ),
            route(
                "jsp",
                "/jsp",
                PathOptions {
                    allow_semicolons: true,
                    ..PathOptions::STRICT
                },
            ),
            route(
                "raw",
                "/raw",
                PathOptions {
                    allow_double_encoding: true,
                    ..PathOptions::STRICT
                },
            ),
            route("all", "/", PathOptions::LENIENT),
        ]);
        let own = |p: &str| p == "/o/token/" || p == "/.well-known/meta";
        use ResolveError::*;
        type Want = Result<(&'static str, &'static str), ResolveError>;
        let cases: &[(Version, &str, Want)] = &[
            (Version::HTTP_11, "/api/x", Ok(("api", "/api/x"))),
            (
                Version::HTTP_11,
                "/api//x/./y/../z",
                Ok(("api", "/api/x/z")),
            ),
            (Version::HTTP_11, "/o/token/", Ok(("own", "/o/token/"))),
            (Version::HTTP_11, "//o/token/", Ok(("own", "/o/token/"))),
            (Version::HTTP_11, "/x/../o/token/", Ok(("own", "/o/token/"))),
            (Version::HTTP_11, "/%6f/token/", Ok(("own", "/o/token/"))),
            (
                Version::HTTP_11,
                "/.well-known/meta",
                Ok(("own", "/.well-known/meta")),
            ),
            (Version::HTTP_11, "/o/other", Err(NoRoute)),
            (Version::HTTP_11, "/O/token/", Err(NoRoute)),
            (
                Version::HTTP_11,
                "/o%2ftoken/",
                Err(BadPath(PathError::EncodedSeparator)),
            ),
            (
                Version::HTTP_11,
                "/o;a/token/",
                Err(BadPath(PathError::Parameter)),
            ),
            (
                Version::HTTP_11,
                "/files/a%2fb",
                Ok(("files", "/files/a%2Fb")),
            ),
            // The route a lenient form lands on decides; a lenient catch-all does not rescue it.
            (
                Version::HTTP_11,
                "/api/a%2fb",
                Err(BadPath(PathError::EncodedSeparator)),
            ),
            (
                Version::HTTP_11,
                "/other/a%2fb",
                Ok(("all", "/other/a%2Fb")),
            ),
            (Version::HTTP_11, "/jsp;s=1/x", Ok(("jsp", "/jsp;s=1/x"))),
            (Version::HTTP_11, "/raw/%252e", Ok(("raw", "/raw/%252e"))),
            (
                Version::HTTP_11,
                "/files/%252e",
                Err(BadPath(PathError::DoubleEncoded)),
            ),
            (
                Version::HTTP_11,
                "/api/%2e%2e/%2e%2e/x",
                Err(BadPath(PathError::AboveRoot)),
            ),
            (
                Version::HTTP_11,
                "/api/%c0%ae",
                Err(BadPath(PathError::OverlongUtf8)),
            ),
            (
                Version::HTTP_11,
                "http://h/api/x",
                Err(BadPath(PathError::NotOriginForm)),
            ),
            (Version::HTTP_2, "http://h/api/x", Ok(("api", "/api/x"))),
        ];
        for (version, target, want) in cases {
            let uri: Uri = target.parse().unwrap();
            let got = resolve(&table, &Method::GET, *version, &uri, own).map(|r| match r {
                Resolved::Own(p) => ("own".to_owned(), p),
                Resolved::Route(route, p) => {
                    // The request's target is shared exactly when its path is the canonical one.
                    let shared = matches!(p, CanonicalPath::Target(_));
                    assert_eq!(shared, p.as_str() == uri.path(), "{target}");
                    (route.id.to_string(), p.as_str().to_owned())
                }
            });
            let got = got.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
            assert_eq!(got, want.as_ref().map(|w| *w), "{version:?} {target}");
        }
        // Without a catch-all, the strict error stands.
        let strict = RouteTable::new(vec![route("api", "/api", PathOptions::STRICT)]);
        let uri: Uri = "/api/a%2fb".parse().unwrap();
        assert!(matches!(
            resolve(&strict, &Method::GET, Version::HTTP_11, &uri, own),
            Err(BadPath(PathError::EncodedSeparator))
        ));
    }
}
