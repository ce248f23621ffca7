//! Validation of the edge keys and their reload-plan lines.

use super::super::Config;
use super::*;

const BASE: &str = "
listeners:
  web:
    bind: 127.0.0.1:0
    pool: app
    client_address: { trusted_proxies: [10.0.0.0/8, '2001:db8::/32'] }
    max_connections_per_client: 20
    access: [ { allow: 10.0.0.0/8 }, { deny: all, name: others, dry_run: true } ]
    rate_limit: { rate: 600/m, burst: 100 }
    routes:
      - match: { path_prefix: /login }
        pool: app
        rate_limit: { rate: 5/s, name: login }
      - match: { path_prefix: /api }
        pool: app
        access: [ { deny: [192.0.2.0/24, '2001:db8:bad::/48'] } ]
        rate_limit: { rate: 10/s, key: 'cookie:session', max_keys: 1000 }
pools:
  app: { backends: [127.0.0.1:9] }
";

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, "t.yaml").map_err(|e| e.to_string())
}

#[test]
fn a_full_edge_section_validates_with_defaults() {
    let config = parse(BASE).unwrap();
    let web = &config.listeners["web"];
    assert_eq!(web.edge.client_address.trusted_proxies.len(), 2);
    assert_eq!(web.edge.max_connections_per_client, Some(20));
    assert_eq!(web.edge.access.len(), 2);
    assert_eq!(web.edge.access[0].name, "access[0]");
    assert_eq!(web.edge.access[1].networks.len(), 2, "all: both families");
    assert!(web.edge.access[1].dry_run);
    let listener_limit = web.edge.rate_limit.as_ref().unwrap();
    assert_eq!((listener_limit.count, listener_limit.burst), (600, 100));
    assert_eq!(listener_limit.max_keys, DEFAULT_MAX_KEYS);
    let login = web.routes[0].edge.rate_limit.as_ref().unwrap();
    assert_eq!((login.name.as_str(), login.burst), ("login", 5));
    let api = &web.routes[1].edge;
    assert_eq!(api.access[0].name, "routes[1].access[0]");
    let api_limit = api.rate_limit.as_ref().unwrap();
    assert_eq!(api_limit.name, "routes[1].rate_limit");
    assert_eq!(api_limit.key, RateKey::Cookie("session".into()));
    assert_eq!(api_limit.max_keys, 1000);
}

#[test]
fn mistakes_are_refused_with_their_path() {
    let cases = [
        (
            "rate: 5/s, name: login",
            "rate: 5/x, name: login",
            "routes[0].rate_limit.rate",
        ),
        ("rate: 5/s, name: login", "rate: 0/s", "must be at least 1"),
        (
            "rate: 5/s, name: login",
            "rate: 5/s, burst: 0",
            "routes[0].rate_limit.burst",
        ),
        (
            "rate: 5/s, name: login",
            "rate: 5/s, key: 'ip'",
            "routes[0].rate_limit.key",
        ),
        (
            "rate: 5/s, name: login",
            "rate: 5/s, name: 'a b'",
            "invalid name",
        ),
        (
            "{ allow: 10.0.0.0/8 }",
            "{ allow: 10.0.0.0/33 }",
            "web.access[0].allow",
        ),
        (
            "{ allow: 10.0.0.0/8 }",
            "{ allow: 10.0.0.0/8, deny: all }",
            "exactly one of allow or deny",
        ),
        (
            "[10.0.0.0/8, '2001:db8::/32']",
            "[10.0.0.0/8, nonsense]",
            "trusted_proxies[1]",
        ),
        (
            "max_connections_per_client: 20",
            "max_connections_per_client: 0",
            "at least 1",
        ),
        ("max_keys: 1000", "max_keys: 0", "max_keys"),
    ];
    for (from, to, expected) in cases {
        let text = BASE.replacen(from, to, 1);
        assert_ne!(text, BASE, "{from}");
        let error = parse(&text).unwrap_err();
        assert!(error.contains(expected), "{to}: {error}");
    }
}

#[test]
fn tcp_listeners_take_connection_rules_only() {
    let tcp = "listeners:\n  db: {bind: '127.0.0.1:0', protocol: tcp, pool: app, RULE}\npools:\n  app: {backends: [127.0.0.1:9]}\n";
    let ok = tcp.replace(
        "RULE",
        "access: [{deny: 192.0.2.0/24}], rate_limit: {rate: 10/s}, max_connections_per_client: 5",
    );
    assert!(parse(&ok).is_ok(), "{:?}", parse(&ok).err());
    let by_header = tcp.replace("RULE", "rate_limit: {rate: 10/s, key: 'header:X-A'}");
    assert!(
        parse(&by_header)
            .unwrap_err()
            .contains("key must be client")
    );
    let xff = tcp.replace("RULE", "client_address: {trusted_proxies: [10.0.0.0/8]}");
    assert!(
        parse(&xff)
            .unwrap_err()
            .contains("protocol: http listeners only")
    );
}

#[test]
fn the_reload_plan_names_rule_changes_and_what_happens_to_buckets() {
    let old = parse(BASE).unwrap();
    let new = parse(
        &BASE
            .replace(
                "rate: 5/s, name: login",
                "rate: 5/s, name: login, dry_run: true",
            )
            .replace("rate: 600/m, burst: 100", "rate: 1200/m, burst: 100")
            .replace(
                "{ deny: all, name: others, dry_run: true }",
                "{ deny: all, name: others }",
            ),
    )
    .unwrap();
    let lines = edge_changes("web", &old.listeners["web"], &new.listeners["web"]);
    let text = lines.join("\n");
    assert!(text.contains("rate limit login: 5/s burst 5 key client max_keys 100000 -> 5/s burst 5 key client max_keys 100000 (dry run) (buckets kept)"), "{text}");
    assert!(text.contains("rate limit rate_limit: 600/m burst 100 key client max_keys 100000 -> 1200/m burst 100 key client max_keys 100000 (buckets start full)"), "{text}");
    assert!(text.contains("listener web: access rules: access[0] allow 10.0.0.0/8; others deny 0.0.0.0/0 ::/0 (dry run) -> access[0] allow 10.0.0.0/8; others deny 0.0.0.0/0 ::/0"), "{text}");
    assert_eq!(lines.len(), 3, "{text}");
    assert!(edge_changes("web", &old.listeners["web"], &old.listeners["web"]).is_empty());
}
