//! Unit tests for config validation: the accepted example and a corpus of refused configs.

use super::*;
use crate::error::SourcePosition;

const EXAMPLE: &str = r#"runtime:
  worker_threads: 2
admin:
  bind: 127.0.0.1:9900
listeners:
  web:
    bind: 0.0.0.0:8080
    protocol: http
    pool: app
    timeouts:
      client_header: 5s
      client_idle: 30s
  pg:
    bind: 127.0.0.1:6432
    protocol: tcp
    pool: postgres
pools:
  app:
    algorithm: round_robin
    backends:
      - 127.0.0.1:9001
      - address: 127.0.0.1:9002
        weight: 3
    timeouts:
      connect: 1s
      response: 15s
  postgres:
    backends: [127.0.0.1:5432]
"#;

fn refuse(text: &str) -> ConfigError {
    Config::parse(text, "test.yaml").expect_err("config should be refused")
}

#[test]
fn accepts_the_issue_example_verbatim() {
    let config = Config::parse(EXAMPLE, "test.yaml").expect("valid");
    assert_eq!(config.runtime.worker_threads, Some(2));
    let web = &config.listeners["web"];
    assert_eq!(web.protocol, Protocol::Http);
    assert_eq!(web.timeouts.client_header, Duration::from_secs(5));
    assert_eq!(config.listeners["pg"].protocol, Protocol::Tcp);
    let app = &config.pools["app"];
    assert_eq!(app.backends.len(), 2);
    assert_eq!(app.backends[0].weight, 1);
    assert_eq!(app.backends[1].weight, 3);
    assert_eq!(app.timeouts.connect, Duration::from_secs(1));
    assert_eq!(
        config.pools["postgres"].timeouts.connect,
        DEFAULT_CONNECT_TIMEOUT
    );
}

/// The example with one more line in its `runtime:` section.
fn with_runtime_line(line: &str) -> String {
    EXAMPLE.replace(
        "  worker_threads: 2\n",
        &format!("  worker_threads: 2\n  {line}\n"),
    )
}

#[test]
fn the_scheduler_and_accept_mode_default_to_per_thread_and_reuseport_and_a_bad_one_is_named() {
    let config = Config::parse(EXAMPLE, "test.yaml").expect("valid");
    assert_eq!(config.runtime.scheduler, Scheduler::PerThread);
    assert_eq!(config.runtime.accept, Accept::Reuseport);
    let parsed = |line| Config::parse(&with_runtime_line(line), "test.yaml").expect("valid");
    let stealing = parsed("scheduler: work_stealing");
    assert_eq!(stealing.runtime.scheduler, Scheduler::WorkStealing);
    assert_eq!(parsed("accept: shared").runtime.accept, Accept::Shared);
    let error = refuse(&with_runtime_line("scheduler: round_robin"));
    assert_eq!(error.path, "runtime.scheduler");
    assert_eq!(error.position.as_ref().map(|p| p.line), Some(3), "{error}");
    assert!(error.message.contains("per_thread"), "{error}");
}

#[test]
fn unknown_key_names_line_column_and_path() {
    let text = EXAMPLE.replace("    weight: 3", "    wieght: 3");
    let error = refuse(&text);
    assert_eq!(error.path, "pools.app.backends[1].wieght");
    // The position is the backend entry holding the bad key (serde-saphyr reports the start
    // of the enclosing `Spanned` node); the path names the key itself.
    assert_eq!(
        error.position,
        Some(SourcePosition {
            line: 23,
            column: 9
        })
    );
    assert!(error.message.contains("unknown field `wieght`"), "{error}");
    let shown = error.to_string();
    assert!(shown.starts_with("test.yaml:23:9: pools.app.backends[1].wieght: unknown field"));
    assert!(shown.contains("^"), "snippet with caret: {shown}");
}

#[test]
fn bad_backend_address_is_located() {
    let text = EXAMPLE.replace("- 127.0.0.1:9001", "- 127.0.0.1:99999");
    let error = refuse(&text);
    assert_eq!(error.path, "pools.app.backends[0].address");
    assert_eq!(error.position.as_ref().map(|p| p.line), Some(21));
    assert!(error.message.contains("127.0.0.1:99999"), "{error}");
}

