//! sluice's own HTTP/1 client against backends that answer with raw bytes: every response
//! framing, interim responses, connection reuse and its limits, backends that close kept-alive
//! connections behind sluice's back, and answers that arrive while an upload still streams.

use crate::common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a raw backend does after answering a request.
#[derive(Clone, Copy, PartialEq)]
enum After {
    KeepOpen,
    Close,
}

#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
    /// Connections sluice closed (EOF read where a request head would start).
    closed: AtomicUsize,
}

/// A backend that reads each request head (and a body with Content-Length, unless `skip_body`)
/// and writes `answer(head)` verbatim.
async fn raw_backend<F>(skip_body: bool, answer: F) -> (SocketAddr, Arc<Counts>)
where
    F: Fn(&str) -> (Vec<u8>, After) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let answer = Arc::new(answer);
    let seen = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.connections.fetch_add(1, Ordering::SeqCst);
            let (answer, seen) = (Arc::clone(&answer), Arc::clone(&seen));
            tokio::spawn(async move {
                serve_raw(stream, skip_body, answer, Arc::clone(&seen)).await;
                seen.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

async fn serve_raw<F>(mut stream: TcpStream, skip_body: bool, answer: Arc<F>, seen: Arc<Counts>)
where
    F: Fn(&str) -> (Vec<u8>, After),
{
    let mut pending = Vec::new();
    loop {
        let Some(end) = read_head(&mut stream, &mut pending).await else {
            return;
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end);
        if !skip_body {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            while pending.len() < length {
                let mut chunk = [0u8; 65536];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                }
            }
            pending.drain(..length);
        }
        seen.requests.fetch_add(1, Ordering::SeqCst);
        let (bytes, after) = answer(&head);
        if stream.write_all(&bytes).await.is_err() || after == After::Close {
            return;
        }
    }
}

/// Reads until a blank line ends a head; the head's length, or `None` at EOF.
async fn read_head(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn sluice_for(backend: SocketAddr) -> (sluice::Server, SocketAddr) {
    let sluice = start_sluice(&http_config(&[backend], "")).await;
    let addr = sluice.local_addr("web").unwrap();
    (sluice, addr)
}

/// Sends `count` GETs one after another on one keep-alive client connection.
async fn sequential_gets(addr: SocketAddr, count: usize) -> Vec<(StatusCode, String)> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut answers = Vec::new();
    for _ in 0..count {
        let request = Request::get("/")
            .header("host", "test")
            .body(Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        answers.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    answers
}

fn all_ok(answers: &[(StatusCode, String)], body: &str) {
    for (i, (status, text)) in answers.iter().enumerate() {
        assert_eq!(
            (*status, text.as_str()),
            (StatusCode::OK, body),
            "request {i}"
        );
    }
}

#[tokio::test]
async fn chunked_response_streams_through_and_the_connection_is_reused() {
    let (backend, counts) = raw_backend(false, |_| {
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        (body.to_vec(), After::KeepOpen)
    })
    .await;
    let (_sluice, addr) = sluice_for(backend).await;
    all_ok(&sequential_gets(addr, 5).await, "hello world");
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_delimited_by_close_is_read_whole_and_the_connection_not_reused() {
    let (backend, counts) = raw_backend(false, |_| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(),
            After::Close,
        )
    })
    .await;
    let (_sluice, addr) = sluice_for(backend).await;
    all_ok(&sequential_gets(addr, 3).await, "until the end");
    assert_eq!(counts.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn http_1_0_and_connection_close_answers_are_not_reused() {
    for answer in [
        &b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
        &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
    ] {
        // The backend keeps its side open: sluice must not reuse it anyway.
        let (backend, counts) =
            raw_backend(false, move |_| (answer.to_vec(), After::KeepOpen)).await;
        let (_sluice, addr) = sluice_for(backend).await;
        all_ok(&sequential_gets(addr, 3).await, "ok");
        assert_eq!(counts.connections.load(Ordering::SeqCst), 3);
    }
}

#[tokio::test]
async fn a_kept_alive_connection_the_backend_closed_is_retried_on_a_new_one() {
    // Claims keep-alive, then closes right after each answer: the next request finds the
    // pooled connection dead and is sent again on a fresh one, unseen by the client.
    let (backend, counts) = raw_backend(false, |_| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            After::Close,
        )
    })
    .await;
    // Pool retries off: the resend on a new connection is the client's own, not a retry.
    let config = http_config(&[backend], "    retry: { attempts: 0 }\n");
    let sluice = start_sluice(&config).await;
    let addr = sluice.local_addr("web").unwrap();
    all_ok(&sequential_gets(addr, 5).await, "ok");
    assert_eq!(counts.requests.load(Ordering::SeqCst), 5);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let (backend, _) = raw_backend(false, |_| {
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal".to_vec(),
            After::KeepOpen,
        )
    })
    .await;
    let (_sluice, addr) = sluice_for(backend).await;
    all_ok(&sequential_gets(addr, 2).await, "final");
}

#[tokio::test]
async fn head_responses_have_no_body_and_keep_the_connection() {
    let (backend, counts) = raw_backend(false, |head| {
        let body = if head.starts_with("HEAD") {
            ""
        } else {
            "0123456789"
        };
        (
            format!("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{body}").into_bytes(),
            After::KeepOpen,
        )
    })
    .await;
    let (_sluice, addr) = sluice_for(backend).await;
    let head = send(
        addr,
        Request::head("/")
            .body(Full::new(bytes::Bytes::new()).boxed())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "10");
    assert!(head.body().is_empty());
    all_ok(&sequential_gets(addr, 2).await, "0123456789");
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn oversized_or_garbled_response_heads_are_502() {
    let huge = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    for answer in [huge.into_bytes(), b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()] {
        let (backend, _) = raw_backend(false, move |_| (answer.clone(), After::KeepOpen)).await;
        let (_sluice, addr) = sluice_for(backend).await;
        let response = get(addr, "/").await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    }
}

#[tokio::test]
async fn an_answer_sent_before_the_upload_ended_reaches_the_client() {
    // The backend refuses the upload after its head, without reading the 8 MiB body.
    let (backend, _) = raw_backend(true, |_| {
        (
            b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big\n".to_vec(),
            After::Close,
        )
    })
    .await;
    let (_sluice, addr) = sluice_for(backend).await;
    let body = vec![b'x'; 8 << 20];
    let request = Request::builder()
        .method(Method::POST)
        .uri("/upload")
        .header("content-length", body.len())
        .body(Full::new(bytes::Bytes::from(body)).boxed())
        .unwrap();
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), send(addr, request))
        .await
        .expect("answered before the upload ended");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body_text(&response), "too big\n");
}

