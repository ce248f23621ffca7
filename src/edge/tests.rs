//! The phases of `judge_request` and `judge_connection` together, and state carried across
//! a rebuild.

use super::*;
use crate::config::Config;
use std::time::Duration;

const SECOND: u64 = 1_000_000;

fn config(text: &str) -> Config {
    Config::parse(text, "t.yaml").expect("valid")
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

const EDGE: &str = "
listeners:
  web:
    bind: 127.0.0.1:0
    pool: app
    access: [ { deny: 192.0.2.0/24, name: lab }, { deny: 198.51.100.0/24, dry_run: true } ]
    rate_limit: { rate: 1/s, burst: 2 }
    routes:
      - match: { path_prefix: /api }
        pool: app
        rate_limit: { rate: 1/m, burst: 1, key: 'header:X-Api-Key', dry_run: true }
pools:
  app: { backends: [127.0.0.1:9] }
";

#[test]
fn access_then_rate_limit_with_reasons_and_dry_runs() {
    let config = config(EDGE);
    let listener = &config.listeners["web"];
    let state = EdgeState::build(listener, None);
    let rules = state.listener_rules("web", listener);
    let headers = HeaderMap::new();
    let denied = judge_request(&rules, ip("192.0.2.9"), &headers, SECOND);
    assert_eq!(
        denied
            .refused
            .as_ref()
            .map(|r| (r.rule.as_str(), r.status())),
        Some(("lab", StatusCode::FORBIDDEN))
    );
    let dry = judge_request(&rules, ip("198.51.100.1"), &headers, SECOND);
    assert_eq!(dry.refused, None);
    assert_eq!(
        dry.would_refuse.map(|r| r.reason),
        Some("access_denied_dry_run")
    );
    // 198.51.100.1 took one token above; one more passes, the third is refused.
    assert!(
        judge_request(&rules, ip("198.51.100.1"), &headers, SECOND)
            .refused
            .is_none()
    );
    let limited = judge_request(&rules, ip("198.51.100.1"), &headers, SECOND)
        .refused
        .expect("over the limit");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.retry_after, Some(1));
    assert_eq!(limited.describe(), "rate_limited by rate_limit");
    let top = state.refusals.top(10);
    assert!(top.iter().any(|r| r.key == "192.0.2.9" && r.rule == "lab"));
}

#[test]
fn header_keys_fall_back_to_the_client_and_dry_runs_pass() {
    let config = config(EDGE);
    let listener = &config.listeners["web"];
    let state = EdgeState::build(listener, None);
    let rules = state.route_rules("web", 0, &listener.routes[0]);
    assert_eq!(rules.route, "routes[0]");
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", "secret-key-1".parse().unwrap());
    assert_eq!(
        judge_request(&rules, ip("10.0.0.1"), &headers, SECOND),
        Outcome::default()
    );
    let second = judge_request(&rules, ip("10.0.0.2"), &headers, SECOND);
    assert_eq!(second.refused, None, "dry run");
    assert_eq!(
        second.would_refuse.map(|r| r.reason),
        Some("rate_limited_dry_run")
    );
    // The key is the header, not the address: another key from the same address passes.
    headers.insert("x-api-key", "secret-key-2".parse().unwrap());
    assert_eq!(
        judge_request(&rules, ip("10.0.0.2"), &headers, SECOND),
        Outcome::default()
    );
    let shown = state.refusals.top(1);
    assert_eq!(shown[0].key, "header:x-api-key=secr…");
}

