//! Config tests for what a route does: redirects, direct answers, splits and mirrors, the
//! one-action rule, each refusal with its line, column and field path.

use super::*;

const BASE: &str = "listeners:\n  web:\n    bind: 127.0.0.1:0\n    routes:\n";
const POOLS: &str =
    "pools:\n  a: { backends: [127.0.0.1:9001] }\n  b: { backends: [127.0.0.1:9002] }\n";

fn with_route(route: &str) -> String {
    format!("{BASE}      - match: {{ path: /x }}\n        {route}\n{POOLS}")
}

fn refused(route: &str) -> ConfigError {
    Config::parse(&with_route(route), "t.yaml").expect_err("should be refused")
}

fn accepted(route: &str) -> RouteAction {
    let config = Config::parse(&with_route(route), "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    config.listeners["web"].routes[0].action.clone()
}

#[test]
fn a_route_needs_exactly_one_action() {
    let two = refused("pool: a\n        redirect: { scheme: https }");
    assert_eq!(two.path, "listeners.web.routes[0]");
    assert!(
        two.message.contains("not pool and redirect"),
        "{}",
        two.message
    );
    assert_eq!(two.position.as_ref().map(|p| p.line), Some(5));
    let none = refused("strip_prefix: /x");
    assert!(
        none.message
            .contains("needs one of pool, pools, redirect or respond")
    );
}

#[test]
fn redirects_default_to_301_and_refuse_loops_and_odd_codes() {
    let RouteAction::Redirect(r) = accepted("redirect: { scheme: https }") else {
        panic!("a redirect")
    };
    assert_eq!(r.code, http::StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.scheme, Some("https"));
    let code = refused("redirect: { scheme: https, code: 200 }");
    assert_eq!(code.path, "listeners.web.routes[0].redirect.code");
    assert_eq!(
        code.position.as_ref().map(|p| (p.line, p.column)),
        Some((6, 42))
    );
    let looped = refused("redirect: { code: 302 }");
    assert!(looped.message.contains("loop"), "{}", looped.message);
    let scheme = refused("redirect: { scheme: ftp }");
    assert_eq!(scheme.path, "listeners.web.routes[0].redirect.scheme");
    let host = refused("redirect: { host: \"a.test:443\" }");
    assert_eq!(host.path, "listeners.web.routes[0].redirect.host");
}

#[test]
fn direct_answers_read_their_file_at_validation() {
    let RouteAction::Respond(r) = accepted("respond: { status: 404, body: gone }") else {
        panic!("a respond")
    };
    assert_eq!(r.status, http::StatusCode::NOT_FOUND);
    assert_eq!(&r.body[..], b"gone");
    let missing = refused("respond: { file: /nonexistent/page.html }");
    assert_eq!(missing.path, "listeners.web.routes[0].respond.file");
    assert!(
        missing.message.contains("cannot read"),
        "{}",
        missing.message
    );
    let both = refused("respond: { body: x, file: /etc/hostname }");
    assert!(both.message.contains("either body or file"));
    let framing = refused("respond: { headers: { Content-Length: \"3\" } }");
    assert_eq!(
        framing.path,
        "listeners.web.routes[0].respond.headers.Content-Length"
    );
    let status = refused("respond: { status: 101 }");
    assert_eq!(status.path, "listeners.web.routes[0].respond.status");
}

#[test]
fn splits_check_their_pools_and_weights() {
    let RouteAction::Forward(f) = accepted(
        "pools: [ { pool: a, weight: 95 }, { pool: b, weight: 5 } ]\n        split_key: cookie:user",
    ) else {
        panic!("a forward")
    };
    assert_eq!(f.pools.len(), 2);
    assert_eq!(f.pools[1].weight, 5);
    assert_eq!(f.split_key, Some(HashKey::Cookie("user".into())));
    let unknown = refused("pools: [ { pool: a }, { pool: c } ]");
    assert_eq!(unknown.path, "listeners.web.routes[0].pools[1].pool");
    let twice = refused("pools: [ { pool: a }, { pool: a } ]");
    assert!(twice.message.contains("listed twice"));
    let zero = refused("pools: [ { pool: a, weight: 0 } ]");
    assert!(zero.message.contains("every weight is 0"));
    let lonely_key = refused("pool: a\n        split_key: source_ip");
    assert_eq!(lonely_key.path, "listeners.web.routes[0].split_key");
}

#[test]
fn mirrors_need_a_forwarding_route_and_a_percentage() {
    let RouteAction::Forward(f) = accepted("pool: a\n        mirror: { pool: b, percent: 10 }")
    else {
        panic!("a forward")
    };
    let mirror = f.mirror.expect("a mirror");
    assert_eq!(mirror.percent, 10.0);
    assert_eq!(mirror.max_body, route_action::DEFAULT_MIRROR_MAX_BODY);
    let percent = refused("pool: a\n        mirror: { pool: b, percent: 120 }");
    assert_eq!(percent.path, "listeners.web.routes[0].mirror.percent");
    let direct = refused("respond: { body: x }\n        mirror: { pool: b }");
    assert_eq!(direct.path, "listeners.web.routes[0].mirror");
}

#[test]
fn tcp_routes_refuse_http_actions() {
    let text = "listeners:\n  t:\n    bind: 127.0.0.1:0\n    protocol: tcp\n    routes:\n      - match: { sni: a.test }\n        redirect: { scheme: https }\npools:\n  a: { backends: [127.0.0.1:9001] }\n";
    let error = Config::parse(text, "t.yaml").expect_err("refused");
    assert!(
        error.path.starts_with("listeners.t.routes[0]"),
        "{}",
        error.path
    );
}

#[test]
fn error_pages_are_read_at_validation_and_refused_when_missing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let page = dir.path().join("503.html");
    std::fs::write(&page, "<p>busy</p>").expect("written");
    let text = |pages: &str| {
        format!(
            "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: a\n    error_pages: {pages}\n{POOLS}"
        )
    };
    let config = Config::parse(&text(&format!("{{ 503: {} }}", page.display())), "t.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    let pages = &config.listeners["web"].error_pages.pages;
    assert_eq!(
        pages[&503].html.as_ref().map(|p| &p.body[..]),
        Some(&b"<p>busy</p>"[..])
    );
    let missing = Config::parse(&text("{ 502: /nonexistent/502.html }"), "t.yaml")
        .expect_err("a missing page is refused");
    assert_eq!(missing.path, "listeners.web.error_pages.502");
    assert_eq!(
        missing.position.as_ref().map(|p| (p.line, p.column)),
        Some((5, 25))
    );
    let status = Config::parse(&text(&format!("{{ 200: {} }}", page.display())), "t.yaml")
        .expect_err("not an error status");
    assert!(
        status.message.contains("not an error status"),
        "{}",
        status.message
    );
    let json = Config::parse(&text("{ 502: { json: /nonexistent.json } }"), "t.yaml")
        .expect_err("missing json page");
    assert_eq!(json.path, "listeners.web.error_pages.502.json");
}

#[test]
fn compression_checks_algorithms_levels_and_types() {
    let text = |compression: &str| {
        format!(
            "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: a\n    compression: {compression}\n{POOLS}"
        )
    };
    let config = Config::parse(
        &text("{ algorithms: [gzip, br], levels: { gzip: 1 } }"),
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let compression = config.listeners["web"].compression.clone().expect("on");
    assert_eq!(
        compression.algorithms,
        [compression::Coding::Gzip, compression::Coding::Br]
    );
    assert_eq!(
        (
            compression.gzip_level,
            compression.br_level,
            compression.zstd_level
        ),
        (1, 4, 3)
    );
    assert_eq!(compression.min_size, 1024);
    let level = Config::parse(&text("{ levels: { br: 12 } }"), "t.yaml").expect_err("range");
    assert_eq!(level.path, "listeners.web.compression.levels.br");
    assert_eq!(
        level.position.as_ref().map(|p| (p.line, p.column)),
        Some((5, 34))
    );
    let unknown = Config::parse(&text("{ algorithms: [deflate] }"), "t.yaml").expect_err("unknown");
    assert_eq!(unknown.path, "listeners.web.compression.algorithms[0]");
    let media = Config::parse(&text("{ types: [json] }"), "t.yaml").expect_err("type");
    assert_eq!(media.path, "listeners.web.compression.types[0]");
    let off = Config::parse(&text("{ enabled: false }"), "t.yaml").expect("off");
    assert!(off.listeners["web"].compression.is_none());
}

#[test]
fn grpc_checks_need_an_h2_pool_and_no_http_fields() {
    let text = |pool: &str| {
        format!(
            "listeners:\n  web: {{ bind: 127.0.0.1:0, pool: g }}\npools:\n  g:\n    backends: [127.0.0.1:9001]\n{pool}"
        )
    };
    let config = Config::parse(
        &text("    protocol: h2\n    health_check: { type: grpc, service: app }\n"),
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let check = config.pools["g"].health.active.clone().expect("a check");
    assert_eq!(
        check.kind,
        health::CheckKind::Grpc(health::GrpcCheck {
            service: "app".into(),
            host: None
        })
    );
    let http1 =
        Config::parse(&text("    health_check: { type: grpc }\n"), "t.yaml").expect_err("needs h2");
    assert_eq!(http1.path, "pools.g.health_check.type");
    assert!(http1.message.contains("protocol: h2"), "{}", http1.message);
    let path = Config::parse(
        &text("    protocol: h2\n    health_check: { type: grpc, path: /health }\n"),
        "t.yaml",
    )
    .expect_err("no path");
    assert_eq!(path.path, "pools.g.health_check.path");
    let service = Config::parse(
        &text("    health_check: { type: http, service: app }\n"),
        "t.yaml",
    )
    .expect_err("service is grpc only");
    assert_eq!(service.path, "pools.g.health_check.service");
}