#[test]
fn listener_naming_a_missing_pool_is_refused() {
    let text = EXAMPLE.replace("pool: postgres", "pool: postgress");
    let error = refuse(&text);
    assert_eq!(error.path, "listeners.pg.pool");
    assert_eq!(error.position.as_ref().map(|p| p.line), Some(16));
    assert!(
        error.message.contains("no pool named \"postgress\""),
        "{error}"
    );
}

#[test]
fn duplicate_binds_are_refused() {
    let text = EXAMPLE.replace("bind: 127.0.0.1:6432", "bind: 0.0.0.0:8080");
    let error = refuse(&text);
    assert!(error.path.ends_with(".bind"), "{error}");
    assert!(error.message.contains("already used"), "{error}");
    let clash_with_admin = EXAMPLE.replace("bind: 127.0.0.1:6432", "bind: 127.0.0.1:9900");
    assert!(refuse(&clash_with_admin).message.contains("admin"));
}

#[test]
fn empty_pool_is_refused() {
    let text = EXAMPLE.replace("backends: [127.0.0.1:5432]", "backends: []");
    let error = refuse(&text);
    assert_eq!(error.path, "pools.postgres.backends");
    assert!(error.message.contains("empty pool"), "{error}");
}

#[test]
fn bad_duration_and_protocol_and_algorithm() {
    let error = refuse(&EXAMPLE.replace("connect: 1s", "connect: 1"));
    assert_eq!(error.path, "pools.app.timeouts.connect");
    assert!(error.message.contains("missing unit"));

    let error = refuse(&EXAMPLE.replace("protocol: tcp", "protocol: udp"));
    assert_eq!(error.path, "listeners.pg.protocol");
    assert!(error.message.contains("udp"), "{error}");

    let error = refuse(&EXAMPLE.replace("algorithm: round_robin", "algorithm: fastest"));
    assert_eq!(error.path, "pools.app.algorithm");
    assert!(
        error.message.contains("round_robin"),
        "lists the choices: {error}"
    );
}

#[test]
fn duplicate_backend_and_weight_range() {
    let error = refuse(&EXAMPLE.replace("address: 127.0.0.1:9002", "address: 127.0.0.1:9001"));
    assert!(error.message.contains("listed twice"), "{error}");
    let error = refuse(&EXAMPLE.replace("weight: 3", "weight: 100000"));
    assert_eq!(error.path, "pools.app.backends[1].weight");
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let error = refuse("listeners: [\n");
    assert!(error.position.is_some(), "{error}");
    let error = refuse("pools:\n\tapp: {}\n");
    assert!(error.position.is_some(), "{error}");
}

#[test]
fn missing_sections_are_named() {
    assert_eq!(
        refuse("pools:\n  a:\n    backends: [127.0.0.1:1]\n").path,
        "listeners"
    );
    assert_eq!(refuse("{}").path, "pools");
}

const BALANCED: &str = r#"listeners:
  web: {bind: 127.0.0.1:8080, pool: app}
pools:
  app:
    algorithm: hash            # round_robin | random | least_conn | p2c | hash | first
    hash:
      key: header:X-User
      bounded_load: 1.25
      fallback: least_conn
    sticky: {cookie: SLUICE, ttl: 1h}
    backends:
      - 127.0.0.1:9001
      - {address: 127.0.0.1:9002, weight: 2, max_connections: 100}
"#;

#[test]
fn accepts_the_algorithms_issue_example() {
    let config = Config::parse(BALANCED, "test.yaml").expect("valid");
    let app = &config.pools["app"];
    let Algorithm::Hash(options) = &app.algorithm else {
        panic!("hash expected: {:?}", app.algorithm);
    };
    assert_eq!(
        options.key,
        HashKey::Header(http::HeaderName::from_static("x-user"))
    );
    assert_eq!(options.bounded_load, Some(1.25));
    assert_eq!(*options.fallback, Algorithm::LeastConn);
    let sticky = app.sticky.as_ref().expect("sticky");
    assert_eq!(sticky.cookie, "SLUICE");
    assert_eq!(sticky.ttl, Some(Duration::from_secs(3600)));
    assert_eq!(app.backends[0].max_connections, None);
    assert_eq!(app.backends[1].max_connections, Some(100));
}

