//! File discovery: backends follow the file as it is rewritten (by rename, as config managers
//! do), a broken file keeps the last good set and says where it is broken, static and
//! discovered backends merge, and a request in flight survives the removal of its backend.

use crate::common::*;
use sluice::Server;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(5);

fn config_with_file(path: &Path, static_backends: &str) -> String {
    format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n\
         pools:\n  app:\n{static_backends}    discovery:\n      file: {}\n",
        path.display()
    )
}

async fn status(sluice: &Server) -> serde_json::Value {
    let response = get(sluice.admin_addr().unwrap(), "/status").await;
    serde_json::from_slice(response.body()).unwrap()
}

/// Names of the backends that answered `count` requests.
async fn answered_by(addr: SocketAddr, count: usize) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for _ in 0..count {
        names.insert(body_text(&get(addr, "/").await));
    }
    names
}

#[tokio::test]
async fn backends_follow_the_file_and_a_broken_file_keeps_the_last_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backends.yaml");
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    write_file(&path, &format!("- {}\n", a.addr));
    let sluice = start_sluice(&config_with_file(&path, "")).await;
    let web = sluice.local_addr("web").unwrap();
    wait_for_backends(&sluice, "app", &[a.addr], DEADLINE).await;
    assert_eq!(
        answered_by(web, 4).await,
        BTreeSet::from(["backend a".into()])
    );

    // Added, in the long form.
    write_file(
        &path,
        &format!("- {}\n- {{address: {}, weight: 2}}\n", a.addr, b.addr),
    );
    wait_for_backends(&sluice, "app", &[a.addr, b.addr], DEADLINE).await;
    let both = BTreeSet::from(["backend a".to_owned(), "backend b".to_owned()]);
    assert_eq!(answered_by(web, 6).await, both);

    // Removed: no new request reaches it.
    write_file(&path, &format!("- {}\n", b.addr));
    wait_for_backends(&sluice, "app", &[b.addr], DEADLINE).await;
    let before = a.requests();
    assert_eq!(
        answered_by(web, 6).await,
        BTreeSet::from(["backend b".into()])
    );
    assert_eq!(a.requests(), before);

    // Broken: the set stays, and /status says where the file is wrong.
    write_file(&path, &format!("- {}\n- 10.0.0.1\n", a.addr));
    let reported = wait_until(DEADLINE, || {
        let discovery = &sluice.discovery_status()["app"][0];
        discovery.last_error.is_some()
    })
    .await;
    assert!(reported, "the broken file is reported");
    let status = status(&sluice).await;
    let source = &status["pools"][0]["discovery"][0];
    assert_eq!(source["source"], "file");
    assert_eq!(source["backends"], 1);
    let error = source["last_error"].as_str().unwrap();
    assert!(
        error.contains("backends.yaml:2:3: [1].address: invalid socket address"),
        "{error}"
    );
    assert_eq!(backend_addresses(&sluice, "app"), BTreeSet::from([b.addr]));
    assert_eq!(
        answered_by(web, 3).await,
        BTreeSet::from(["backend b".into()])
    );

    // Fixed again: the error clears.
    write_file(&path, &format!("- {}\n- {}\n", a.addr, b.addr));
    wait_for_backends(&sluice, "app", &[a.addr, b.addr], DEADLINE).await;
    assert!(sluice.discovery_status()["app"][0].last_error.is_none());
    let metrics = body_text(&get(sluice.admin_addr().unwrap(), "/metrics").await);
    assert!(
        metrics.contains(
            r#"sluice_discovery_updates_total{pool="app",source="file",result="failure"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn static_and_discovered_backends_merge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backends.yaml");
    let fixed = spawn_backend("static").await;
    let found = spawn_backend("found").await;
    write_file(&path, &format!("- {}\n- {}\n", found.addr, fixed.addr));
    let static_list = format!("    backends: [{{address: {}, weight: 2}}]\n", fixed.addr);
    let sluice = start_sluice(&config_with_file(&path, &static_list)).await;
    let web = sluice.local_addr("web").unwrap();
    wait_for_backends(&sluice, "app", &[fixed.addr, found.addr], DEADLINE).await;
    let snapshot = sluice.snapshot().load();
    let pool = &snapshot.pools["app"];
    assert_eq!(
        pool.backends[0].address.inet(),
        Some(fixed.addr),
        "static backends first"
    );
    assert_eq!(
        pool.backends[0].weight, 2,
        "the static entry wins over the file's"
    );
    let both = BTreeSet::from(["backend found".to_owned(), "backend static".to_owned()]);
    assert_eq!(answered_by(web, 6).await, both);

    // Emptying the file leaves the static backend.
    write_file(&path, "[]\n");
    wait_for_backends(&sluice, "app", &[fixed.addr], DEADLINE).await;
}

#[tokio::test]
async fn a_request_in_flight_survives_the_removal_of_its_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backends.yaml");
    let slow = spawn_backend("slow").await;
    write_file(&path, &format!("- {}\n", slow.addr));
    let sluice = start_sluice(&config_with_file(&path, "")).await;
    let web = sluice.local_addr("web").unwrap();
    wait_for_backends(&sluice, "app", &[slow.addr], DEADLINE).await;
    let state = sluice.snapshot().load().pools["app"].backends[0]
        .state
        .clone();
    let request = tokio::spawn(async move { get(web, "/sleep/800").await });
    assert!(wait_until(DEADLINE, || slow.started.load(Ordering::SeqCst) == 1).await);
    assert_eq!(state.in_flight(), 1);
    write_file(&path, "[]\n");
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    let response = request.await.unwrap();
    assert_eq!(
        body_text(&response),
        "backend slow",
        "in-flight request finished"
    );
    assert_eq!(state.in_flight(), 0);
    // An empty pool answers 503 rather than failing the connection.
    assert_eq!(
        get(web, "/").await.status(),
        http::StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn a_reload_restarts_changed_sources_and_stops_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("one.yaml"), dir.path().join("two.yaml"));
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let fixed = spawn_backend("static").await;
    write_file(&first, &format!("- {}\n", a.addr));
    write_file(&second, &format!("- {}\n", b.addr));
    let static_list = format!("    backends: [{}]\n", fixed.addr);
    let sluice = start_sluice(&config_with_file(&first, &static_list)).await;
    wait_for_backends(&sluice, "app", &[fixed.addr, a.addr], DEADLINE).await;
    let kept = sluice.snapshot().load().pools["app"].backends[0]
        .state
        .clone();

    // Unchanged source: a reload keeps its set (no moment without the discovered backend).
    let plan = sluice
        .reload(config(&config_with_file(&first, &static_list)))
        .await
        .unwrap();
    assert!(plan.is_empty(), "{plan}");
    assert_eq!(
        backend_addresses(&sluice, "app"),
        BTreeSet::from([fixed.addr, a.addr])
    );

    // Changed source: restarted on the new file.
    let plan = sluice
        .reload(config(&config_with_file(&second, &static_list)))
        .await
        .unwrap();
    assert!(
        plan.to_string().contains("discovery sources changed"),
        "{plan}"
    );
    wait_for_backends(&sluice, "app", &[fixed.addr, b.addr], DEADLINE).await;

    // Removed source: its backends leave with the reload; the static one keeps its state.
    let without = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n{static_list}"
    );
    sluice.reload(config(&without)).await.unwrap();
    assert_eq!(
        backend_addresses(&sluice, "app"),
        BTreeSet::from([fixed.addr])
    );
    assert!(sluice.discovery_status().is_empty());
    let state = &sluice.snapshot().load().pools["app"].backends[0].state;
    assert!(std::sync::Arc::ptr_eq(state, &kept));
}
