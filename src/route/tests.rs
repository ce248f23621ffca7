//! Unit tests for the pure route matcher: hosts, paths, methods, headers, order, rewrites.

use super::*;
use crate::config::Config;
use http::HeaderValue;

const ROUTES: &str = r#"listeners:
  web:
    bind: 127.0.0.1:0
    pool: web
    routes:
      - match: { host: api.example.com }
        pool: api
      - match: { host: "*.example.com", path_prefix: /static/ }
        pool: static
        strip_prefix: /static
      - match: { path: /exact, method: GET, header: { name: X-Canary, value: "1" } }
        pool: canary
      - match: { header: { name: X-Debug } }
        pool: debug
pools:
  web: { backends: [127.0.0.1:9001] }
  api: { backends: [127.0.0.1:9002] }
  static: { backends: [127.0.0.1:9003] }
  canary: { backends: [127.0.0.1:9004] }
  debug: { backends: [127.0.0.1:9005] }
"#;

fn router(text: &str) -> Router<String> {
    let config = Config::parse(text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let listener = &config.listeners["web"];
    let routes = listener
        .routes
        .iter()
        .map(|r| Route {
            config: r.clone(),
            target: r.action.pool_names().next().unwrap_or("-").to_owned(),
        })
        .collect();
    Router::new(routes, listener.pool.clone())
}

fn pick(router: &Router<String>, method: &str, target: &str, headers: &[(&str, &str)]) -> String {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let uri: Uri = target.parse().unwrap();
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let view = RequestView::new(&method, &uri, &map);
    router
        .route(&view)
        .map_or_else(|| "404".to_owned(), |r| r.target.clone())
}

#[test]
fn host_exact_is_case_insensitive_and_ignores_port() {
    let r = router(ROUTES);
    assert_eq!(pick(&r, "GET", "/", &[("host", "api.example.com")]), "api");
    assert_eq!(
        pick(&r, "GET", "/", &[("host", "API.Example.COM:8080")]),
        "api"
    );
    assert_eq!(pick(&r, "GET", "/", &[("host", "api.example.com.")]), "api");
    assert_eq!(pick(&r, "GET", "/", &[("host", "api.example.org")]), "web");
    // HTTP/2 and absolute-form requests carry the host in the URI.
    assert_eq!(pick(&r, "GET", "http://api.example.com:81/x", &[]), "api");
}

#[test]
fn wildcard_matches_any_depth_but_not_the_bare_domain() {
    let r = router(ROUTES);
    let host = |h: &str| pick(&r, "GET", "/static/a.css", &[("host", h)]);
    assert_eq!(host("cdn.example.com"), "static");
    assert_eq!(host("a.b.c.EXAMPLE.com"), "static");
    assert_eq!(host("example.com"), "web");
    assert_eq!(host("badexample.com"), "web");
}

#[test]
fn path_prefix_is_segment_aware() {
    let r = router(ROUTES);
    let path = |p: &str| pick(&r, "GET", p, &[("host", "cdn.example.com")]);
    assert_eq!(path("/static"), "static");
    assert_eq!(path("/static/"), "static");
    assert_eq!(path("/static/x/y?v=1"), "static");
    assert_eq!(path("/staticx"), "web");
    assert_eq!(path("/"), "web");
}

#[test]
fn exact_path_method_and_header_must_all_hold() {
    let r = router(ROUTES);
    let canary = [("x-canary", "1")];
    assert_eq!(pick(&r, "GET", "/exact", &canary), "canary");
    assert_eq!(pick(&r, "GET", "/exact?q=1", &canary), "canary");
    assert_eq!(pick(&r, "POST", "/exact", &canary), "web");
    assert_eq!(pick(&r, "GET", "/exact/", &canary), "web");
    assert_eq!(pick(&r, "GET", "/exact", &[("x-canary", "2")]), "web");
    assert_eq!(
        pick(&r, "GET", "/exact", &[("x-canary", "2"), ("x-canary", "1")]),
        "canary",
        "any of several values"
    );
    assert_eq!(pick(&r, "GET", "/exact", &[]), "web");
    assert_eq!(
        pick(&r, "GET", "/x", &[("x-debug", "")]),
        "debug",
        "presence"
    );
}

#[test]
fn first_match_wins_and_without_default_nothing_matches() {
    let r = router(ROUTES);
    // Both the api host route and the header route match: the earlier one wins.
    assert_eq!(
        pick(
            &r,
            "GET",
            "/",
            &[("host", "api.example.com"), ("x-debug", "1")]
        ),
        "api"
    );
    let no_default = router(&ROUTES.replace("    pool: web\n", ""));
    assert_eq!(pick(&no_default, "GET", "/", &[("host", "other")]), "404");
    assert_eq!(pick(&no_default, "GET", "/", &[]), "404");
    assert!(no_default.default_target().is_none());
}

#[test]
fn host_without_port_handles_ipv6_and_oddities() {
    assert_eq!(host_without_port("[::1]:8080"), "[::1]");
    assert_eq!(host_without_port("[::1]"), "[::1]");
    assert_eq!(host_without_port("a.b:"), "a.b");
    assert_eq!(host_without_port("a.b:x"), "a.b:x");
    assert_eq!(host_without_port(":80"), ":80");
}

#[test]
fn strip_prefix_keeps_query_and_a_leading_slash() {
    assert_eq!(
        strip_prefix("/static/css/a.css", "/static").as_deref(),
        Some("/css/a.css")
    );
    assert_eq!(strip_prefix("/static", "/static").as_deref(), Some("/"));
    assert_eq!(
        strip_prefix("/static?v=2", "/static").as_deref(),
        Some("/?v=2")
    );
    assert_eq!(
        strip_prefix("/static/?v=2", "/static").as_deref(),
        Some("/?v=2")
    );
    assert_eq!(strip_prefix("/staticx", "/static"), None);
    assert_eq!(strip_prefix("/other", "/static"), None);
    assert_eq!(strip_prefix("/a/b", "/").as_deref(), Some("/a/b"));
}

#[test]
fn edits_remove_then_set() {
    let config = Config::parse(
        &ROUTES.replace(
            "        pool: canary\n",
            "        pool: canary\n        request_headers: { set: { X-Route: canary, X-Debug: kept }, remove: [X-Debug, X-Gone] }\n",
        ),
        "t.yaml",
    )
    .unwrap();
    let edits = &config.listeners["web"].routes[2].request_headers;
    let mut headers = HeaderMap::new();
    headers.insert("x-debug", HeaderValue::from_static("old"));
    headers.append("x-route", HeaderValue::from_static("a"));
    headers.append("x-route", HeaderValue::from_static("b"));
    headers.insert("x-gone", HeaderValue::from_static("1"));
    apply_edits(&mut headers, edits);
    assert_eq!(headers["x-route"], "canary");
    assert_eq!(headers.get_all("x-route").iter().count(), 1);
    assert_eq!(headers["x-debug"], "kept");
    assert!(!headers.contains_key("x-gone"));
}