#[test]
fn every_algorithm_name_parses_with_default_options() {
    for name in Algorithm::NAMES {
        let text = BALANCED
            .replace("algorithm: hash ", &format!("algorithm: {name} "))
            .replace(
                "    hash:\n      key: header:X-User\n      bounded_load: 1.25\n      fallback: least_conn\n",
                "",
            );
        let config = Config::parse(&text, "test.yaml").expect(name);
        assert_eq!(config.pools["app"].algorithm.name(), *name);
    }
    let p2c = BALANCED
        .replace("algorithm: hash ", "algorithm: p2c ")
        .replace(
            "    hash:\n      key: header:X-User\n      bounded_load: 1.25\n      fallback: least_conn\n",
            "    p2c: {load: ewma}\n",
        );
    let config = Config::parse(&p2c, "test.yaml").expect("p2c ewma");
    assert_eq!(
        config.pools["app"].algorithm,
        Algorithm::P2c(P2cOptions {
            load: P2cLoad::Ewma
        })
    );
}

#[test]
fn every_hash_key_source_parses() {
    for (text, expected) in [
        ("source_ip", HashKey::SourceIp),
        ("path", HashKey::Path),
        ("cookie:sid", HashKey::Cookie("sid".into())),
        ("query:user", HashKey::Query("user".into())),
    ] {
        assert_eq!(parse_hash_key(text), Ok(expected));
    }
    assert!(parse_hash_key("header:").is_err());
    assert!(parse_hash_key("header:bad name").is_err());
    assert!(parse_hash_key("cookie:a;b").is_err());
    assert!(parse_hash_key("path:x").is_err());
}

#[test]
fn unknown_hash_key_source_names_line_path_and_choices() {
    let error = refuse(&BALANCED.replace("key: header:X-User", "key: headr:X"));
    assert_eq!(error.path, "pools.app.hash.key");
    assert_eq!(error.position.as_ref().map(|p| p.line), Some(7));
    assert_eq!(
        error.message,
        "unknown key source \"headr:X\" (expected source_ip, header:NAME, cookie:NAME, path, query:NAME)"
    );
    assert!(
        error
            .to_string()
            .starts_with("test.yaml:7:12: pools.app.hash.key: unknown key source")
    );
}

#[test]
fn options_block_of_another_algorithm_is_refused() {
    let error = refuse(&BALANCED.replace("algorithm: hash ", "algorithm: round_robin "));
    assert_eq!(error.path, "pools.app.hash");
    assert_eq!(error.position.as_ref().map(|p| p.line), Some(7));
    assert!(
        error.message.contains("algorithm is round_robin"),
        "{error}"
    );
    let error = refuse(&BALANCED.replace("    sticky:", "    p2c: {load: ewma}\n    sticky:"));
    assert_eq!(error.path, "pools.app.p2c");
}

#[test]
fn bad_hash_and_p2c_options_are_located() {
    let error = refuse(&BALANCED.replace("bounded_load: 1.25", "bounded_load: 0.5"));
    assert_eq!(error.path, "pools.app.hash.bounded_load");
    assert!(error.message.contains("between 1.0 and 100"), "{error}");
    let error = refuse(&BALANCED.replace("bounded_load: 1.25", "bounded_load: lots"));
    assert_eq!(error.path, "pools.app.hash.bounded_load");
    let error = refuse(&BALANCED.replace("fallback: least_conn", "fallback: hash"));
    assert_eq!(error.path, "pools.app.hash.fallback");
    let error = refuse(&BALANCED.replace("fallback: least_conn", "fallback: fastest"));
    assert_eq!(error.path, "pools.app.hash.fallback");
    assert!(error.message.contains("least_conn"), "{error}");
    let error = refuse(&BALANCED.replace("fallback: least_conn", "falback: least_conn"));
    assert_eq!(error.path, "pools.app.hash.falback");
    assert!(error.message.contains("unknown field"), "{error}");

    let p2c = BALANCED.replace("algorithm: hash ", "algorithm: p2c ").replace(
        "    hash:\n      key: header:X-User\n      bounded_load: 1.25\n      fallback: least_conn\n",
        "    p2c: {load: latency}\n",
    );
    let error = refuse(&p2c);
    assert_eq!(error.path, "pools.app.p2c.load");
    assert!(error.message.contains("in_flight or ewma"), "{error}");
}

