//! `runtime.scheduler: per_thread`: worker threads with an event loop each accept and serve
//! the connections (HTTP and TCP), across reloads and through a drain.

use crate::common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(10);

fn workers_config(backends: &[SocketAddr], echo: SocketAddr, extra_listener: &str) -> String {
    config_with("shared", backends, echo, extra_listener)
}

fn config_with(
    accept: &str,
    backends: &[SocketAddr],
    echo: SocketAddr,
    extra_listener: &str,
) -> String {
    let list: Vec<String> = backends.iter().map(|a| a.to_string()).collect();
    format!(
        "runtime: {{worker_threads: 2, scheduler: per_thread, accept: {accept}}}\n\
         listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n  \
         db: {{bind: 127.0.0.1:0, protocol: tcp, pool: echo}}\n{extra_listener}\
         pools:\n  app:\n    backends: [{}]\n  echo:\n    backends: [{echo}]\n",
        list.join(", ")
    )
}

/// Opens a keep-alive connection and completes one request on it; the connection stays open.
async fn open_and_ask(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    // The backends answer "backend NAME": read to the end of that body.
    while !(seen.ends_with(b"\r\n\r\nbackend a") || seen.ends_with(b"\r\n\r\nbackend b")) {
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no whole response: {:?}", String::from_utf8_lossy(&seen)))
            .unwrap();
        assert_ne!(
            read,
            0,
            "closed early; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&chunk[..read]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    stream
}

#[tokio::test]
async fn worker_threads_serve_http_and_tcp_and_count_their_connections() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    let echo = spawn_tcp_echo_after_eof().await;
    let sluice = start_sluice(&workers_config(&[a.addr, b.addr], echo, "")).await;
    let web = sluice.local_addr("web").unwrap();
    assert_eq!(sluice.worker_connections(), vec![0, 0]);

    let mut open = Vec::new();
    for _ in 0..20 {
        open.push(open_and_ask(web).await);
    }
    // Every connection is held by a worker thread, none by the runtime that started sluice.
    let counted = wait_until(DEADLINE, || {
        sluice.worker_connections().iter().sum::<usize>() == 20
    })
    .await;
    assert!(counted, "{:?}", sluice.worker_connections());
    assert_eq!(a.requests() + b.requests(), 20);

    // TCP through a worker: bytes both ways and the half-close.
    let mut client = TcpStream::connect(sluice.local_addr("db").unwrap())
        .await
        .unwrap();
    client.write_all(b"ping").await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, client.read_to_end(&mut answer))
        .await
        .expect("the echo comes back")
        .unwrap();
    assert_eq!(answer, b"echo:ping");

    drop(open);
    let released = wait_until(DEADLINE, || sluice.worker_connections() == vec![0, 0]).await;
    assert!(released, "{:?}", sluice.worker_connections());
}

