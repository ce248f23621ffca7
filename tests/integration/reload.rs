//! Hot reload: zero failed requests under load, in-flight work finishes, runtime state kept,
//! listeners added and removed live, broken configs refused with the old one kept.

use crate::common::*;
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_fail_no_request() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let c = spawn_backend("c").await;
    let first = two_listeners(&[a.addr, b.addr], "");
    let second = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends: [{{address: {}, weight: 3}}, {}]\n",
        a.addr, c.addr
    );
    let sluice = start_sluice(&first).await;
    let addr = sluice.local_addr("web").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..6)
        .map(|i| tokio::spawn(load_client(addr, i % 3 != 0, stop.clone(), tally.clone())))
        .collect();
    for round in 0..50 {
        let yaml = if round % 2 == 0 { &second } else { &first };
        sluice.reload(config(yaml)).await.unwrap();
        // Pace the reloads so traffic flows on each config in between.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        0,
        "failed requests ({ok} succeeded)"
    );
    assert!(ok > 100, "load actually ran: {ok} requests");
    assert!(
        b.requests() > 0 && c.requests() > 0,
        "both configs served traffic"
    );
    assert_eq!(
        sluice.local_addr("web"),
        Some(addr),
        "listener never re-bound"
    );
}

#[tokio::test]
async fn in_flight_request_survives_the_removal_of_its_backend() {
    let slow = spawn_backend("slow").await;
    let other = spawn_backend("other").await;
    let sluice = start_sluice(&two_listeners(&[slow.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let in_flight = tokio::spawn(async move { get(addr, "/sleep/1000").await });
    assert!(
        wait_until(Duration::from_secs(5), || slow
            .started
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    let old_state = sluice.snapshot().load().pools["app"].backends[0]
        .state
        .clone();
    assert_eq!(old_state.in_flight(), 1);
    sluice
        .reload(config(&two_listeners(&[other.addr], "")))
        .await
        .unwrap();
    assert_eq!(body_text(&get(addr, "/").await), "backend other");
    let response = in_flight.await.unwrap();
    assert_status(&response, StatusCode::OK);
    assert_eq!(body_text(&response), "backend slow");
    assert!(
        wait_until(Duration::from_secs(2), || old_state.in_flight() == 0).await,
        "the removed backend's count drains to zero"
    );
}

#[tokio::test]
async fn in_flight_counts_stay_exact_across_a_reweighting_reload() {
    let slow = spawn_backend("slow").await;
    let sluice = start_sluice(&two_listeners(&[slow.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let requests: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { get(addr, "/sleep/800").await }))
        .collect();
    assert!(
        wait_until(Duration::from_secs(5), || slow
            .started
            .load(Ordering::SeqCst)
            == 3)
        .await
    );
    let reweighted = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends: [{{address: {}, weight: 7}}]\n",
        slow.addr
    );
    let plan = sluice.reload(config(&reweighted)).await.unwrap();
    assert_eq!(plan.pools_changed[0].backends_reweighted.len(), 1);
    let snapshot = sluice.snapshot().load_full();
    let backend = &snapshot.pools["app"].backends[0];
    assert_eq!(backend.weight, 7);
    assert_eq!(
        backend.state.in_flight(),
        3,
        "state carried by identity, weight not part of it"
    );
    for request in requests {
        assert_status(&request.await.unwrap(), StatusCode::OK);
    }
    assert!(wait_until(Duration::from_secs(2), || backend.state.in_flight() == 0).await);
}

#[tokio::test]
async fn long_lived_tcp_session_passes_data_through_ten_reloads() {
    let echo = spawn_tcp_echo().await;
    let other = spawn_tcp_echo().await;
    let yaml = |backend: SocketAddr| {
        format!(
            "listeners:\n  db: {{bind: 127.0.0.1:0, protocol: tcp, pool: db}}\npools:\n  db:\n    backends: [{backend}]\n"
        )
    };
    let sluice = start_sluice(&yaml(echo)).await;
    let mut session = TcpStream::connect(sluice.local_addr("db").unwrap())
        .await
        .unwrap();
    for round in 0..=10 {
        let message = format!("round {round}\n");
        session.write_all(message.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), session.read_exact(&mut buf))
            .await
            .expect("echo arrives")
            .unwrap();
        assert_eq!(buf, message.as_bytes());
        let next = if round % 2 == 0 { other } else { echo };
        sluice.reload(config(&yaml(next))).await.unwrap();
    }
}

#[tokio::test]
async fn listeners_are_added_and_removed_live() {
    let backend = spawn_backend("a").await;
    let sluice = start_sluice(&two_listeners(&[backend.addr], "")).await;
    let with_extra = two_listeners(&[backend.addr], "  extra: {bind: 127.0.0.1:0, pool: app}\n");
    let plan = sluice.reload(config(&with_extra)).await.unwrap();
    assert_eq!(plan.listeners_added, ["extra"]);
    let extra = sluice.local_addr("extra").expect("new listener bound");
    assert_status(&get(extra, "/").await, StatusCode::OK);

    // A request in flight on the listener being removed still completes.
    let in_flight = tokio::spawn(async move { get(extra, "/sleep/500").await });
    assert!(
        wait_until(Duration::from_secs(5), || backend
            .started
            .load(Ordering::SeqCst)
            == 2)
        .await
    );
    let plan = sluice
        .reload(config(&two_listeners(&[backend.addr], "")))
        .await
        .unwrap();
    assert_eq!(plan.listeners_removed, ["extra"]);
    assert!(sluice.local_addr("extra").is_none());
    assert!(
        wait_until(Duration::from_secs(2), || std::net::TcpStream::connect(
            extra
        )
        .is_err())
        .await,
        "removed listener stops accepting"
    );
    assert_status(&in_flight.await.unwrap(), StatusCode::OK);
    assert_status(
        &get(sluice.local_addr("web").unwrap(), "/").await,
        StatusCode::OK,
    );
}

#[tokio::test]
async fn a_port_in_use_aborts_the_whole_reload() {
    let backend = spawn_backend("a").await;
    let other = spawn_backend("b").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let sluice = start_sluice(&two_listeners(&[backend.addr], "")).await;
    let web = sluice.local_addr("web").unwrap();
    let bad = two_listeners(
        &[other.addr],
        &format!(
            "  fresh: {{bind: 127.0.0.1:0, pool: app}}\n  clash: {{bind: '{taken_addr}', pool: app}}\n"
        ),
    );
    let error = sluice.reload(config(&bad)).await.unwrap_err();
    assert!(error.to_string().contains("clash"), "{error}");
    assert!(
        sluice.local_addr("fresh").is_none(),
        "nothing of the failed reload applied"
    );
    assert_eq!(
        body_text(&get(web, "/").await),
        "backend a",
        "old pool still in force"
    );
}

/// Renaming a listener that stays at its address keeps its socket: binding the address again
/// for the new name would fail ("address in use"), and a new socket would lose the kernel's
/// queue of connections not yet accepted.
#[tokio::test]
async fn a_renamed_listener_keeps_its_socket() {
    let backend = spawn_backend("a").await;
    let sluice = start_sluice(&two_listeners(&[backend.addr], "")).await;
    let web = sluice.local_addr("web").unwrap();
    let renamed = format!(
        "listeners:\n  site: {{bind: '{web}', pool: app}}\npools:\n  app:\n    backends: [{}]\n",
        backend.addr
    );
    let plan = sluice.reload(config(&renamed)).await.unwrap();
    assert_eq!(plan.listeners_added, ["site"]);
    assert_eq!(plan.listeners_removed, ["web"]);
    assert_eq!(sluice.local_addr("site"), Some(web), "same address");
    assert!(sluice.local_addr("web").is_none());
    assert_eq!(body_text(&get(web, "/").await), "backend a");

    // And back, with the first config's port 0 ("any port"), which the kept socket's is.
    let plan = sluice
        .reload(config(&two_listeners(&[backend.addr], "")))
        .await
        .unwrap();
    assert_eq!(plan.listeners_added, ["web"]);
    assert_eq!(sluice.local_addr("web"), Some(web));
    assert_eq!(body_text(&get(web, "/").await), "backend a");
}

#[tokio::test]
async fn a_changed_file_is_picked_up_by_the_watcher() {
    let first = spawn_backend("first").await;
    let second = spawn_backend("second").await;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sluice.yaml");
    write_file(&path, &two_listeners(&[first.addr], ""));
    let sluice = sluice::Server::start_from_file(&path).await.unwrap();
    let web = sluice.local_addr("web").unwrap();
    assert_eq!(body_text(&get(web, "/").await), "backend first");
    write_file(&path, &two_listeners(&[second.addr], ""));
    let snapshot = sluice.snapshot().clone();
    let switched = wait_until(Duration::from_secs(10), || {
        snapshot.load().pools["app"].backends[0].address.inet() == Some(second.addr)
    })
    .await;
    assert!(switched, "file change applied without a signal");
    assert_eq!(body_text(&get(web, "/").await), "backend second");
}

/// The value of a counter line such as `sluice_config_reloads_total{result="failure"} 1`.
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

/// Issue 19: under `watch: true` a broken file was reloaded (and reported failed) four
/// times a second for as long as it stayed broken, because sluice's own read of the file
/// looked like a change. The real binary, with its own metrics, over a 5 s window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_watched_file_fails_once_and_restoring_it_clears_the_failure() {
    const FAILED: &str = "sluice_config_reloads_total{result=\"failure\"}";
    let backend = spawn_backend("a").await;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("sluice.yaml");
    let running = format!(
        "watch: true\nadmin: {{bind: 127.0.0.1:0}}\n{}",
        http_config(&[backend.addr], "")
    );
    write_file(&path, &running);
    let (child, web, logs) = spawn_binary(&path);
    let admin: SocketAddr = logged_addr(&wait_for_line(&logs, "admin listening"))
        .parse()
        .unwrap();
    wait_for_line(&logs, "watching the config file");

    write_file(&path, &running.replace("pool: app", "pool: nowhere"));
    let refused = wait_for_line(&logs, "reload failed");
    assert!(refused.contains("nowhere"), "{refused}");
    // The window is the point here: count what comes while the file stays broken.
    let window_end = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut more = Vec::new();
    while let Some(left) = window_end.checked_duration_since(tokio::time::Instant::now()) {
        match logs.recv_timeout(left) {
            Ok(line) if line.contains("reload") => more.push(line),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(more.is_empty(), "one failure, then: {more:#?}");
    let metrics = body_text(&get(admin, "/metrics").await);
    assert_eq!(counter(&metrics, FAILED), 1);
    let status = || async {
        let status: serde_json::Value =
            serde_json::from_slice(get(admin, "/status").await.body()).unwrap();
        status["last_reload"].clone()
    };
    let last = status().await;
    assert_eq!(last["success"], false, "{last}");
    assert_eq!(
        body_text(&get(web, "/").await),
        "backend a",
        "still serving"
    );

    // Back to the running content: the failure is cleared, without a reload or a new failure.
    write_file(&path, &running);
    let cleared = wait_for_line(&logs, "configuration reloaded");
    assert!(cleared.contains("no changes"), "{cleared}");
    let last = status().await;
    assert_eq!(last["success"], true, "{last}");
    assert!(
        last["detail"].as_str().unwrap().starts_with("no changes"),
        "{last}"
    );
    let metrics = body_text(&get(admin, "/metrics").await);
    assert_eq!(counter(&metrics, FAILED), 1);

    terminate(child).await;
}

#[tokio::test]
async fn a_protocol_change_applies_to_new_connections_only() {
    let backend = spawn_backend("a").await;
    let sluice = start_sluice(&two_listeners(&[backend.addr], "")).await;
    let web = sluice.local_addr("web").unwrap();
    let mut open = TcpStream::connect(web).await.unwrap();
    open.write_all(b"GET /before HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(open.read(&mut buf).await.unwrap() > 0);

    let as_tcp =
        two_listeners(&[backend.addr], "").replace("pool: app}", "pool: app, protocol: tcp}");
    let plan = sluice.reload(config(&as_tcp)).await.unwrap();
    assert_eq!(plan.listeners_changed, ["web"]);
    assert_eq!(sluice.local_addr("web"), Some(web), "socket kept");

    // The open connection is still served as HTTP (X-Forwarded-For added)...
    open.write_all(b"GET /old-conn HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(open.read(&mut buf).await.unwrap() > 0);
    // ...while a new one is spliced as plain TCP (the backend sees the bytes untouched).
    let raw = raw_exchange(
        web,
        b"GET /new-conn HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let seen = backend.seen();
    let by_path = |path: &str| {
        seen.iter()
            .find(|s| s.uri == path)
            .unwrap_or_else(|| panic!("{path} not seen"))
    };
    assert!(by_path("/old-conn").headers.contains_key("x-forwarded-for"));
    assert!(!by_path("/new-conn").headers.contains_key("x-forwarded-for"));
}
