//! L7 integration tests: real hyper backends and a real sluice on 127.0.0.1:0.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::convert::Infallible;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[tokio::test]
async fn round_robin_alternates_across_three_backends() {
    let backends = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let sluice = start_sluice(&http_config(&addrs, "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let mut answers = Vec::new();
    for _ in 0..6 {
        let response = get(addr, "/").await;
        assert_status(&response, StatusCode::OK);
        answers.push(body_text(&response));
    }
    assert_eq!(
        answers,
        [
            "backend a",
            "backend b",
            "backend c",
            "backend a",
            "backend b",
            "backend c"
        ]
    );
}

#[tokio::test]
async fn one_mib_bodies_are_byte_exact_both_ways() {
    let backend = spawn_backend("a").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();

    let upload = pattern(1 << 20);
    let request = Request::post("/echo?x=1")
        .header("host", "test.local")
        .body(Full::new(Bytes::from(upload.clone())).boxed())
        .unwrap();
    let response = send(addr, request).await;
    assert_status(&response, StatusCode::OK);
    assert_eq!(response.body().len(), upload.len());
    assert!(response.body()[..] == upload[..], "echoed body differs");
    let seen = backend.seen();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].uri, "/echo?x=1",
        "path and query forwarded unchanged"
    );
    assert_eq!(seen[0].body_len, upload.len());

    let response = get(addr, "/bytes/1048576").await;
    assert_status(&response, StatusCode::OK);
    assert_eq!(response.headers()["content-length"], "1048576");
    assert!(response.body()[..] == pattern(1 << 20)[..]);
}

#[tokio::test]
async fn chunked_request_and_response_stream_through() {
    let backend = spawn_backend("a").await;
    // A chunked upload within the request buffer is read whole and sent with its length; with
    // no buffer it streams to the backend chunked, as it arrives.
    let streaming = "listeners:\n  streaming:\n    bind: 127.0.0.1:0\n    pool: app\n    limits: {request_buffer: 0}\n";
    let yaml = http_config(&[backend.addr], "").replace("listeners:\n", streaming);
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();

    for (listener, framing) in [
        ("web", "content-length"),
        ("streaming", "transfer-encoding"),
    ] {
        let chunks = ["hello ", "chunked ", "world"]
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
        let body = StreamBody::new(tokio_stream_iter(chunks)).boxed();
        let request = Request::post("/echo")
            .header("host", "t")
            .body(body)
            .unwrap();
        let response = send(sluice.local_addr(listener).unwrap(), request).await;
        assert_status(&response, StatusCode::OK);
        assert_eq!(body_text(&response), "hello chunked world");
        let seen = backend.seen().pop().unwrap();
        let value = |name: &str| {
            seen.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        match framing {
            "content-length" => {
                assert_eq!(value("content-length").as_deref(), Some("19"));
                assert_eq!(value("transfer-encoding"), None);
            }
            _ => {
                assert_eq!(value("transfer-encoding").as_deref(), Some("chunked"));
                assert_eq!(value("content-length"), None);
            }
        }
    }

    let raw = raw_exchange(
        addr,
        b"GET /chunked HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{raw}"
    );
    assert!(raw.contains("first,") && raw.contains("third"), "{raw}");
}

fn tokio_stream_iter<I: Iterator + Unpin>(iter: I) -> impl futures_core::Stream<Item = I::Item> {
    struct S<I>(I);
    impl<I: Iterator + Unpin> futures_core::Stream for S<I> {
        type Item = I::Item;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<I::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    S(iter)
}

#[tokio::test]
async fn keep_alive_is_reused_on_both_sides() {
    let backend = spawn_backend("a").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for i in 0..5 {
        let request = format!("GET /n{i} HTTP/1.1\r\nHost: t\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = read_one_response(&mut stream).await;
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "request {i}: {response}"
        );
        assert!(response.ends_with("backend a"), "request {i}: {response}");
    }
    assert_eq!(backend.requests(), 5);
    assert_eq!(
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "upstream keep-alive connection reused"
    );
}

#[tokio::test]
async fn one_connection_moves_between_sluices_own_server_and_hyper_without_losing_a_request() {
    // Body-less requests are read by sluice's own HTTP/1 server, requests with a body by
    // hyper; pipelined on one connection, each must be answered once, in order.
    let backend = spawn_backend("a").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n\
              POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody\
              HEAD /3 HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .await
        .unwrap();
    let first = read_one_response(&mut stream).await;
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("backend a"),
        "{first}"
    );
    let second = read_one_response(&mut stream).await;
    assert!(
        second.starts_with("HTTP/1.1 200") && second.ends_with("backend a"),
        "{second}"
    );
    // HEAD: the headers of a GET (its length included) and no body.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed early");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("content-length: 9"),
        "{head}"
    );
    // The connection is still good after all three, and nothing was left unanswered.
    stream
        .write_all(b"GET /4 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let fourth = read_one_response(&mut stream).await;
    assert!(fourth.ends_with("backend a"), "{fourth}");
    assert_eq!(backend.requests(), 4);
}

#[tokio::test]
async fn a_smuggling_attempt_after_a_served_request_is_refused_on_the_same_connection() {
    let backend = spawn_backend("a").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let raw = raw_exchange(
        addr,
        b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n\
          GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("HTTP/1.1 400"), "{raw}");
    assert_eq!(backend.requests(), 1);
}

/// Reads one response with a content-length body from a keep-alive connection.
async fn read_one_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= head_end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn http_1_0_client_is_answered_and_closed() {
    let backend = spawn_backend("a").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let raw = raw_exchange(addr, b"GET /old HTTP/1.0\r\n\r\n", Duration::from_secs(5)).await;
    assert!(raw.starts_with("HTTP/1.0 200"), "{raw}");
    assert!(raw.ends_with("backend a"), "closed after the body: {raw}");
}

#[tokio::test]
async fn forwarded_headers_added_hop_by_hop_stripped_host_kept() {
    let backend = spawn_backend("a").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let request = Request::get("/hop")
        .header("host", "shop.example:8443")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let response = send(addr, request).await;
    assert_status(&response, StatusCode::OK);
    assert!(
        response.headers().get("keep-alive").is_none(),
        "response hop-by-hop stripped"
    );
    assert_eq!(response.headers()["x-backend"], "a");

    let seen = &backend.seen()[0];
    let header = |name: &str| {
        seen.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("host").as_deref(), Some("shop.example:8443"));
    assert_eq!(
        header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        header("x-forwarded-host").as_deref(),
        Some("shop.example:8443")
    );
    assert_eq!(header("x-custom").as_deref(), Some("kept"));
    for hop in ["x-private", "keep-alive", "proxy-connection"] {
        assert_eq!(header(hop), None, "{hop} must not reach the backend");
    }
}

#[tokio::test(start_paused = true)]
async fn dead_backend_gives_502_quickly() {
    let dead = dead_addr().await;
    let sluice = start_sluice(&http_config(&[dead], "    timeouts: {connect: 2s}\n")).await;
    let addr = sluice.local_addr("web").unwrap();
    let started = Instant::now();
    let response = get(addr, "/").await;
    assert_status(&response, StatusCode::BAD_GATEWAY);
    // Paused clock: the two retries' backoff (25 ms base: 75 ms at most together), where a
    // wait on the connect timeout would show its 2 s.
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
}

#[tokio::test]
async fn no_available_backend_gives_503() {
    let backend = spawn_backend("a").await;
    let yaml = format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends:\n      - {{address: {}, weight: 0}}\n",
        backend.addr
    );
    let sluice = start_sluice(&yaml).await;
    let response = get(sluice.local_addr("web").unwrap(), "/").await;
    assert_status(&response, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.requests(), 0, "a drained backend gets nothing");
}