#[test]
fn bad_sticky_and_max_connections_are_located() {
    let error = refuse(&BALANCED.replace("cookie: SLUICE", "cookie: 'a b'"));
    assert_eq!(error.path, "pools.app.sticky.cookie");
    let error = refuse(&BALANCED.replace("ttl: 1h", "ttl: 0s"));
    assert_eq!(error.path, "pools.app.sticky.ttl");
    let error = refuse(&BALANCED.replace("ttl: 1h", "tll: 1h"));
    assert_eq!(error.path, "pools.app.sticky.tll");
    let error = refuse(&BALANCED.replace("max_connections: 100", "max_connections: 0"));
    assert_eq!(error.path, "pools.app.backends[1].max_connections");
    assert!(error.message.contains("weight: 0"), "{error}");
}

const HEALTHY: &str = "listeners:\n  web: {bind: 127.0.0.1:0, pool: app}\npools:\n  app:\n    backends: [127.0.0.1:9001]\n    health_check:\n      type: http\n      path: /health\n      interval: 2s\n      timeout: 1s\n      rise: 2\n      fall: 3\n      expect_status: [200-299, 418]\n    outlier: {consecutive_failures: 4, base_ejection_time: 10s, max_ejection_percent: 30}\n    panic_threshold: 40\n    slow_start: 30s\n";

#[test]
fn health_settings_are_parsed_with_defaults() {
    use crate::config::health::CheckKind;
    let config = Config::parse(HEALTHY, "t.yaml").expect("valid");
    let health = &config.pools["app"].health;
    let check = health.active.as_ref().expect("active check");
    assert_eq!((check.rise, check.fall), (2, 3));
    assert_eq!(
        check.unhealthy_interval,
        Duration::from_secs(2),
        "defaults to interval"
    );
    assert!(check.start_healthy);
    let CheckKind::Http(http) = &check.kind else {
        panic!("http check expected")
    };
    assert_eq!(http.expect_status, [(200, 299), (418, 418)]);
    assert!(http.status_ok(418) && !http.status_ok(301));
    assert_eq!(health.outlier.consecutive_failures, 4);
    assert!((health.outlier.max_ejection_percent - 0.3).abs() < 1e-9);
    assert!((health.panic_threshold - 0.4).abs() < 1e-9);
    assert_eq!(health.slow_start, Some(Duration::from_secs(30)));

    let plain = Config::parse(
        &HEALTHY.replace("      type: http\n      path: /health\n", ""),
        "t.yaml",
    )
    .unwrap();
    let check = plain.pools["app"].health.active.clone().unwrap();
    assert_eq!(check.kind, CheckKind::Tcp, "no path, no type: a TCP check");
}

/// The check of issue 19's first example, and the timeouts a pool gets from it.
fn check_timing(health_check: &str) -> (Duration, Duration) {
    let text = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends: [127.0.0.1:9001]\n    health_check: {{{health_check}}}\n"
    );
    let config = Config::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let check = config.pools["app"].health.active.clone().expect("a check");
    (check.interval, check.timeout)
}

#[test]
fn a_check_timeout_defaults_to_the_interval_when_shorter_and_may_exceed_it() {
    let ms = Duration::from_millis;
    // An interval written alone: the default timeout (1s) yields to it.
    assert_eq!(
        check_timing("type: http, path: /health, interval: 500ms"),
        (ms(500), ms(500))
    );
    // HAProxy's `inter 300` with `timeout check 500ms`: the next check waits for this one.
    assert_eq!(
        check_timing("type: http, path: /health, interval: 300ms, timeout: 500ms"),
        (ms(300), ms(500))
    );
    assert_eq!(check_timing("timeout: 5s"), (ms(2000), ms(5000)));
    assert_eq!(check_timing("interval: 10s"), (ms(10_000), ms(1000)));
    assert_eq!(check_timing("type: tcp"), (ms(2000), ms(1000)));
}

/// A pool with `extra` lines (indented four spaces) and no health check.
fn pool_with(extra: &str) -> PoolConfig {
    let text = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends: [127.0.0.1:9001]\n{extra}"
    );
    let config = Config::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    config.pools["app"].clone()
}

