//! A fleet that agrees: three sluice instances with the same config over one etcd prefix
//! (real etcd), hashing on a header, each having seen the registry fill in a different order.
//! Every key goes to the same backend through all three; a backend added takes keys only
//! for itself, a backend removed moves only the keys it had, and after a weight change they
//! still agree. The shares moved are printed (docs/high-availability.md quotes them).

use crate::common::etcd::*;
use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sluice::Server;
use std::collections::BTreeMap;
use std::net::SocketAddr;

const PREFIX: &str = "/services/fleet/";
const KEYS: usize = 300;

async fn start(etcd: &Etcd) -> Server {
    start_sluice(&format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n\
         pools:\n  app:\n    algorithm: hash\n    hash: {{key: 'header:X-User'}}\n    \
         discovery:\n      etcd: {{endpoints: ['{}'], prefix: {PREFIX}}}\n",
        etcd.endpoint()
    ))
    .await
}

/// Which backend each key goes to through `web`.
async fn mapping(web: SocketAddr) -> BTreeMap<usize, String> {
    let mut map = BTreeMap::new();
    for key in 0..KEYS {
        let request = http::Request::get("/")
            .header("x-user", format!("user-{key}"))
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
        let response = send(web, request).await;
        assert_eq!(response.status(), 200);
        map.insert(key, body_text(&response));
    }
    map
}

/// The same mapping through every instance; returns it.
async fn agreed(fleet: &[Server]) -> BTreeMap<usize, String> {
    let first = mapping(fleet[0].local_addr("web").unwrap()).await;
    for (number, sluice) in fleet.iter().enumerate().skip(1) {
        let other = mapping(sluice.local_addr("web").unwrap()).await;
        let differ = (0..KEYS).filter(|k| first[k] != other[k]).count();
        assert_eq!(
            differ, 0,
            "instance {number} maps {differ} of {KEYS} keys differently"
        );
    }
    first
}

fn moved(before: &BTreeMap<usize, String>, after: &BTreeMap<usize, String>) -> Vec<usize> {
    (0..KEYS).filter(|k| before[k] != after[k]).collect()
}

#[tokio::test]
async fn three_instances_map_every_key_alike_and_changes_move_only_their_keys() {
    if require_program(&[ETCD], "etcd-server").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let client = etcd.client().await;
    let mut backends = Vec::new();
    for name in ["b0", "b1", "b2", "b3", "b4", "b5"] {
        backends.push(spawn_backend(name).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let key = |addr: SocketAddr| format!("{PREFIX}{addr}");

    // Each instance starts at a different point of the registry's history: the first sees
    // the backends arrive one by one in reverse, the second some at start, the third all.
    let first = start(&etcd).await;
    for &addr in addrs[..5].iter().rev() {
        client.put(key(addr), "", None).await.unwrap();
        if addr == addrs[3] {
            wait_for_backends(&first, "app", &addrs[3..5], DEADLINE).await;
        }
    }
    let second = start(&etcd).await;
    let third = start(&etcd).await;
    let fleet = [first, second, third];
    for sluice in &fleet {
        wait_for_backends(sluice, "app", &addrs[..5], DEADLINE).await;
    }
    let five = agreed(&fleet).await;

    // Added: keys move only to the new backend.
    client.put(key(addrs[5]), "", None).await.unwrap();
    for sluice in &fleet {
        wait_for_backends(sluice, "app", &addrs, DEADLINE).await;
    }
    let six = agreed(&fleet).await;
    let to_new = moved(&five, &six);
    assert!(
        to_new.iter().all(|k| six[k] == "backend b5"),
        "a key moved between old backends"
    );
    eprintln!(
        "backend added (5 -> 6): {} of {KEYS} keys moved ({:.1}%, ideal 1/6 = 16.7%), all to it",
        to_new.len(),
        100.0 * to_new.len() as f64 / KEYS as f64
    );

    // Removed: exactly the keys it had move; every other key stays where it was.
    let on_b2: Vec<usize> = (0..KEYS).filter(|k| six[k] == "backend b2").collect();
    client.delete(key(addrs[2])).await.unwrap();
    let remaining: Vec<SocketAddr> = addrs.iter().copied().filter(|&a| a != addrs[2]).collect();
    for sluice in &fleet {
        wait_for_backends(sluice, "app", &remaining, DEADLINE).await;
    }
    let after = agreed(&fleet).await;
    let from_removed = moved(&six, &after);
    assert_eq!(from_removed, on_b2, "only the removed backend's keys move");
    eprintln!(
        "backend removed (6 -> 5): {} of {KEYS} keys moved ({:.1}%, ideal 1/6 = 16.7%), \
         exactly those it had",
        from_removed.len(),
        100.0 * from_removed.len() as f64 / KEYS as f64
    );
    // Not a vacuous pass: the removed backend did have keys, and they now spread.
    assert!(on_b2.len() > KEYS / 20, "{}", on_b2.len());

    // A weight is part of the ring too: after a weight change the instances still agree.
    // (Raising one backend above all the others rescales every backend's points, which are
    // relative to the heaviest, so keys also move between the others: docs/balance.md.)
    client
        .put(key(addrs[0]), r#"{"weight": 2}"#, None)
        .await
        .unwrap();
    for sluice in &fleet {
        let reweighted = wait_until(DEADLINE, || {
            let snapshot = sluice.snapshot().load();
            (snapshot.pools["app"].backends.iter())
                .any(|b| b.address.inet() == Some(addrs[0]) && b.weight == 2)
        })
        .await;
        assert!(reweighted);
    }
    let heavier = agreed(&fleet).await;
    let changed = moved(&after, &heavier);
    let to_b0 = changed
        .iter()
        .filter(|k| heavier[*k] == "backend b0")
        .count();
    eprintln!(
        "b0 weight 1 -> 2: {} of {KEYS} keys moved, {to_b0} of them to b0",
        changed.len()
    );
    assert!(to_b0 > 0, "the heavier backend took keys");
}
