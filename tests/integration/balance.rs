//! Selection algorithms end to end: real backends, a real sluice, thousands of requests.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

fn weighted_pool(backends: &[&Backend], weights: &[u32], pool_options: &str) -> String {
    let entries: Vec<String> = backends
        .iter()
        .zip(weights)
        .map(|(b, w)| format!("      - {{address: {}, weight: {w}}}\n", b.addr))
        .collect();
    format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n{pool_options}    backends:\n{}",
        entries.concat()
    )
}

/// Sends `count` GETs over one keep-alive connection, with `header` set per request, and
/// counts which backend answered.
async fn distribution(
    addr: SocketAddr,
    count: usize,
    header: impl Fn(usize) -> Option<(&'static str, String)>,
) -> HashMap<String, usize> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut counts = HashMap::new();
    for i in 0..count {
        let mut request = Request::get("/").header("host", "t");
        if let Some((name, value)) = header(i) {
            request = request.header(name, value);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        *counts
            .entry(String::from_utf8_lossy(&body).into_owned())
            .or_default() += 1;
    }
    counts
}

async fn three_backends() -> [Backend; 3] {
    [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    ]
}

fn share(counts: &HashMap<String, usize>, name: &str) -> usize {
    counts.get(&format!("backend {name}")).copied().unwrap_or(0)
}

#[tokio::test]
async fn round_robin_gives_exact_weighted_shares() {
    let [a, b, c] = three_backends().await;
    let sluice = start_sluice(&weighted_pool(&[&a, &b, &c], &[1, 2, 3], "")).await;
    let counts = distribution(sluice.local_addr("web").unwrap(), 3000, |_| None).await;
    assert_eq!(
        (
            share(&counts, "a"),
            share(&counts, "b"),
            share(&counts, "c")
        ),
        (500, 1000, 1500)
    );
}

#[tokio::test]
async fn random_follows_the_weights_within_tolerance() {
    // Tolerance: +-20% of each expected share; at 3000 draws the binomial standard deviation
    // is under 3% of the share, so a fair implementation fails this far less than 1 in 10^6.
    let [a, b, c] = three_backends().await;
    let options = "    algorithm: random\n";
    let sluice = start_sluice(&weighted_pool(&[&a, &b, &c], &[1, 2, 3], options)).await;
    let counts = distribution(sluice.local_addr("web").unwrap(), 3000, |_| None).await;
    for (name, expected) in [("a", 500.0), ("b", 1000.0), ("c", 1500.0)] {
        let got = share(&counts, name) as f64;
        assert!(
            (got - expected).abs() <= 0.2 * expected,
            "{name} got {got}, expected ~{expected}: {counts:?}"
        );
    }
}

#[tokio::test]
async fn hash_spreads_keys_evenly_within_the_ring_variance() {
    // Each backend owns 160 points of the ring, so its share of the key space varies by about
    // 1/sqrt(160) = 8% from run to run (the ports, hence the points, are random). +-35% is
    // over 4 standard deviations; the key sample (3000) adds under 3%.
    let [a, b, c] = three_backends().await;
    let options = "    algorithm: hash\n    hash: {key: 'header:X-User'}\n";
    let sluice = start_sluice(&weighted_pool(&[&a, &b, &c], &[1, 1, 1], options)).await;
    let counts = distribution(sluice.local_addr("web").unwrap(), 3000, |i| {
        Some(("x-user", format!("user-{i}")))
    })
    .await;
    for name in ["a", "b", "c"] {
        let got = share(&counts, name) as f64;
        assert!(
            (got - 1000.0).abs() <= 350.0,
            "{name} got {got}, expected ~1000: {counts:?}"
        );
    }
}

#[tokio::test]
async fn hash_keeps_a_key_on_one_backend() {
    let [a, b, c] = three_backends().await;
    let options = "    algorithm: hash\n    hash: {key: 'header:X-User'}\n";
    let sluice = start_sluice(&weighted_pool(&[&a, &b, &c], &[1, 1, 1], options)).await;
    let counts = distribution(sluice.local_addr("web").unwrap(), 50, |_| {
        Some(("x-user", "alice".into()))
    })
    .await;
    assert_eq!(counts.len(), 1, "one user, one backend: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_and_p2c_send_fewer_requests_to_a_slow_backend() {
    for algorithm in ["least_conn", "p2c"] {
        let fast_one = spawn_backend("fast1").await;
        let fast_two = spawn_backend("fast2").await;
        let slow = spawn_backend_with_delay("slow", Duration::from_millis(50)).await;
        let options = format!("    algorithm: {algorithm}\n");
        let yaml = weighted_pool(&[&fast_one, &fast_two, &slow], &[1, 1, 1], &options);
        let sluice = start_sluice(&yaml).await;
        let addr = sluice.local_addr("web").unwrap();
        // 12 concurrent clients, 25 requests each: round robin would give each backend 100.
        let clients: Vec<_> = (0..12)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..25 {
                        assert_status(&get(addr, "/").await, StatusCode::OK);
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
        let (one, two, slow_count) = (fast_one.requests(), fast_two.requests(), slow.requests());
        assert_eq!(one + two + slow_count, 300);
        eprintln!("{algorithm}: slow backend got {slow_count} of 300 ({one}, {two})");
        assert!(
            slow_count < 60,
            "{algorithm}: slow backend got {slow_count} of 300 ({one}, {two})"
        );
    }
}

#[tokio::test]
async fn sticky_cookie_pins_a_client_to_its_backend() {
    let [a, b, c] = three_backends().await;
    let options = "    sticky: {cookie: SLUICE, ttl: 1h}\n";
    let sluice = start_sluice(&weighted_pool(&[&a, &b, &c], &[1, 1, 1], options)).await;
    let addr = sluice.local_addr("web").unwrap();
    let first = get(addr, "/").await;
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("SLUICE=") && cookie.contains("Max-Age=3600"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let pinned = body_text(&first);
    for _ in 0..10 {
        let request = Request::get("/")
            .header("host", "t")
            .header("cookie", pair.as_str())
            .body(http_body_util::Full::new(Bytes::new()).boxed())
            .unwrap();
        let response = send(addr, request).await;
        assert_eq!(body_text(&response), pinned);
        assert!(
            response.headers().get("set-cookie").is_none(),
            "no re-issue while pinned"
        );
    }
}

#[tokio::test]
async fn first_packs_up_to_max_connections_then_spills() {
    let one = spawn_backend_with_delay("one", Duration::from_millis(300)).await;
    let two = spawn_backend_with_delay("two", Duration::from_millis(300)).await;
    let yaml = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    algorithm: first\n    backends:\n      - {{address: {}, max_connections: 2}}\n      - {}\n",
        one.addr, two.addr
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();
    let requests: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { get(addr, "/").await }))
        .collect();
    for request in requests {
        assert_status(&request.await.unwrap(), StatusCode::OK);
    }
    assert_eq!((one.requests(), two.requests()), (2, 3));
}