#[tokio::test]
async fn worker_connections_show_in_status_and_metrics() {
    let a = spawn_backend("a").await;
    let echo = spawn_tcp_echo_after_eof().await;
    let admin = "admin: {bind: 127.0.0.1:0}\n";
    let sluice = start_sluice(&format!("{admin}{}", workers_config(&[a.addr], echo, ""))).await;
    let held = open_and_ask(sluice.local_addr("web").unwrap()).await;
    let admin = sluice.admin_addr().unwrap();
    let one_open = wait_until_async(DEADLINE, || async {
        let status: serde_json::Value =
            serde_json::from_slice(get(admin, "/status").await.body()).unwrap();
        let counts = status["worker_connections"].as_array().cloned();
        // The admin request itself is served by the control thread, not a worker.
        counts
            .is_some_and(|c| c.len() == 2 && c.iter().filter_map(|n| n.as_u64()).sum::<u64>() == 1)
    })
    .await;
    assert!(one_open, "status counts the held connection on one worker");
    let metrics = body_text(&get(admin, "/metrics").await);
    let gauges: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_worker_active_connections{"))
        .collect();
    assert_eq!(gauges.len(), 2, "{metrics}");
    drop(held);
}

#[tokio::test]
async fn a_reload_adds_and_removes_listeners_on_every_worker() {
    let a = spawn_backend("a").await;
    let echo = spawn_tcp_echo_after_eof().await;
    let sluice = start_sluice(&workers_config(&[a.addr], echo, "")).await;
    add_serve_and_remove_a_listener(&sluice, "shared", a.addr, echo).await;
    drop(open_and_ask(sluice.local_addr("web").unwrap()).await);
}

#[tokio::test]
async fn a_drain_waits_for_requests_in_flight_on_the_workers() {
    let slow = spawn_backend_with_delay("a", Duration::from_millis(300)).await;
    let echo = spawn_tcp_echo_after_eof().await;
    let sluice = start_sluice(&workers_config(&[slow.addr], echo, "")).await;
    let web = sluice.local_addr("web").unwrap();
    let in_flight = tokio::spawn(async move { get(web, "/").await });
    let started = wait_until(DEADLINE, || {
        sluice.worker_connections().iter().sum::<usize>() == 1
    })
    .await;
    assert!(started);
    let outcome = sluice.shutdown(DEADLINE).await;
    assert_eq!(outcome, sluice::DrainOutcome::Complete);
    let response = in_flight.await.unwrap();
    assert_status(&response, http::StatusCode::OK);
    assert!(TcpStream::connect(web).await.is_err(), "stopped accepting");
}

#[tokio::test]
async fn with_reuseport_each_worker_accepts_on_its_own_socket() {
    let a = spawn_backend("a").await;
    let echo = spawn_tcp_echo_after_eof().await;
    let sluice = start_sluice(&config_with("reuseport", &[a.addr], echo, "")).await;
    let web = sluice.local_addr("web").unwrap();
    // The kernel picks a socket of the group by a hash of the client's port: 40 connections
    // from 40 ports all on one worker would be a 1 in 2^39 chance, so both get some.
    let mut open = Vec::new();
    for _ in 0..40 {
        open.push(open_and_ask(web).await);
    }
    let spread = wait_until(DEADLINE, || {
        let counts = sluice.worker_connections();
        counts.iter().sum::<usize>() == 40 && counts.iter().all(|&n| n > 0)
    })
    .await;
    assert!(spread, "{:?}", sluice.worker_connections());
    drop(open);

    // A listener added by a reload gets a group of its own; a removed one closes all of it.
    add_serve_and_remove_a_listener(&sluice, "reuseport", a.addr, echo).await;
}

/// Adds a listener by reload, serves connections on it, then removes it by reload and waits
/// until it refuses connections: no worker may go on accepting on any of its sockets.
async fn add_serve_and_remove_a_listener(
    sluice: &sluice::Server,
    accept: &str,
    backend: SocketAddr,
    echo: SocketAddr,
) {
    let extra = "  more: {bind: 127.0.0.1:0, pool: app}\n";
    sluice
        .reload(config(&config_with(accept, &[backend], echo, extra)))
        .await
        .unwrap();
    let more = sluice.local_addr("more").unwrap();
    // Enough connections that both workers take some in practice; each must be served
    // whichever takes it.
    for _ in 0..10 {
        drop(open_and_ask(more).await);
    }
    sluice
        .reload(config(&config_with(accept, &[backend], echo, "")))
        .await
        .unwrap();
    let refused = wait_until_async(DEADLINE, || async {
        TcpStream::connect(more).await.is_err()
    })
    .await;
    assert!(
        refused,
        "no worker accepts on a removed listener ({accept})"
    );
}

#[tokio::test]
async fn connections_are_moved_to_the_less_loaded_worker() {
    let a = spawn_backend("a").await;
    let echo = spawn_tcp_echo_after_eof().await;
    // With a shared socket the worker that last accepted tends to win every wake-up race
    // (50 connections opened at once went 50/0): the balancer must even that out.
    let sluice = start_sluice(&workers_config(&[a.addr], echo, "")).await;
    let web = sluice.local_addr("web").unwrap();
    let mut open = Vec::new();
    for _ in 0..40 {
        open.push(open_and_ask(web).await);
    }
    let counts = sluice.worker_connections();
    assert_eq!(counts.iter().sum::<usize>(), 40, "{counts:?}");
    let (most, fewest) = (counts.iter().max(), counts.iter().min());
    assert!(
        most.zip(fewest)
            .is_some_and(|(most, fewest)| most - fewest <= 2),
        "{counts:?}"
    );
    // Moved connections are served and counted like any other.
    drop(open);
    let released = wait_until(DEADLINE, || sluice.worker_connections() == vec![0, 0]).await;
    assert!(released, "{:?}", sluice.worker_connections());
}
