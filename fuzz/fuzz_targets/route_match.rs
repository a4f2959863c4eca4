//! Route matching on a realistic table never panics, and a match always covers the path at a
//! segment boundary with an allowed method.
#![no_main]

use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use portcullis::config::Config;
use portcullis::routes::{RouteTable, canonicalize};

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut routes = String::new();
        for i in 0..48 {
            let methods = ["[GET, HEAD]", "[POST, PUT, PATCH, DELETE]"][i % 2];
            routes.push_str(&format!(
                "  - {{ path: /api/v{}/svc{}, methods: {methods}, scopes: [read], upstream: legacy }}\n",
                i % 3,
                i / 2
            ));
        }
        routes.push_str("  - { path: /, auth: none, upstream: legacy, methods: [OPTIONS] }\n");
        routes.push_str("  - { path: /static/, auth: none, upstream: legacy, case_insensitive: true }\n");
        let yaml = format!(
            "listen: 127.0.0.1:0\nstore: {{ sqlite: x.db }}\noauth: {{ scopes: {{ read: r }} }}\n\
             upstreams: {{ legacy: {{ url: http://127.0.0.1:9 }} }}\nroutes:\n{routes}"
        );
        Config::parse(&yaml, "fuzz.yaml".as_ref(), "/".as_ref()).expect("valid table").routes
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = [
        Method::GET,
        Method::POST,
        Method::HEAD,
        Method::DELETE,
        Method::OPTIONS,
    ][usize::from(m) % 5]
        .clone();
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(canonical) = canonicalize(path) else {
        return;
    };
    if let Some(route) = table().find(&method, &canonical) {
        assert!(
            route.covers(&canonical) && route.allows_method(&method),
            "{method} {canonical}"
        );
    }
});
