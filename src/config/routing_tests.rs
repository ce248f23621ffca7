//! Config tests for routes, PROXY protocol and tunnel settings: accepted forms and refused
//! ones, each with its line, column and field path.

use super::*;

const ROUTED: &str = r#"listeners:
  web:
    bind: 0.0.0.0:8080
    protocol: http
    pool: web
    proxy_protocol: { mode: accept, trusted: [127.0.0.1/32, 10.0.0.0/8] }
    timeouts: { tunnel_idle: 10m }
    routes:
      - match: { host: api.example.com }
        pool: api
      - match: { host: "*.example.com", path_prefix: /static/ }
        pool: static
        strip_prefix: /static
      - match: { path: /exact, method: GET, header: { name: X-Canary, value: "1" } }
        pool: canary
        request_headers: { set: { X-Route: canary }, remove: [X-Debug] }
        response_headers: { set: { X-Served-By: sluice }, remove: [Server] }
  pg:
    bind: 127.0.0.1:6432
    protocol: tcp
    pool: web
    proxy_protocol: accept
pools:
  web: { backends: [127.0.0.1:9001], send_proxy: v2 }
  api: { backends: [127.0.0.1:9002], send_proxy: v1 }
  static: { backends: [127.0.0.1:9003] }
  canary: { backends: [127.0.0.1:9004] }
"#;

fn refuse(text: &str) -> ConfigError {
    Config::parse(text, "test.yaml").expect_err("config should be refused")
}

fn at(error: &ConfigError) -> (u32, u32) {
    let position = error.position.as_ref().expect("a position");
    (position.line, position.column)
}

#[test]
fn accepts_the_routing_example() {
    let config = Config::parse(ROUTED, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    let web = &config.listeners["web"];
    assert_eq!(web.pool.as_deref(), Some("web"));
    assert_eq!(web.routes.len(), 3);
    assert_eq!(
        web.routes[0].matcher.host,
        Some(HostPattern::Exact("api.example.com".into()))
    );
    assert_eq!(
        web.routes[1].matcher.host,
        Some(HostPattern::Wildcard(".example.com".into()))
    );
    assert_eq!(
        web.routes[1].matcher.path,
        Some(PathPattern::Prefix("/static".into()))
    );
    assert_eq!(web.routes[1].strip_prefix.as_deref(), Some("/static"));
    let canary = &web.routes[2];
    assert_eq!(canary.matcher.method, Some(http::Method::GET));
    assert_eq!(canary.request_headers.set[0].0, "x-route");
    assert_eq!(canary.response_headers.remove[0], "server");
    assert_eq!(web.timeouts.tunnel_idle, Duration::from_secs(600));
    let accept = web.proxy_protocol.as_ref().unwrap();
    assert!(accept.trusts("10.1.2.3".parse().unwrap()));
    assert!(!accept.trusts("192.0.2.1".parse().unwrap()));
    let pg = &config.listeners["pg"];
    assert!(
        pg.proxy_protocol
            .as_ref()
            .unwrap()
            .trusts("192.0.2.1".parse().unwrap())
    );
    assert_eq!(pg.timeouts.tunnel_idle, DEFAULT_TUNNEL_IDLE_TIMEOUT);
    assert_eq!(config.pools["web"].send_proxy, Some(SendProxy::V2));
    assert_eq!(config.pools["api"].send_proxy, Some(SendProxy::V1));
    assert_eq!(config.pools["static"].send_proxy, None);
}

#[test]
fn routes_without_a_default_pool_are_fine() {
    let text = ROUTED.replacen("    pool: web\n", "", 1);
    let config = Config::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listeners["web"].pool, None);
}

#[test]
fn route_to_a_missing_pool_names_its_index_line_and_column() {
    let error = refuse(&ROUTED.replace("pool: canary\n", "pool: canari\n"));
    assert_eq!(error.path, "listeners.web.routes[2].pool");
    assert_eq!(at(&error), (15, 15));
    assert!(
        error.message.contains("no pool named \"canari\""),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("test.yaml:15:15: listeners.web.routes[2].pool")
    );
}

