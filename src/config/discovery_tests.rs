//! Unit tests of discovery settings and of the discovery backend file parser.

use super::super::Config;
use super::*;

const HEAD: &str = "listeners:\n  web: {bind: '127.0.0.1:0', pool: app}\npools:\n  app:\n";

fn parse(pool: &str) -> Result<Config, ConfigError> {
    Config::parse(&format!("{HEAD}{pool}"), "t.yaml")
}

#[test]
fn every_source_parses_with_defaults_and_backends_become_optional() {
    let config = parse(
        "    discovery:\n      dns: {name: _http._tcp.api.service.consul, server: '127.0.0.1:8600'}\n      file: /etc/sluice/legacy.yaml\n      etcd: {endpoints: ['http://127.0.0.1:2379'], prefix: /services/app/}\n",
    )
    .unwrap();
    let pool = &config.pools["app"];
    assert!(pool.backends.is_empty());
    let [
        DiscoverySource::Dns(dns),
        DiscoverySource::File(file),
        DiscoverySource::Etcd(etcd),
    ] = &pool.discovery[..]
    else {
        panic!("three sources: {:?}", pool.discovery);
    };
    assert_eq!(dns.server, Some("127.0.0.1:8600".parse().unwrap()));
    assert_eq!(
        (dns.port, dns.refresh, dns.max_stale),
        (None, DEFAULT_DNS_REFRESH, None)
    );
    assert_eq!(file.path, PathBuf::from("/etc/sluice/legacy.yaml"));
    assert_eq!(etcd.prefix, "/services/app/");
}

#[test]
fn zookeeper_source_parses_with_a_default_session_timeout() {
    let config = parse(
        "    discovery:\n      zookeeper:\n        hosts: [10.0.0.1:2181, 'zk2.example:2182']\n        path: /services/jobs\n",
    )
    .unwrap();
    let DiscoverySource::ZooKeeper(zk) = &config.pools["app"].discovery[0] else {
        panic!("{:?}", config.pools["app"].discovery)
    };
    assert_eq!(zk.connect_string(), "10.0.0.1:2181,zk2.example:2182");
    assert_eq!(zk.path, "/services/jobs");
    assert_eq!(
        zk.session_timeout,
        crate::config::zookeeper::DEFAULT_ZK_SESSION_TIMEOUT
    );
    let error = parse(
        "    discovery:\n      zookeeper:\n        hosts: [10.0.0.1:2181, '10.0.0.2:x']\n        path: /s\n",
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("t.yaml:7:32: pools.app.discovery.zookeeper.hosts[1]: "),
        "{error}"
    );
}

#[test]
fn a_bare_dns_server_ip_means_port_53() {
    let config = parse("    discovery:\n      dns: {name: api.test, port: 80, server: 10.0.0.2, refresh: 10s, max_stale: 5m}\n").unwrap();
    let DiscoverySource::Dns(dns) = &config.pools["app"].discovery[0] else {
        panic!()
    };
    assert_eq!(dns.server, Some("10.0.0.2:53".parse().unwrap()));
    assert_eq!(dns.max_stale, Some(Duration::from_secs(300)));
}

#[test]
fn the_dns_refresh_default_stays_under_a_written_max_stale() {
    let refresh_with = |settings: &str| {
        let config = parse(&format!(
            "    discovery:\n      dns: {{name: api.test, port: 80{settings}}}\n"
        ))
        .unwrap();
        let DiscoverySource::Dns(dns) = &config.pools["app"].discovery[0] else {
            panic!()
        };
        dns.refresh
    };
    // A set confirmed once a minute would be withdrawn by the first failed query.
    assert_eq!(refresh_with(", max_stale: 30s"), Duration::from_secs(15));
    assert_eq!(refresh_with(", max_stale: 1s"), DNS_MIN_REFRESH);
    assert_eq!(refresh_with(", max_stale: 1h"), DEFAULT_DNS_REFRESH);
    assert_eq!(refresh_with(""), DEFAULT_DNS_REFRESH);
    // A written refresh is kept as written.
    assert_eq!(
        refresh_with(", max_stale: 30s, refresh: 2m"),
        Duration::from_secs(120)
    );
}