#[test]
fn limiters_survive_a_rebuild_when_their_rule_is_unchanged() {
    let first = config(EDGE);
    let state = EdgeState::build(&first.listeners["web"], None);
    let same = config(&EDGE.replace(
        "{ deny: 192.0.2.0/24, name: lab }",
        "{ deny: 192.0.2.0/25, name: lab }",
    ));
    let kept = EdgeState::build(
        &same.listeners["web"],
        Some((&first.listeners["web"], &state)),
    );
    assert!(Arc::ptr_eq(
        kept.limiter.as_ref().unwrap(),
        state.limiter.as_ref().unwrap()
    ));
    assert!(Arc::ptr_eq(
        kept.route_limiters[0].as_ref().unwrap(),
        state.route_limiters[0].as_ref().unwrap()
    ));
    assert!(Arc::ptr_eq(&kept.conns, &state.conns));
    let faster = config(&EDGE.replace("rate: 1/s, burst: 2", "rate: 2/s, burst: 2"));
    let fresh = EdgeState::build(
        &faster.listeners["web"],
        Some((&first.listeners["web"], &state)),
    );
    assert!(!Arc::ptr_eq(
        fresh.limiter.as_ref().unwrap(),
        state.limiter.as_ref().unwrap()
    ));
    assert!(Arc::ptr_eq(
        fresh.route_limiters[0].as_ref().unwrap(),
        state.route_limiters[0].as_ref().unwrap()
    ));
}

#[test]
fn connections_are_capped_per_client_except_for_trusted_proxies() {
    let config = config(
        "
listeners:
  tcp:
    bind: 127.0.0.1:0
    protocol: tcp
    pool: app
    max_connections_per_client: 1
    access: [ { allow: 10.0.0.0/8 }, { deny: all } ]
    rate_limit: { rate: 2/m, burst: 2 }
  web:
    bind: 127.0.0.1:0
    pool: app
    max_connections_per_client: 1
    client_address: { trusted_proxies: [10.0.0.0/8] }
pools:
  app: { backends: [127.0.0.1:9] }
",
    );
    let tcp = &config.listeners["tcp"];
    let state = EdgeState::build(tcp, None);
    let judge = |client: &str, now: u64| judge_connection("tcp", tcp, &state, ip(client), now);
    assert_eq!(
        judge("192.0.2.1", SECOND).unwrap_err().reason,
        "access_denied"
    );
    let held = judge("10.0.0.1", SECOND).unwrap();
    assert!(held.is_some());
    assert_eq!(
        judge("10.0.0.1", SECOND).unwrap_err().reason,
        "connection_limit"
    );
    drop(held);
    // The third new connection within the burst of 2 is over the rate.
    assert!(judge("10.0.0.1", SECOND).is_ok());
    let limited = judge("10.0.0.1", SECOND).unwrap_err();
    assert_eq!(
        (limited.reason, limited.retry_after),
        ("rate_limited", Some(30))
    );

    let web = &config.listeners["web"];
    let state = EdgeState::build(web, None);
    let proxy = judge_connection("web", web, &state, ip("10.0.0.5"), SECOND).unwrap();
    assert!(proxy.is_none(), "a trusted proxy is not capped");
    let first = judge_connection("web", web, &state, ip("192.0.2.1"), SECOND).unwrap();
    assert!(first.is_some());
    assert!(judge_connection("web", web, &state, ip("192.0.2.1"), SECOND).is_err());
}

#[tokio::test(start_paused = true)]
async fn buckets_refill_on_the_paused_clock() {
    let config = config(EDGE);
    let listener = &config.listeners["web"];
    let state = EdgeState::build(listener, None);
    let rules = Rules {
        listener: "web",
        route: "",
        access: &[],
        rate_limit: listener
            .edge
            .rate_limit
            .as_ref()
            .zip(state.limiter.as_deref()),
        refusals: &state.refusals,
    };
    let headers = HeaderMap::new();
    let judge = || {
        judge_request(
            &rules,
            ip("203.0.113.1"),
            &headers,
            crate::clock::clock_micros(),
        )
    };
    // 1/s with a burst of 2.
    assert_eq!(judge().refused, None);
    assert_eq!(judge().refused, None);
    let refused = judge().refused.expect("the bucket is empty");
    assert_eq!(refused.retry_after, Some(1));
    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(judge().refused.is_some(), "not a whole token yet");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(judge().refused, None, "one token back after a second");
    assert!(judge().refused.is_some());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(judge().refused, None);
    assert_eq!(
        judge().refused,
        None,
        "full again after a quiet spell: the burst"
    );
    assert!(judge().refused.is_some(), "and no more than the burst");
}