#[test]
fn ejection_time_defaults_yield_to_the_written_one() {
    let secs = Duration::from_secs;
    let times = |extra: &str| {
        let outlier = pool_with(extra).health.outlier;
        (outlier.base_ejection_time, outlier.max_ejection_time)
    };
    assert_eq!(times(""), (secs(30), secs(300)));
    assert_eq!(
        times("    outlier: {max_ejection_time: 10s}\n"),
        (secs(10), secs(10)),
        "a written cap lowers the default base instead of being raised to it"
    );
    assert_eq!(
        times("    outlier: {base_ejection_time: 10m}\n"),
        (secs(600), secs(600)),
        "a written base raises the default cap"
    );
    assert_eq!(
        times("    outlier: {base_ejection_time: 5s, max_ejection_time: 1m}\n"),
        (secs(5), secs(60))
    );
}

#[test]
fn backoff_defaults_yield_to_the_written_one() {
    let ms = Duration::from_millis;
    let backoff = |extra: &str| {
        let retry = pool_with(extra).resilience.retry;
        (retry.backoff_base, retry.backoff_max)
    };
    assert_eq!(backoff(""), (ms(25), ms(250)));
    assert_eq!(
        backoff("    retry: {backoff: {max: 10ms}}\n"),
        (ms(10), ms(10))
    );
    assert_eq!(
        backoff("    retry: {backoff: {base: 1s}}\n"),
        (ms(1000), ms(1000))
    );
}

#[test]
fn the_response_timeout_default_leaves_room_for_every_try() {
    let secs = Duration::from_secs;
    let response = |extra: &str| pool_with(extra).timeouts.response;
    assert_eq!(response(""), DEFAULT_RESPONSE_TIMEOUT);
    assert_eq!(
        response("    retry: {per_try_timeout: 2s}\n"),
        DEFAULT_RESPONSE_TIMEOUT,
        "three tries of 2s fit in the default"
    );
    // Three tries of 90s and two backoffs of at most 250ms.
    assert_eq!(
        response("    retry: {per_try_timeout: 90s}\n"),
        Duration::from_millis(270_500)
    );
    assert_eq!(
        response("    retry: {per_try_timeout: 90s, attempts: 0}\n"),
        secs(90)
    );
    assert_eq!(
        response("    retry: {per_try_timeout: 90s}\n    timeouts: {response: 5s}\n"),
        secs(5),
        "a written response timeout is kept"
    );
}

#[test]
fn the_queue_timeout_default_stays_within_the_response_timeout() {
    let ms = Duration::from_millis;
    let queue = |extra: &str| pool_with(extra).resilience.limits.queue_timeout;
    assert_eq!(queue("    limits: {max_pending: 10}\n"), ms(1000));
    assert_eq!(
        queue("    limits: {max_pending: 10}\n    timeouts: {response: 300ms}\n"),
        ms(300)
    );
    assert_eq!(queue("    timeouts: {response: 300ms}\n"), ms(300));
    assert_eq!(
        queue(
            "    limits: {max_pending: 10, queue_timeout: 2s}\n    timeouts: {response: 300ms}\n"
        ),
        ms(2000),
        "a written queue timeout is kept"
    );
}

#[test]
fn bad_health_settings_are_located() {
    let error = refuse(&HEALTHY.replace("200-299, 418", "200-299, 999"));
    assert_eq!(error.path, "pools.app.health_check.expect_status[1]");
    assert_eq!(error.position.as_ref().map(|p| p.line), Some(13));
    let error = refuse(&HEALTHY.replace("panic_threshold: 40", "panic_threshold: 140"));
    assert_eq!(error.path, "pools.app.panic_threshold");
    let error = refuse(&HEALTHY.replace("type: http", "type: udp"));
    assert_eq!(error.path, "pools.app.health_check.type");
    let error = refuse(&HEALTHY.replace("rise: 2", "rise: 0"));
    assert_eq!(error.path, "pools.app.health_check.rise");
}

#[test]
fn a_pool_named_value_keeps_its_name_in_paths() {
    let error = refuse(
        "listeners:\n  web: {bind: 127.0.0.1:0, pool: value}\npools:\n  value:\n    backendz: []\n",
    );
    assert_eq!(error.path, "pools.value.backendz");
}

