//! etcd discovery against a real etcd (Debian `etcd-server`) with a temporary data dir on free
//! loopback ports: puts, deletes and lease expiry are followed; an etcd outage keeps the last
//! set, and changes made after etcd comes back are picked up; two sluice instances on one
//! etcd both route to a newly registered backend.

use crate::common::etcd::*;
use crate::common::*;
use sluice::Server;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

const PREFIX: &str = "/services/app/";

async fn start(etcd: &Etcd) -> Server {
    start_sluice(&format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n\
         pools:\n  app:\n    discovery:\n      etcd: {{endpoints: ['{}'], prefix: {PREFIX}}}\n",
        etcd.endpoint()
    ))
    .await
}

fn key(backend: SocketAddr) -> String {
    format!("{PREFIX}{backend}")
}

#[tokio::test]
async fn puts_deletes_and_lease_expiry_are_followed() {
    if require_program(&[ETCD], "etcd-server").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let client = etcd.client().await;
    let a = spawn_backend("a").await;
    let sluice = start(&etcd).await;
    let web = sluice.local_addr("web").unwrap();

    let put_at = Instant::now();
    client.put(key(a.addr), "", None).await.unwrap();
    until_routed_to(web, "a").await;
    let put_to_routed = put_at.elapsed();
    eprintln!("etcd put -> first routed request: {put_to_routed:?}");
    assert!(put_to_routed < Duration::from_secs(1), "{put_to_routed:?}");

    client
        .put(key(a.addr), r#"{"weight": 4}"#, None)
        .await
        .unwrap();
    let reweighted = wait_until(DEADLINE, || {
        sluice.snapshot().load().pools["app"].backends[0].weight == 4
    })
    .await;
    assert!(reweighted);

    client.delete(key(a.addr)).await.unwrap();
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    let before = a.requests();
    assert_eq!(
        get(web, "/").await.status(),
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(a.requests(), before, "no new traffic after delete");

    // A lease that nobody keeps alive: the backend goes when it expires.
    let lease = client.lease_grant(2).await.unwrap().id;
    let leased_at = Instant::now();
    client.put(key(a.addr), "", Some(lease)).await.unwrap();
    wait_for_backends(&sluice, "app", &[a.addr], DEADLINE).await;
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    eprintln!(
        "lease TTL 2s -> backend removed after {:?}",
        leased_at.elapsed()
    );
}

#[tokio::test]
async fn an_etcd_outage_keeps_the_set_and_changes_after_restart_are_picked_up() {
    if require_program(&[ETCD], "etcd-server").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path()).await;
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    etcd.client()
        .await
        .put(key(a.addr), "", None)
        .await
        .unwrap();
    let sluice = start(&etcd).await;
    let web = sluice.local_addr("web").unwrap();
    wait_for_backends(&sluice, "app", &[a.addr], DEADLINE).await;

    etcd.kill();
    let reported = wait_until(DEADLINE, || {
        sluice.discovery_status()["app"][0].last_error.is_some()
    })
    .await;
    assert!(reported, "the outage shows in /status");
    assert_eq!(
        backend_addresses(&sluice, "app"),
        BTreeSet::from([a.addr]),
        "set kept"
    );
    assert_eq!(body_text(&get(web, "/").await), "backend a");

    etcd.restart().await;
    let restarted_at = Instant::now();
    etcd.client()
        .await
        .put(key(b.addr), "", None)
        .await
        .unwrap();
    wait_for_backends(&sluice, "app", &[a.addr, b.addr], DEADLINE).await;
    eprintln!(
        "etcd restarted -> change picked up after {:?}",
        restarted_at.elapsed()
    );
    until_routed_to(web, "b").await;
}

#[tokio::test]
async fn two_instances_on_one_etcd_both_route_to_a_new_backend() {
    if require_program(&[ETCD], "etcd-server").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let a = spawn_backend("a").await;
    let first = start(&etcd).await;
    let second = start(&etcd).await;
    // Both watchers are established once an initial (empty) listing is reported.
    for sluice in [&first, &second] {
        let listed = wait_until(DEADLINE, || sluice.discovery_status()["app"][0].updates > 0).await;
        assert!(listed);
    }
    etcd.client()
        .await
        .put(key(a.addr), "", None)
        .await
        .unwrap();
    for sluice in [&first, &second] {
        let took = until_routed_to(sluice.local_addr("web").unwrap(), "a").await;
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}
