//! Unit tests of the registry: sets, stale publishers, status. Merging the sets into the
//! config is the control plane's (`control::layers`).

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

/// How many backends the registry's sets hold for pool `app`.
fn discovered(discovery: &Discovery) -> usize {
    (discovery.sets().iter())
        .filter(|set| set.pool == "app")
        .map(|set| set.backends.len())
        .sum()
}

#[test]
fn a_set_is_sorted_and_deduplicated() {
    let (discovery, publisher) = registry();
    publisher.publish(vec![backend(9003, 3), backend(9002, 9), backend(9003, 3)]);
    let sets = discovery.sets();
    let ports: Vec<u16> = sets[0]
        .backends
        .iter()
        .map(|b| b.address.inet().unwrap().port())
        .collect();
    assert_eq!(ports, [9002, 9003]);
    assert_eq!(sets[0].pool, "app");
}

#[test]
fn failure_keeps_the_set_and_is_reported_until_the_next_success() {
    let (discovery, publisher) = registry();
    publisher.publish(vec![backend(9002, 1)]);
    publisher.fail("broken");
    assert_eq!(discovered(&discovery), 1);
    let status = &discovery.status()["app"][0];
    assert_eq!(status.last_error.as_deref(), Some("broken"));
    assert_eq!(
        (status.updates, status.failures, status.backends),
        (1, 1, 1)
    );
    publisher.publish(vec![]);
    assert_eq!(discovered(&discovery), 0);
    assert_eq!(discovery.status()["app"][0].last_error, None);
}

#[test]
fn a_stopped_source_cannot_publish() {
    let (discovery, publisher) = registry();
    let stale = Publisher {
        id: 0,
        ..publisher.clone()
    };
    stale.publish(vec![backend(9005, 1)]);
    assert_eq!(discovered(&discovery), 0);
}

#[tokio::test]
async fn sync_stops_sources_the_config_no_longer_has() {
    let base = Config::parse(BASE, "t.yaml").unwrap();
    let (discovery, publisher) = registry();
    publisher.publish(vec![backend(9002, 1)]);
    discovery.sync(&base, &CancellationToken::new());
    assert!(discovery.status().is_empty());
    assert_eq!(discovered(&discovery), 0);
}