#[test]
fn refused_discovery_settings_name_their_field() {
    let neither = parse("    algorithm: round_robin\n").unwrap_err();
    assert_eq!(neither.path, "pools.app");
    assert!(neither.message.contains("backends, discovery"), "{neither}");

    let cases = [
        ("    discovery: {}\n", "pools.app.discovery", "no source"),
        (
            "    discovery:\n      etcd: {endpoints: ['https://e:2379'], prefix: /a/}\n",
            "pools.app.discovery.etcd.endpoints[0]",
            "http://",
        ),
        (
            "    discovery:\n      etcd: {endpoints: ['http://e:2379'], prefix: /services/app}\n",
            "pools.app.discovery.etcd.prefix",
            "trailing slash",
        ),
        (
            "    discovery:\n      dns: {name: a.test, port: 80, refresh: 100ms}\n",
            "pools.app.discovery.dns.refresh",
            "at least 1s",
        ),
        (
            "    discovery:\n      dns: {name: a.test, server: 'not an ip'}\n",
            "pools.app.discovery.dns.server",
            "invalid DNS server",
        ),
        (
            "    discovery:\n      zookeeper: {hosts: ['127.0.0.1:2181', 'zk2'], path: /s/jobs}\n",
            "pools.app.discovery.zookeeper.hosts[1]",
            "expected HOST:PORT",
        ),
        (
            "    discovery:\n      zookeeper: {hosts: [], path: /s/jobs}\n",
            "pools.app.discovery.zookeeper.hosts",
            "at least one server",
        ),
        (
            "    discovery:\n      zookeeper: {hosts: ['zk1:2181'], path: /s/jobs/}\n",
            "pools.app.discovery.zookeeper.path",
            "no trailing slash",
        ),
        (
            "    discovery:\n      zookeeper: {hosts: ['zk1:2181'], path: /s, session_timeout: 10}\n",
            "pools.app.discovery.zookeeper.session_timeout",
            "",
        ),
        (
            "    discovery:\n      zookeeper: {hosts: ['zk1:2181'], path: /s, chroot: /x}\n",
            "pools.app.discovery.zookeeper.chroot",
            "unknown field",
        ),
        (
            "    discovery:\n      dns: {name: a.test, ttl: 5s}\n",
            "pools.app.discovery.dns.ttl",
            "unknown field",
        ),
    ];
    for (pool, path, message) in cases {
        let error = parse(pool).unwrap_err();
        assert_eq!(error.path, path, "{error}");
        assert!(error.message.contains(message), "{error}");
        assert!(error.position.is_some() || path == "pools.app", "{error}");
    }
}

#[test]
fn backend_file_uses_the_backends_syntax_and_points_at_errors() {
    let backends = parse_backend_file(
        "- 10.0.0.1:80\n- {address: 10.0.0.2:80, weight: 3}\n",
        "b.yaml",
    )
    .unwrap();
    assert_eq!(backends.len(), 2);
    assert_eq!(backends[1].weight, 3);
    assert!(parse_backend_file("[]\n", "b.yaml").unwrap().is_empty());

    let error = parse_backend_file("- 10.0.0.1:80\n- 10.0.0.2\n", "b.yaml").unwrap_err();
    assert_eq!(error.path, "[1].address");
    assert!(error.to_string().starts_with("b.yaml:2:3: "), "{error}");
    let error = parse_backend_file("- {address: 10.0.0.1:80, wieght: 2}\n", "b.yaml").unwrap_err();
    assert!(error.message.contains("unknown field"), "{error}");
    assert!(error.position.is_some(), "{error}");
    let error = parse_backend_file("  \n", "b.yaml").unwrap_err();
    assert!(error.message.contains("empty file"), "{error}");
}

#[test]
fn a_backend_file_may_list_unix_sockets() {
    let backends = parse_backend_file(
        "- unix:/run/app.sock\n- {address: 10.0.0.1:80, weight: 2}\n",
        "b.yaml",
    )
    .unwrap();
    assert_eq!(backends[0].address.to_string(), "unix:/run/app.sock");
    assert!(backends[0].address.is_unix());
    let error = parse_backend_file("- unix:relative.sock\n", "b.yaml").unwrap_err();
    assert!(error.to_string().contains("absolute"), "{error}");
}