#[tokio::test(start_paused = true)]
async fn slow_backend_gives_504_at_the_response_timeout() {
    let backend = spawn_backend("slow").await;
    let sluice = start_sluice(&http_config(
        &[backend.addr],
        "    timeouts: {response: 300ms}\n",
    ))
    .await;
    let started = Instant::now();
    let response = get(sluice.local_addr("web").unwrap(), "/sleep/3000").await;
    assert_status(&response, StatusCode::GATEWAY_TIMEOUT);
    let took = started.elapsed();
    // Paused clock: the timeout to the millisecond of the timer wheel.
    assert!(
        took >= Duration::from_millis(300) && took <= Duration::from_millis(301),
        "took {took:?}"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let backend = spawn_backend("a").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let stream = TcpStream::connect(sluice.local_addr("web").unwrap())
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = Request::get("http://h2.example/h2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"backend a");
    let seen = &backend.seen()[0];
    assert_eq!(
        seen.headers["host"], "h2.example",
        ":authority becomes Host for HTTP/1.1"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_request_head_is_cut_off_but_idle_keep_alive_is_not() {
    let backend = spawn_backend("a").await;
    let yaml = format!(
        "listeners:\n  web:\n    bind: 127.0.0.1:0\n    pool: app\n    timeouts: {{client_header: 300ms, client_idle: 10s}}\n\
         pools:\n  app:\n    backends: [{}]\n",
        backend.addr
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();

    // Slowloris: half a request head, then nothing. The connection must be closed.
    let started = Instant::now();
    let closed = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\n",
        Duration::from_secs(5),
    )
    .await;
    let took = started.elapsed();
    assert!(!closed.contains("200"), "{closed}");
    // Paused clock: the header timeout to the millisecond of the timer wheel.
    assert!(
        took >= Duration::from_millis(300) && took <= Duration::from_millis(301),
        "took {took:?}"
    );
    assert_eq!(
        backend.requests(),
        0,
        "an incomplete head never reaches a backend"
    );

    // Keep-alive: idle for longer than the header timeout between two requests is fine.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_one_response(&mut stream)
            .await
            .starts_with("HTTP/1.1 200")
    );
    tokio::time::sleep(Duration::from_millis(700)).await; // the idle period under test
    stream
        .write_all(b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_one_response(&mut stream)
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn malformed_and_smuggling_requests_get_400_and_never_reach_a_backend() {
    let backend = spawn_backend("a").await;
    let sluice = start_sluice(&http_config(&[backend.addr], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    let cases: [&[u8]; 3] = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    ];
    for case in cases {
        let raw = raw_exchange(addr, case, Duration::from_secs(5)).await;
        assert!(
            raw.starts_with("HTTP/1.1 400"),
            "{:?} -> {raw}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn admin_answers_health_and_readiness() {
    let backend = spawn_backend("a").await;
    let yaml = format!(
        "admin:\n  bind: 127.0.0.1:0\n{}",
        http_config(&[backend.addr], "")
    );
    let sluice = start_sluice(&yaml).await;
    let admin = sluice.admin_addr().expect("admin bound");
    let healthz = get(admin, "/healthz").await;
    assert_status(&healthz, StatusCode::OK);
    assert_eq!(body_text(&healthz), "ok\n");
    let ready = get(admin, "/ready").await;
    assert_status(&ready, StatusCode::OK);
    assert!(body_text(&ready).contains("1 listeners"));
    assert_status(&get(admin, "/nope").await, StatusCode::NOT_FOUND);
}
