//! `sluice demo`: three tiny "hello" backends on loopback and a sluice listener in front of
//! them, so a newcomer sees round robin work with one command and no config file.

use crate::config::Config;
use crate::error::Error;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;

pub const DEFAULT_DEMO_LISTEN: &str = "127.0.0.1:8080";
pub const DEMO_BACKENDS: usize = 3;

/// Starts a backend on an ephemeral loopback port answering every request with
/// `hello from backend N`. Returns its address; it runs until the runtime stops.
pub async fn spawn_hello_backend(number: usize) -> Result<SocketAddr, Error> {
    let body = Bytes::from(format!("hello from backend {number}\n"));
    spawn_static_backend(
        number,
        "127.0.0.1:0".parse().expect("literal address"),
        body,
    )
    .await
}

/// Starts a backend on `bind` answering every request with `body` (benchmarks use it as a
/// fast, allocation-free upstream).
pub async fn spawn_static_backend(
    number: usize,
    bind: SocketAddr,
    body: Bytes,
) -> Result<SocketAddr, Error> {
    serve_static(number, bind, body, None, TEXT).await
}

/// The path at which a counting backend answers how many requests it served.
pub const REQUESTS_SERVED_PATH: &str = "/_backend/requests";

/// `spawn_static_backend` that also counts the requests it serves, and answers the count at
/// `REQUESTS_SERVED_PATH` (neither that request nor health checks at `/health` count): the
/// failover load tests ask each backend what it served.
pub async fn spawn_counting_backend(
    number: usize,
    bind: SocketAddr,
    body: Bytes,
) -> Result<SocketAddr, Error> {
    serve_static(number, bind, body, Some(Arc::new(AtomicU64::new(0))), TEXT).await
}

/// `spawn_counting_backend` answering `body` as `application/json` (the compression load
/// test's upstream).
pub async fn spawn_counting_json_backend(
    number: usize,
    bind: SocketAddr,
    body: Bytes,
) -> Result<SocketAddr, Error> {
    serve_static(number, bind, body, Some(Arc::new(AtomicU64::new(0))), JSON).await
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// About `size` bytes of JSON shaped like an API listing (records with ids, names, flags and
/// numbers), so it compresses as real answers do, not as one repeated byte.
pub fn json_body(size: usize) -> Bytes {
    let mut text = String::with_capacity(size + 128);
    text.push('[');
    let mut id = 0u64;
    while text.len() + 120 < size {
        let score = (id * 7919) % 10_007;
        text.push_str(&format!(
            "{{\"id\":{id},\"name\":\"user-{id:05}\",\"active\":{},\"score\":{score},\"tags\":[\"t{}\",\"t{}\"]}},",
            !id.is_multiple_of(3),
            id % 17,
            score % 29
        ));
        id += 1;
    }
    text.push_str("{}]");
    while text.len() < size {
        text.push(' ');
    }
    Bytes::from(text)
}

async fn serve_static(
    number: usize,
    bind: SocketAddr,
    body: Bytes,
    served: Option<Arc<AtomicU64>>,
    content_type: &'static str,
) -> Result<SocketAddr, Error> {
    let socket = TcpListener::bind(bind).await.map_err(|source| Error::Io {
        context: format!("cannot start demo backend {number}"),
        source,
    })?;
    let addr = socket.local_addr().map_err(|source| Error::Io {
        context: "demo backend address".into(),
        source,
    })?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let body = body.clone();
            let served = served.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let mut answer = body.clone();
                    if let Some(served) = &served {
                        match request.uri().path() {
                            REQUESTS_SERVED_PATH => {
                                let count = served.load(Ordering::Relaxed);
                                answer = Bytes::from(format!("{count}\n"));
                            }
                            "/health" => {}
                            _ => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    let mut response = Response::new(Full::new(answer));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static(content_type),
                    );
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Starts the demo backends and returns the config that fronts them, written as YAML and
/// parsed like any operator's file, so the demo exercises the real config path.
pub async fn demo_config(listen: SocketAddr) -> Result<Config, Error> {
    let mut backends = Vec::with_capacity(DEMO_BACKENDS);
    for number in 1..=DEMO_BACKENDS {
        backends.push(spawn_hello_backend(number).await?.to_string());
    }
    let yaml = format!(
        "listeners:\n  demo:\n    bind: \"{listen}\"\n    protocol: http\n    pool: hello\n\
         pools:\n  hello:\n    algorithm: round_robin\n    backends: [{}]\n    \
         timeouts: {{connect: 1s, response: 5s}}\n",
        backends.join(", ")
    );
    Ok(Config::parse(&yaml, "<demo>")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn exchange(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn a_counting_backend_counts_requests_but_not_checks_or_questions() {
        let bind = SocketAddr::from(([127, 0, 0, 1], 0));
        let addr = spawn_counting_backend(1, bind, Bytes::from_static(b"x"))
            .await
            .expect("bound");
        exchange(addr, "/").await;
        exchange(addr, "/a").await;
        exchange(addr, "/health").await;
        assert!(
            exchange(addr, REQUESTS_SERVED_PATH)
                .await
                .ends_with("\r\n\r\n2\n")
        );
        assert!(
            exchange(addr, REQUESTS_SERVED_PATH)
                .await
                .ends_with("\r\n\r\n2\n")
        );
    }
}