/// Where an error points and what it says, as `sluice check` prints its first line.
fn located(error: &ConfigError) -> String {
    let at = error.position.as_ref().expect("a position");
    format!(
        "{}:{}: {}: {}",
        at.line, at.column, error.path, error.message
    )
}

#[test]
fn a_tab_in_the_indentation_is_pointed_at_where_it_is() {
    // The parser reports the scalar before the tab (line 3) or the column after it; the
    // operator needs the tab itself.
    let after_a_scalar = "listeners:\n  web:\n    bind: 127.0.0.1:8080\n\tpool: app\n";
    assert_eq!(
        located(&refuse(after_a_scalar)),
        "4:1: listeners.web: a tab in the indentation: YAML forbids tabs for indentation, \
         indent with spaces"
    );
    let after_spaces = "listeners:\n  web:\n    bind: 127.0.0.1:8080\n  \tpool: app\n";
    assert_eq!(
        located(&refuse(after_spaces)).split(": ").next(),
        Some("4:3")
    );
    let under_a_key = "listeners:\n  web:\n\tbind: 127.0.0.1:8080\n";
    let error = refuse(under_a_key);
    assert_eq!(
        located(&error),
        "3:1: listeners: a tab in the indentation: YAML forbids tabs for indentation, indent \
         with spaces"
    );
    assert!(
        error
            .to_string()
            .ends_with("3 | \tbind: 127.0.0.1:8080\n  | ^"),
        "{error}"
    );
}

#[test]
fn a_duplicate_key_says_where_the_first_one_is() {
    let listener = "listeners:\n  web:\n    bind: 127.0.0.1:8080\n    pool: app\n    pool: app\n\
                    pools:\n  app:\n    backends: [127.0.0.1:9001]\n";
    let error = refuse(listener);
    assert_eq!(
        located(&error),
        "5:5: listeners.web.pool: duplicate key `pool` (first at line 4)"
    );
    assert!(!error.to_string().contains("DuplicateKeyPolicy"), "{error}");
    let pool =
        "pools:\n  app:\n    backends:\n      - 127.0.0.1:9002\n\n  app:\n    backends: []\n";
    assert_eq!(
        located(&refuse(pool)),
        "6:3: pools.app: duplicate key `app` (first at line 2)"
    );
    // A mapping inside a list: the first key sits after the dash.
    let entry = "pools:\n  app:\n    backends:\n      - address: 127.0.0.1:9002\n        \
                 weight: 2\n        address: 127.0.0.1:9003\n";
    assert_eq!(
        refuse(entry).message,
        "duplicate key `address` (first at line 4)"
    );
}

#[test]
fn a_host_name_where_an_address_belongs_points_at_dns_discovery() {
    let backend = "pools:\n  app:\n    backends:\n      - localhost:9002\n";
    assert_eq!(
        located(&refuse(backend)),
        "4:9: pools.app.backends[0].address: invalid socket address \"localhost:9002\": a host \
         name is not an address here; backends are IP:PORT or unix:/path, and a pool finds \
         backends by name with discovery: { dns: { name: localhost, port: 9002 } }"
    );
    let long_form = "pools:\n  app:\n    backends:\n      - address: app.internal:80\n";
    assert!(
        refuse(long_form)
            .message
            .ends_with("discovery: { dns: { name: app.internal, port: 80 } }")
    );
    // A listener binds an address of this host: no discovery there, but the same "name".
    let bind = "listeners:\n  web:\n    bind: localhost:8080\n    pool: app\n\
                pools:\n  app:\n    backends: [127.0.0.1:9001]\n";
    assert_eq!(
        located(&refuse(bind)),
        "3:11: listeners.web.bind: invalid socket address \"localhost:8080\": a host name is \
         not an address here, sluice does not resolve it; write IP:PORT such as \
         127.0.0.1:8080, 0.0.0.0:8080 or [::]:8080"
    );
    let admin = with_runtime_line("").replace("bind: 127.0.0.1:9900", "bind: localhost:9900");
    assert!(
        refuse(&admin)
            .message
            .contains("a host name is not an address here")
    );
    // A malformed IP or port keeps the plain message.
    let bad_ip = "pools:\n  app:\n    backends: [10.0.0.300:80]\n";
    assert!(!refuse(bad_ip).message.contains("host name"));
}
