//! Edge protection end to end (issue 22): one client address per request, used by every
//! consumer (access rules, rate limits, `source_ip` hashing, `X-Forwarded-For` towards the
//! backend, the access log, `/status`, metrics), access rules (403, TCP closed at accept),
//! rate limits (429 with `Retry-After`, TCP connection rate), dry runs, and the per-client
//! connection cap. Real backends, a real sluice, real sockets: the test client is 127.0.0.1.
//!
//! Metrics are process-wide, so each test names its listeners uniquely.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn get_from(
    addr: SocketAddr,
    path: &str,
    forwarded_for: Option<&str>,
) -> http::Response<Bytes> {
    let mut request = Request::get(path).header("host", "test.local");
    if let Some(chain) = forwarded_for {
        request = request.header("x-forwarded-for", chain);
    }
    send(addr, request.body(Full::new(Bytes::new()).boxed()).unwrap()).await
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn metrics(admin: SocketAddr) -> String {
    body_text(&get(admin, "/metrics").await)
}

/// The value of one sample line (labels as Prometheus writes them, in order), 0 when absent.
fn sample(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let backend = spawn_backend("one").await;
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("access.log");
    // 127.0.0.1 (the test client) is not a trusted proxy here.
    let sluice = start_sluice(&format!(
        "admin: {{bind: 127.0.0.1:0}}
listeners:
  spoof:
    bind: 127.0.0.1:0
    pool: app
    access_log: {{format: json, path: '{}'}}
    client_address: {{ trusted_proxies: [10.0.0.0/8] }}
    access: [ {{ deny: 198.51.100.0/24 }} ]
    rate_limit: {{ rate: 1/m, burst: 2, name: per-client }}
pools:
  app: {{ backends: [{}] }}
",
        log.display(),
        backend.addr
    ))
    .await;
    let web = sluice.local_addr("spoof").unwrap();
    // A header naming a denied network does not get the client denied...
    let first = get_from(web, "/", Some("198.51.100.7")).await;
    assert_status(&first, StatusCode::OK);
    // ...and a fresh address per request does not give it a fresh bucket.
    let second = get_from(web, "/", Some("203.0.113.1")).await;
    assert_status(&second, StatusCode::OK);
    let third = get_from(web, "/", Some("203.0.113.2")).await;
    assert_status(&third, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        backend.requests(),
        2,
        "the refused request never reached the backend"
    );
    // The chain goes on with the real peer appended: the backend's rightmost entry is it.
    assert_eq!(
        backend.seen()[0].headers["x-forwarded-for"],
        "198.51.100.7, 127.0.0.1"
    );
    assert!(wait_until(Duration::from_secs(5), || lines(&log).len() == 3).await);
    for line in lines(&log) {
        assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    }
    assert_eq!(lines(&log)[2]["refused"], "rate_limited by per-client");
}

/// The combined format names the refusing rule after the user agent, quoted, on refused
/// lines only: what combined defines reads as before (the fields between the quotes).
#[tokio::test]
async fn combined_access_logs_name_the_refusing_rule_in_a_trailing_field() {
    let backend = spawn_backend("one").await;
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("access.log");
    let sluice = start_sluice(&format!(
        "listeners:
  combined-refusals:
    bind: 127.0.0.1:0
    pool: app
    access_log: {{format: combined, path: '{}'}}
    rate_limit: {{ rate: 1/m, burst: 2, name: per-client }}
pools:
  app: {{ backends: [{}] }}
",
        log.display(),
        backend.addr
    ))
    .await;
    let web = sluice.local_addr("combined-refusals").unwrap();
    for expected in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        assert_status(&get_from(web, "/x", None).await, expected);
    }
    let read = || -> Vec<String> {
        (std::fs::read_to_string(&log).unwrap_or_default().lines())
            .map(str::to_owned)
            .collect()
    };
    assert!(wait_until(Duration::from_secs(5), || read().len() == 3).await);
    let logged = read();
    // `"request" status bytes "referer" "user agent"`: split on the quotes, the combined
    // fields are where a combined parser looks for them on every line.
    for (line, status) in logged.iter().zip(["200", "200", "429"]) {
        let parts: Vec<&str> = line.split('"').collect();
        assert!(parts[0].starts_with("127.0.0.1 - - ["), "{line}");
        assert_eq!(parts[1], "GET /x HTTP/1.1", "{line}");
        assert_eq!(parts[2].split_whitespace().next(), Some(status), "{line}");
        assert_eq!(parts[3], "-", "{line}");
    }
    assert!(logged[0].ends_with(" \"-\" \"-\""), "{}", logged[0]);
    assert!(
        logged[2].ends_with(" \"-\" \"-\" \"rate_limited by per-client\""),
        "{}",
        logged[2]
    );
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_for_every_consumer() {
    let (one, two) = (spawn_backend("one").await, spawn_backend("two").await);
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("access.log");
    let sluice = start_sluice(&format!(
        "admin: {{bind: 127.0.0.1:0}}
listeners:
  trusted:
    bind: 127.0.0.1:0
    pool: app
    forwarded: true
    access_log: {{format: json, path: '{}'}}
    client_address: {{ trusted_proxies: [127.0.0.0/8] }}
    access: [ {{ deny: 192.0.2.0/24, name: lab }} ]
    routes:
      - match: {{ path_prefix: /login }}
        pool: app
        rate_limit: {{ rate: 1/m, burst: 1, name: login }}
      - match: {{ path_prefix: / }}
        pool: app
pools:
  app:
    algorithm: hash
    backends: [{}, {}]
",
        log.display(),
        one.addr,
        two.addr
    ))
    .await;
    let web = sluice.local_addr("trusted").unwrap();
    let admin = sluice.admin_addr().unwrap();

    // Access: the forwarded client is denied, whatever the trusted peer is.
    let denied = get_from(web, "/", Some("192.0.2.5")).await;
    assert_status(&denied, StatusCode::FORBIDDEN);
    assert_eq!(
        one.requests() + two.requests(),
        0,
        "a 403 never reaches a backend"
    );

    // X-Forwarded-For and Forwarded: the chain ends with the client sluice decided on; the
    // trusted hop after it (127.0.0.5) gives way.
    let passed = get_from(web, "/", Some("spoofed, 198.51.100.7, 127.0.0.5")).await;
    assert_status(&passed, StatusCode::OK);
    let seen: Vec<_> = one.seen().into_iter().chain(two.seen()).collect();
    assert_eq!(seen[0].headers["x-forwarded-for"], "spoofed, 198.51.100.7");
    assert_eq!(
        seen[0].headers["forwarded"],
        "for=198.51.100.7;host=test.local;proto=http"
    );

    // Rate limit: by the forwarded client, one bucket each, 429 with Retry-After.
    assert_status(
        &get_from(web, "/login", Some("198.51.100.7")).await,
        StatusCode::OK,
    );
    let limited = get_from(web, "/login", Some("198.51.100.7")).await;
    assert_status(&limited, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "60");
    assert_status(
        &get_from(web, "/login", Some("198.51.100.8")).await,
        StatusCode::OK,
    );

    // source_ip hashing: one client always lands on one backend, and clients spread.
    let mut by_client = std::collections::BTreeMap::new();
    for client in 0..16 {
        for _ in 0..3 {
            let chain = format!("203.0.113.{client}");
            let answer = body_text(&get_from(web, "/", Some(&chain)).await);
            by_client
                .entry(client)
                .or_insert_with(Vec::new)
                .push(answer);
        }
    }
    for (client, answers) in &by_client {
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "client {client}: {answers:?}"
        );
    }
    let backends: std::collections::BTreeSet<_> =
        by_client.values().map(|a| a[0].clone()).collect();
    assert_eq!(
        backends.len(),
        2,
        "16 clients over 2 backends: {by_client:?}"
    );

    // The access log names the client and the rule.
    assert!(wait_until(Duration::from_secs(5), || lines(&log).len() == 5 + 48).await);
    let logged = lines(&log);
    assert_eq!(logged[0]["client_ip"], "192.0.2.5");
    assert_eq!(logged[0]["status"], 403);
    assert_eq!(logged[0]["refused"], "access_denied by lab");
    assert_eq!(logged[1]["client_ip"], "198.51.100.7");
    assert_eq!(logged[3]["refused"], "rate_limited by login");

    // Metrics and /status explain every refusal.
    let text = metrics(admin).await;
    assert_eq!(
        sample(
            &text,
            "sluice_requests_refused_total{listener=\"trusted\",route=\"\",rule=\"lab\",reason=\"access_denied\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "sluice_requests_refused_total{listener=\"trusted\",route=\"routes[0]\",rule=\"login\",reason=\"rate_limited\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "sluice_http_requests_total{listener=\"trusted\",class=\"4xx\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "sluice_http_requests_total{listener=\"trusted\",class=\"2xx\"}"
        ),
        51.0
    );
    let status: serde_json::Value =
        serde_json::from_slice(get(admin, "/status").await.body()).unwrap();
    let listener = &status["listeners"][0];
    let top = listener["edge"]["top_refused"].as_array().unwrap();
    assert!(
        top.iter()
            .any(|r| r["key"] == "198.51.100.7" && r["rule"] == "login"),
        "{listener}"
    );
    assert_eq!(listener["edge"]["rate_limit_keys"], 2);
}

#[tokio::test]
async fn dry_runs_pass_and_count() {
    let backend = spawn_backend("one").await;
    let sluice = start_sluice(&format!(
        "admin: {{bind: 127.0.0.1:0}}
listeners:
  dry:
    bind: 127.0.0.1:0
    pool: app
    access: [ {{ deny: 127.0.0.0/8, dry_run: true, name: try-deny }} ]
    rate_limit: {{ rate: 1/m, burst: 1, key: 'header:X-Api-Key', dry_run: true, name: api }}
pools:
  app: {{ backends: [{}] }}
",
        backend.addr
    ))
    .await;
    let web = sluice.local_addr("dry").unwrap();
    for _ in 0..3 {
        let request = Request::get("/")
            .header("host", "test.local")
            .header("x-api-key", "k-1")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
        assert_status(&send(web, request).await, StatusCode::OK);
    }
    assert_eq!(backend.requests(), 3);
    let text = metrics(sluice.admin_addr().unwrap()).await;
    assert_eq!(
        sample(
            &text,
            "sluice_requests_refused_total{listener=\"dry\",route=\"\",rule=\"try-deny\",reason=\"access_denied_dry_run\"}"
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "sluice_requests_refused_total{listener=\"dry\",route=\"\",rule=\"api\",reason=\"rate_limited_dry_run\"}"
        ),
        2.0
    );
}

/// Reads until the peer closes; `true` when it closed without sending a byte.
async fn closed_silently(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 256];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn connections_per_client_are_capped() {
    let backend = spawn_backend("one").await;
    let sluice = start_sluice(&format!(
        "listeners:
  capped:
    bind: 127.0.0.1:0
    pool: app
    max_connections_per_client: 1
pools:
  app: {{ backends: [{}] }}
",
        backend.addr
    ))
    .await;
    let web = sluice.local_addr("capped").unwrap();
    let request = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
    let mut first = TcpStream::connect(web).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut answer = [0u8; 64];
    let n = first.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "the first connection is served"
    );
    let mut second = TcpStream::connect(web).await.unwrap();
    let _ = second.write_all(request).await;
    assert!(
        closed_silently(&mut second).await,
        "over the cap: closed without an answer"
    );
    drop(first);
    // The place is given back when the first connection closes.
    let reopened = wait_until_async(Duration::from_secs(5), || async {
        try_get(web, "/")
            .await
            .is_some_and(|body| body == "backend one")
    })
    .await;
    assert!(reopened);
}

/// An echo backend that counts the connections it accepted.
async fn counting_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn tcp_listeners_deny_at_accept_and_limit_the_connection_rate() {
    let (echo, accepted) = counting_echo().await;
    let sluice = start_sluice(&format!(
        "listeners:
  tcp-denied:
    bind: 127.0.0.1:0
    protocol: tcp
    pool: echo
    access: [ {{ allow: 10.0.0.0/8 }}, {{ deny: all }} ]
  tcp-rate:
    bind: 127.0.0.1:0
    protocol: tcp
    pool: echo
    rate_limit: {{ rate: 1/m, burst: 2 }}
pools:
  echo: {{ backends: [{echo}] }}
"
    ))
    .await;
    let denied = sluice.local_addr("tcp-denied").unwrap();
    let mut stream = TcpStream::connect(denied).await.unwrap();
    let _ = stream.write_all(b"hello").await;
    assert!(
        closed_silently(&mut stream).await,
        "denied: closed at accept"
    );

    let limited = sluice.local_addr("tcp-rate").unwrap();
    for round in 0..2 {
        let mut stream = TcpStream::connect(limited).await.unwrap();
        stream.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping", "connection {round} within the burst");
    }
    let mut third = TcpStream::connect(limited).await.unwrap();
    let _ = third.write_all(b"ping").await;
    assert!(
        closed_silently(&mut third).await,
        "over the connection rate"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "refused connections never reach the backend"
    );
}

#[tokio::test]
async fn buckets_survive_a_reload_that_keeps_their_rule() {
    let backend = spawn_backend("one").await;
    let yaml = |access: &str, rate: &str| {
        format!(
            "listeners:
  reloaded:
    bind: 127.0.0.1:0
    pool: app
    access: [ {{ deny: {access} }} ]
    rate_limit: {{ rate: {rate}, burst: 1, name: steady }}
pools:
  app: {{ backends: [{}] }}
",
            backend.addr
        )
    };
    let sluice = start_sluice(&yaml("192.0.2.0/24", "1/m")).await;
    let web = sluice.local_addr("reloaded").unwrap();
    assert_status(&get(web, "/").await, StatusCode::OK);
    assert_status(&get(web, "/").await, StatusCode::TOO_MANY_REQUESTS);
    // Another access rule, the same rate limit: the emptied bucket stays empty.
    let plan = sluice
        .reload(config(&yaml("198.51.100.0/24", "1/m")))
        .await
        .unwrap();
    assert!(
        plan.to_string().contains(
            "access rules: access[0] deny 192.0.2.0/24 -> access[0] deny 198.51.100.0/24"
        ),
        "{plan}"
    );
    assert_status(&get(web, "/").await, StatusCode::TOO_MANY_REQUESTS);
    // A new rate: new buckets, full.
    let plan = sluice
        .reload(config(&yaml("198.51.100.0/24", "2/m")))
        .await
        .unwrap();
    assert!(plan.to_string().contains("(buckets start full)"), "{plan}");
    assert_status(&get(web, "/").await, StatusCode::OK);
}
