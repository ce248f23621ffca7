//! Unit tests of the registry: merging with static backends, stale publishers, status.

use super::*;
use crate::config::discovery::FileSource;

const BASE: &str = "listeners:\n  web: {bind: '127.0.0.1:0', pool: app}\npools:\n  app:\n    backends: [127.0.0.1:9001]\n    limits: {max_requests_per_backend: 7}\n";

fn backend(port: u16, weight: u32) -> BackendConfig {
    BackendConfig {
        address: SocketAddr::from(([127, 0, 0, 1], port)).into(),
        weight,
        max_connections: None,
    }
}

use std::net::SocketAddr;

/// A registry with one (not running) file source for pool `app`.
fn registry() -> (Arc<Discovery>, Publisher) {
    let discovery = Arc::new(Discovery::default());
    let source = DiscoverySource::File(FileSource {
        path: "/nonexistent/backends.yaml".into(),
    });
    let key = ("app".to_owned(), SourceKind::File);
    let status = SourceStatus::new("file", source.target());
    lock(&discovery.inner).sources.insert(
        key,
        Running {
            id: 1,
            config: source,
            stop: CancellationToken::new(),
            backends: Vec::new(),
            status,
        },
    );
    let publisher = Publisher {
        discovery: Arc::downgrade(&discovery),
        pool: "app".into(),
        kind: SourceKind::File,
        id: 1,
    };
    (discovery, publisher)
}

#[test]
fn discovered_backends_merge_after_static_ones_and_static_wins() {
    let base = Config::parse(BASE, "t.yaml").unwrap();
    let (discovery, publisher) = registry();
    publisher.publish(vec![backend(9002, 3), backend(9001, 9), backend(9002, 3)]);
    let merged = discovery.merge(&base);
    let pool = &merged.pools["app"];
    let ports: Vec<u16> = pool
        .backends
        .iter()
        .map(|b| b.address.inet().unwrap().port())
        .collect();
    assert_eq!(ports, [9001, 9002]);
    assert_eq!(pool.backends[0].weight, 1, "the static entry wins");
    assert_eq!(pool.backends[1].weight, 3);
    assert_eq!(
        pool.backends[1].max_connections,
        Some(7),
        "pool default limit applies to discovered backends"
    );
}

#[test]
fn failure_keeps_the_set_and_is_reported_until_the_next_success() {
    let base = Config::parse(BASE, "t.yaml").unwrap();
    let (discovery, publisher) = registry();
    publisher.publish(vec![backend(9002, 1)]);
    publisher.fail("broken");
    assert_eq!(discovery.merge(&base).pools["app"].backends.len(), 2);
    let status = &discovery.status()["app"][0];
    assert_eq!(status.last_error.as_deref(), Some("broken"));
    assert_eq!(
        (status.updates, status.failures, status.backends),
        (1, 1, 1)
    );
    publisher.publish(vec![]);
    assert_eq!(discovery.merge(&base).pools["app"].backends.len(), 1);
    assert_eq!(discovery.status()["app"][0].last_error, None);
}

#[test]
fn a_stopped_source_cannot_publish() {
    let base = Config::parse(BASE, "t.yaml").unwrap();
    let (discovery, publisher) = registry();
    let stale = Publisher {
        id: 0,
        ..publisher.clone()
    };
    stale.publish(vec![backend(9005, 1)]);
    assert_eq!(discovery.merge(&base).pools["app"].backends.len(), 1);
}

#[tokio::test]
async fn sync_stops_sources_the_config_no_longer_has() {
    let base = Config::parse(BASE, "t.yaml").unwrap();
    let (discovery, publisher) = registry();
    publisher.publish(vec![backend(9002, 1)]);
    discovery.sync(&base, &CancellationToken::new());
    assert!(discovery.status().is_empty());
    assert_eq!(discovery.merge(&base).pools["app"].backends.len(), 1);
}
