//! Unit tests for config validation: the accepted example and a corpus of refused configs.

use super::*;

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
