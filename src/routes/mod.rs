//! The route table: which upstream serves a canonical path, and what authorization it needs;
//! where a request target leads (`resolve`). Pure and IO-free; built once from validated
//! config and shared read-only.

mod path;
mod resolve;

use std::sync::Arc;

use http::Method;

use crate::scope::ScopeSet;

pub use path::{PathError, PathOptions, canonicalize, canonicalize_with};
pub use resolve::{CanonicalPath, ResolveError, Resolved, resolve};

/// True when a canonical path lies in the authorization server's `/o/` namespace, which is
/// never proxied: its first segment is `o` in any case (an upstream may match paths ignoring
/// case), and also when that segment only continues with `;` parameters or an encoded
/// separator that an upstream could read as the segment's end (`/o;x/token/`, `/o%2Ftoken/`,
/// forms a route's legacy opt-ins let through).
pub fn is_reserved(canonical: &str) -> bool {
    // On bytes, the second one first: it rules out nearly every path (every request's is
    // checked), with no search for the segment's end and no upper-cased copy.
    let [b'/', o, after @ ..] = canonical.as_bytes() else {
        return false;
    };
    if !o.eq_ignore_ascii_case(&b'o') {
        return false;
    }
    let after = &after[..after.iter().position(|&b| b == b'/').unwrap_or(after.len())];
    let escaped = |e: &[u8]| after.get(..3).is_some_and(|p| p.eq_ignore_ascii_case(e));
    after.is_empty() || after[0] == b';' || escaped(b"%2F") || escaped(b"%5C")
}

/// What a route demands of a request before it is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAuth {
    /// Forwarded without a token (`auth: none`). Identity headers are still stripped.
    Public,
    /// A valid bearer token holding every one of these scopes (possibly none).
    Bearer { scopes: ScopeSet },
}

/// One entry of the `routes:` list, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// Stable name used as the metrics label and in logs (from `id:` or derived from the entry).
    pub id: Arc<str>,
    /// Canonical, segment-aware path prefix.
    pub prefix: Box<str>,
    /// Methods this route answers; `None` means all methods.
    pub methods: Option<Box<[Method]>>,
    pub auth: RouteAuth,
    /// Name of the upstream in the `upstreams:` map.
    pub upstream: Arc<str>,
    /// The upstream's position in that map (sorted by name), which is its place in the
    /// gateway's upstreams: the request path finds it without hashing the name.
    pub upstream_index: usize,
    /// Ambiguous path forms this route accepts (a legacy API that needs them).
    pub path_options: PathOptions,
    /// Match the prefix ignoring ASCII case (for case-insensitive backends).
    pub case_insensitive: bool,
    /// Largest request body forwarded; larger is 413.
    pub max_body_bytes: u64,
    /// Position in the route table (set by [`RouteTable::new`]).
    pub index: usize,
    /// The config line that defines it (0 when it comes from no file).
    pub line: u64,
}

impl Route {
    /// True when `path` is the prefix itself or lies below it at a segment boundary:
    /// `/api` covers `/api` and `/api/x`, never `/apix`.
    pub fn covers(&self, path: &str) -> bool {
        let prefix = &*self.prefix;
        let rest = if self.case_insensitive {
            path.get(..prefix.len())
                .filter(|head| head.eq_ignore_ascii_case(prefix))
                .map(|_| &path[prefix.len()..])
        } else {
            path.strip_prefix(prefix)
        };
        match rest {
            None => false,
            Some(rest) => {
                rest.is_empty()
                    || prefix.ends_with('/')
                    || rest.starts_with('/')
                    // With `;` parameters allowed, `/jsp;jsessionid=1/x` lies below `/jsp`.
                    || (self.path_options.allow_semicolons && rest.starts_with(';'))
            }
        }
    }

    pub fn allows_method(&self, method: &Method) -> bool {
        self.methods
            .as_deref()
            .is_none_or(|methods| methods.contains(method))
    }
}

