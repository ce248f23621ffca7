//! ZooKeeper discovery against a real standalone ZooKeeper (Debian `zookeeper`) with a
//! temporary data dir on a free loopback port: a missing znode, ephemeral children created,
//! re-weighted, deleted and dropped with their session are followed; a ZooKeeper outage
//! keeps the last set, and changes made after it comes back are picked up, also when the
//! outage outlived sluice's session (a new session is opened).

use crate::common::zookeeper::*;
use crate::common::*;
use sluice::Server;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(10);
const PATH: &str = "/services/jobs";

async fn start(zookeeper: &ZooKeeper) -> Server {
    start_with(zookeeper, "").await
}

async fn start_with(zookeeper: &ZooKeeper, extra: &str) -> Server {
    start_sluice(&format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n\
         pools:\n  app:\n    discovery:\n      zookeeper: {{hosts: ['{}'], path: {PATH}{extra}}}\n",
        zookeeper.host()
    ))
    .await
}

fn status(sluice: &Server) -> sluice::discovery::SourceStatus {
    sluice.discovery_status()["app"][0].clone()
}

#[tokio::test]
async fn ephemeral_children_are_followed_from_a_missing_znode_on() {
    if !ZooKeeper::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let zookeeper = ZooKeeper::start(dir.path()).await;
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let sluice = start(&zookeeper).await;
    let web = sluice.local_addr("web").unwrap();

    // No znode yet: an empty set, and /status says why.
    let missing = wait_until(DEADLINE, || {
        status(&sluice)
            .last_error
            .is_some_and(|e| e.contains("does not exist"))
    })
    .await;
    assert!(missing, "{:?}", status(&sluice));
    let registrant = zookeeper.client().await;
    create_path(&registrant, PATH).await;

    let created_at = Instant::now();
    register(&registrant, PATH, &a.addr.to_string(), "").await;
    until_routed_to(web, "a").await;
    let latency = created_at.elapsed();
    eprintln!("ephemeral znode created -> first routed request: {latency:?}");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert_eq!(status(&sluice).last_error, None, "a good listing clears it");

    // A data change alone (no child added or removed) is followed through the data watch.
    registrant
        .set_data(&format!("{PATH}/{}", a.addr), br#"{"weight": 4}"#, None)
        .await
        .unwrap();
    let reweighted = wait_until(DEADLINE, || {
        sluice.snapshot().load().pools["app"].backends[0].weight == 4
    })
    .await;
    assert!(reweighted);

    registrant
        .delete(&format!("{PATH}/{}", a.addr), None)
        .await
        .unwrap();
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    let before = a.requests();
    assert_eq!(
        get(web, "/").await.status(),
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(a.requests(), before, "no new traffic after the delete");

    // A registrant that goes away: its session closes and its ephemeral znode with it.
    let other = zookeeper.client().await;
    register(&other, PATH, &b.addr.to_string(), "").await;
    until_routed_to(web, "b").await;
    let closed_at = Instant::now();
    drop(other);
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    eprintln!(
        "registrant session closed -> backend removed after {:?}",
        closed_at.elapsed()
    );
    let before = b.requests();
    assert_eq!(
        get(web, "/").await.status(),
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        b.requests(),
        before,
        "no new traffic after the session closed"
    );
}

#[tokio::test]
async fn an_outage_keeps_the_set_and_changes_after_restart_are_picked_up() {
    if !ZooKeeper::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut zookeeper = ZooKeeper::start(dir.path()).await;
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let registrant = zookeeper.client().await;
    create_path(&registrant, PATH).await;
    register(&registrant, PATH, &a.addr.to_string(), r#"{"weight": 2}"#).await;
    let sluice = start(&zookeeper).await;
    let web = sluice.local_addr("web").unwrap();
    wait_for_backends(&sluice, "app", &[a.addr], DEADLINE).await;

    zookeeper.kill();
    let reported = wait_until(DEADLINE, || status(&sluice).last_error.is_some()).await;
    assert!(reported, "the outage shows in /status");
    eprintln!("outage reported: {:?}", status(&sluice).last_error);
    assert_eq!(
        backend_addresses(&sluice, "app"),
        BTreeSet::from([a.addr]),
        "set kept"
    );
    assert_eq!(body_text(&get(web, "/").await), "backend a");

    zookeeper.restart().await;
    let restarted_at = Instant::now();
    // The registrant's session survives the restart (the server keeps sessions in its data
    // dir), so `a` stays; a new registrant adds `b`.
    let second = zookeeper.client().await;
    register(&second, PATH, &b.addr.to_string(), "").await;
    wait_for_backends(&sluice, "app", &[a.addr, b.addr], DEADLINE).await;
    eprintln!(
        "ZooKeeper restarted -> change picked up after {:?}",
        restarted_at.elapsed()
    );
    until_routed_to(web, "b").await;
    let recovered = wait_until(DEADLINE, || status(&sluice).last_error.is_none()).await;
    assert!(recovered, "{:?}", status(&sluice));
    drop(registrant);
}

#[tokio::test]
async fn an_outage_longer_than_the_session_opens_a_new_session() {
    if !ZooKeeper::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut zookeeper = ZooKeeper::start(dir.path()).await;
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let registrant = zookeeper.client().await;
    create_path(&registrant, PATH).await;
    register(&registrant, PATH, &a.addr.to_string(), "").await;
    let sluice = start_with(&zookeeper, ", session_timeout: 1s").await;
    wait_for_backends(&sluice, "app", &[a.addr], DEADLINE).await;

    zookeeper.kill();
    // The client gives the session up once the server was silent for 1.4 session timeouts.
    let expired = wait_until(DEADLINE, || {
        status(&sluice)
            .last_error
            .is_some_and(|e| e.contains("Expired") || e.contains("cannot connect"))
    })
    .await;
    assert!(expired, "{:?}", status(&sluice));
    eprintln!("session given up: {:?}", status(&sluice).last_error);
    assert_eq!(backend_addresses(&sluice, "app"), BTreeSet::from([a.addr]));

    zookeeper.restart().await;
    let second = zookeeper.client().await;
    register(&second, PATH, &b.addr.to_string(), "").await;
    wait_for_backends(&sluice, "app", &[a.addr, b.addr], DEADLINE).await;
    until_routed_to(sluice.local_addr("web").unwrap(), "b").await;
    drop(registrant);
}