#[test]
fn listener_needs_a_pool_or_routes() {
    let text = ROUTED.replace("    protocol: tcp\n    pool: web\n", "    protocol: tcp\n");
    let error = refuse(&text);
    assert_eq!(error.path, "listeners.pg");
    assert!(error.message.contains("needs a pool"), "{error}");
}

#[test]
fn tcp_listener_cannot_route() {
    let text = ROUTED.replace(
        "    proxy_protocol: accept\n",
        "    routes: [{match: {host: a.b}, pool: web}]\n",
    );
    let error = refuse(&text);
    assert_eq!(error.path, "listeners.pg.routes[0]");
    assert_eq!(at(&error).0, 22);
    assert!(error.message.contains("protocol: http"), "{error}");
}

#[test]
fn bad_match_values_are_located() {
    let cases = [
        (
            "host: api.example.com",
            "host: \"api.*.com\"",
            "listeners.web.routes[0].match.host",
            "invalid host",
        ),
        (
            "host: api.example.com",
            "host: \"a.b:80\"",
            "listeners.web.routes[0].match.host",
            "invalid host",
        ),
        (
            "path_prefix: /static/",
            "path_prefix: static",
            "listeners.web.routes[1].match.path_prefix",
            "must start with '/'",
        ),
        (
            "path: /exact",
            "path: /exact?x=1",
            "listeners.web.routes[2].match.path",
            "'?'",
        ),
        (
            "method: GET",
            "method: get",
            "listeners.web.routes[2].match.method",
            "case-sensitive",
        ),
        (
            "name: X-Canary",
            "name: \"X Canary\"",
            "listeners.web.routes[2].match.header.name",
            "invalid header name",
        ),
        (
            "strip_prefix: /static",
            "strip_prefix: x",
            "listeners.web.routes[1].strip_prefix",
            "must start",
        ),
        (
            "remove: [X-Debug]",
            "remove: [Content-Length]",
            "listeners.web.routes[2].request_headers.remove[0]",
            "cannot be edited",
        ),
        (
            "set: { X-Served-By: sluice }",
            "set: { Connection: close }",
            "listeners.web.routes[2].response_headers.set.Connection",
            "cannot be edited",
        ),
        (
            "{ host: api.example.com }",
            "{ path: /a, path_prefix: /b }",
            "listeners.web.routes[0].match",
            "not both",
        ),
    ];
    for (from, to, path, message) in cases {
        let error = refuse(&ROUTED.replace(from, to));
        assert_eq!(error.path, path, "{error}");
        assert!(error.message.contains(message), "{error}");
        assert!(error.position.is_some(), "{error}");
    }
}

#[test]
fn unknown_route_keys_are_refused_with_their_path() {
    let error = refuse(&ROUTED.replace("path_prefix: /static/", "prefix: /static/"));
    assert_eq!(error.path, "listeners.web.routes[1].match.prefix");
    assert_eq!(at(&error).0, 11);
    let error = refuse(&ROUTED.replace("strip_prefix: /static", "strip: /static"));
    assert_eq!(error.path, "listeners.web.routes[1].strip");
}

#[test]
fn bad_proxy_protocol_settings_are_located() {
    let error = refuse(&ROUTED.replace("proxy_protocol: accept", "proxy_protocol: yes"));
    assert_eq!(error.path, "listeners.pg.proxy_protocol");
    assert_eq!(at(&error).0, 22);
    assert!(error.message.contains("accept"), "{error}");
    let error = refuse(&ROUTED.replace("10.0.0.0/8", "10.0.0.0/33"));
    assert_eq!(error.path, "listeners.web.proxy_protocol.trusted[1]");
    assert_eq!(at(&error).0, 6);
    let error = refuse(&ROUTED.replace("send_proxy: v1", "send_proxy: v3"));
    assert_eq!(error.path, "pools.api.send_proxy");
    assert_eq!(at(&error).0, 25);
    let error = refuse(&ROUTED.replace("tunnel_idle: 10m", "tunnel_idle: 10"));
    assert_eq!(error.path, "listeners.web.timeouts.tunnel_idle");
}
