//! L4 integration tests: raw TCP backends and a real sluice on 127.0.0.1:0.

use crate::common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn tcp_config(backends: &[std::net::SocketAddr]) -> String {
    let list: Vec<String> = backends.iter().map(|a| a.to_string()).collect();
    format!(
        "listeners:\n  db:\n    bind: 127.0.0.1:0\n    protocol: tcp\n    pool: db\n\
         pools:\n  db:\n    backends: [{}]\n    timeouts: {{connect: 1s}}\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn echo_round_trip_with_half_close() {
    let echo = spawn_tcp_echo_after_eof().await;
    let sluice = start_sluice(&tcp_config(&[echo])).await;
    let mut client = TcpStream::connect(sluice.local_addr("db").unwrap())
        .await
        .unwrap();
    let payload = pattern(256 * 1024);
    client.write_all(&payload).await.unwrap();
    // Our FIN must reach the backend (it answers only after EOF) while our read side stays open.
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("backend's answer and FIN arrive")
        .unwrap();
    assert_eq!(&answer[..5], b"echo:");
    assert!(
        answer[5..] == payload[..],
        "payload differs after the round trip"
    );
}

#[tokio::test]
async fn connections_alternate_across_backends_and_release_in_flight() {
    let first = spawn_tcp_echo_after_eof().await;
    let second = spawn_tcp_echo_after_eof().await;
    let sluice = start_sluice(&tcp_config(&[first, second])).await;
    let addr = sluice.local_addr("db").unwrap();
    for _ in 0..4 {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"echo:ping");
    }
    let snapshot = sluice.snapshot().load();
    let pool = &snapshot.pools["db"];
    let picked: Vec<u64> = pool
        .backends
        .iter()
        .map(|b| b.state.picked_total())
        .collect();
    assert_eq!(picked, vec![2, 2], "round robin per connection");
    let released = wait_until(Duration::from_secs(5), || {
        pool.backends.iter().all(|b| b.state.in_flight() == 0)
    })
    .await;
    assert!(
        released,
        "in-flight counts return to zero once sessions close"
    );
}

#[tokio::test]
async fn dead_backend_closes_the_client_quickly() {
    let dead = dead_addr().await;
    let sluice = start_sluice(&tcp_config(&[dead])).await;
    let mut client = TcpStream::connect(sluice.local_addr("db").unwrap())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "client connection closed instead of hanging");
    assert!(buf.is_empty());
}