#[tokio::test]
async fn a_body_that_arrives_after_its_head_is_streamed_whole() {
    // Head and half the body first, the rest once sluice has read the head.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let body: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let expected = String::from_utf8(body.clone()).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                while let Some(end) = read_head(&mut stream, &mut pending).await {
                    pending.drain(..end);
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let (first, rest) = body.split_at(body.len() / 2);
                    let sent = async {
                        stream.write_all(head.as_bytes()).await?;
                        stream.write_all(first).await?;
                        stream.flush().await?;
                        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                        stream.write_all(rest).await
                    };
                    if sent.await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (_sluice, addr) = sluice_for(backend).await;
    all_ok(&sequential_gets(addr, 3).await, &expected);
}

#[tokio::test]
async fn a_reload_that_removes_a_backend_closes_the_idle_connections_kept_to_it() {
    let ok = |_: &str| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            After::KeepOpen,
        )
    };
    let (old, old_counts) = raw_backend(false, ok).await;
    let (new, new_counts) = raw_backend(false, ok).await;
    let (sluice, addr) = sluice_for(old).await;
    all_ok(&sequential_gets(addr, 2).await, "ok");
    assert_eq!(
        old_counts.connections.load(Ordering::SeqCst),
        1,
        "one kept connection"
    );
    assert_eq!(old_counts.closed.load(Ordering::SeqCst), 0);

    // No more traffic to the old backend's pool entry: only the reload can close it.
    sluice
        .reload(config(&http_config(&[new], "")))
        .await
        .unwrap();
    let closed = wait_until(std::time::Duration::from_secs(5), || {
        old_counts.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(
        closed,
        "the idle connection to the removed backend is still open"
    );
    all_ok(&sequential_gets(addr, 1).await, "ok");
    assert_eq!(new_counts.requests.load(Ordering::SeqCst), 1);
}