/// Routes ordered so that the first match is the longest matching prefix.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Self {
        // Stable sort: among equal prefixes the config order is kept, and config validation
        // has already rejected two routes with one prefix and an overlapping method.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        for (i, r) in routes.iter_mut().enumerate() {
            r.index = i;
        }
        RouteTable { routes }
    }

    /// The route whose prefix covers `path` and whose methods include `method`, longest
    /// prefix first. `path` must already be canonical.
    pub fn find(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.allows_method(method) && r.covers(path))
    }

    /// The route whose [`Route::index`] is `index`.
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// The routes, in matching order (`Route::index` order).
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, prefix: &str, methods: Option<&[Method]>) -> Route {
        Route {
            id: id.into(),
            prefix: prefix.into(),
            methods: methods.map(|m| m.to_vec().into_boxed_slice()),
            auth: RouteAuth::Public,
            upstream: "legacy".into(),
            upstream_index: 0,
            path_options: PathOptions::STRICT,
            case_insensitive: false,
            max_body_bytes: 1024,
            index: 0,
            line: 0,
        }
    }

    #[test]
    fn longest_matching_prefix_and_method_wins() {
        let table = RouteTable::new(vec![
            route("users", "/api/users", Some(&[Method::GET, Method::HEAD])),
            route(
                "write",
                "/api",
                Some(&[Method::POST, Method::PUT, Method::PATCH, Method::DELETE]),
            ),
            route("groups", "/api/groups", None),
            route("public", "/public", None),
            route("slash", "/static/", None),
        ]);
        let cases: &[(Method, &str, Option<&str>)] = &[
            (Method::GET, "/api/users", Some("users")),
            (Method::GET, "/api/users/1", Some("users")),
            (Method::HEAD, "/api/users/1", Some("users")),
            (Method::POST, "/api/users/1", Some("write")),
            (Method::GET, "/api/usersx", None),
            (Method::GET, "/api", None),
            (Method::DELETE, "/api", Some("write")),
            (Method::GET, "/api/groups/7", Some("groups")),
            (Method::POST, "/api/groups", Some("groups")),
            (Method::GET, "/apix", None),
            (Method::POST, "/apix", None),
            (Method::GET, "/public", Some("public")),
            (Method::OPTIONS, "/public/a", Some("public")),
            (Method::GET, "/static/", Some("slash")),
            (Method::GET, "/static/a.css", Some("slash")),
            (Method::GET, "/static", None),
            (Method::GET, "/", None),
        ];
        for (method, path, want) in cases {
            let got = table.find(method, path).map(|r| &*r.id);
            assert_eq!(got, *want, "{method} {path}");
        }
    }

    #[test]
    fn case_insensitive_routes() {
        let mut legacy = route("legacy", "/Legacy/API", None);
        legacy.case_insensitive = true;
        let table = RouteTable::new(vec![legacy, route("exact", "/Exact", None)]);
        let cases = [
            ("/legacy/api", Some("legacy")),
            ("/LEGACY/Api/x", Some("legacy")),
            ("/legacy/apix", None),
            ("/Exact", Some("exact")),
            ("/exact", None),
            ("/é", None),
        ];
        for (path, want) in cases {
            assert_eq!(
                table.find(&Method::GET, path).map(|r| &*r.id),
                want,
                "{path}"
            );
        }
    }

    #[test]
    fn the_oauth_namespace_is_reserved_in_every_spelling() {
        let cases = [
            ("/o", true),
            ("/o/", true),
            ("/o/token/", true),
            ("/O/token/", true),
            ("/o;jsessionid=1/token/", true),
            ("/o%2Ftoken/", true),
            ("/o%2ftoken/", true),
            ("/o%5Ctoken/", true),
            ("/", false),
            ("/oo/token/", false),
            ("/o%2Etoken", false),
            ("/api/o/token/", false),
            ("/organisations", false),
            ("/.well-known/oauth-authorization-server", false),
            ("o/token", false),
            ("/O", true),
            ("/o;", true),
            ("/o%5c", true),
            ("/o%2", false),
            ("/o%", false),
            ("/p/token/", false),
            ("", false),
            ("//o/token/", false),
        ];
        for (path, want) in cases {
            assert_eq!(is_reserved(path), want, "{path}");
        }
    }

    #[test]
    fn root_prefix_covers_everything() {
        let table = RouteTable::new(vec![route("all", "/", None)]);
        for p in ["/", "/a", "/a/b/"] {
            assert_eq!(table.find(&Method::GET, p).map(|r| &*r.id), Some("all"));
        }
    }
}
