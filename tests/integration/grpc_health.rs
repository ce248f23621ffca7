//! gRPC health checks end to end: a real gRPC health server (grpc.health.v1, written here on
//! hyper's HTTP/2 server with hand-encoded protobuf: no protoc in the build) behind a pool with
//! `health_check.type: grpc`, over h2c and over TLS. The backend goes down on NOT_SERVING,
//! and on an unknown service (grpc-status 5), with the reason in /status, and comes back on
//! SERVING after `rise` checks.

use crate::common::upstream::{TestCa, server_tls};
use crate::common::*;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Serving status by service name (grpc.health.v1: 1 SERVING, 2 NOT_SERVING); a service
/// not in the map is answered NOT_FOUND (grpc-status 5), as grpc-go's health server does.
type Statuses = Arc<Mutex<HashMap<String, u8>>>;

type GrpcBody = StreamBody<futures_stream::Frames>;

mod futures_stream {
    use super::*;
    /// A fixed list of frames: the data of the answer, then its trailers.
    pub struct Frames(pub std::collections::VecDeque<Frame<Bytes>>);
    impl futures_core::Stream for Frames {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.pop_front().map(Ok))
        }
    }
}

/// The service name of a framed `HealthCheckRequest` (field 1, a string).
fn service_of(body: &[u8]) -> String {
    let message = &body[5.min(body.len())..];
    match message {
        [0x0a, len, rest @ ..] if (*len as usize) <= rest.len() && *len < 0x80 => {
            String::from_utf8_lossy(&rest[..*len as usize]).into_owned()
        }
        _ => String::new(),
    }
}

async fn health_answer(request: Request<Incoming>, statuses: Statuses) -> Response<GrpcBody> {
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let mut frames = std::collections::VecDeque::new();
    let mut trailers = HeaderMap::new();
    let known = statuses.lock().unwrap().get(&service_of(&body)).copied();
    let builder = Response::builder().header("content-type", "application/grpc");
    match (path.as_str(), known) {
        ("/grpc.health.v1.Health/Check", Some(status)) => {
            frames.push_back(Frame::data(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status])));
            trailers.insert("grpc-status", "0".parse().unwrap());
            frames.push_back(Frame::trailers(trailers));
            builder
                .body(StreamBody::new(futures_stream::Frames(frames)))
                .unwrap()
        }
        _ => {
            // Trailers-only: the status in the headers, no body.
            builder
                .header("grpc-status", "5")
                .header("grpc-message", "unknown service")
                .body(StreamBody::new(futures_stream::Frames(frames)))
                .unwrap()
        }
    }
}

/// A gRPC health server on 127.0.0.1:0, h2c or (with `tls`) h2 over TLS.
async fn grpc_health_server(
    statuses: Statuses,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (statuses, tls) = (Arc::clone(&statuses), tls.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let statuses = Arc::clone(&statuses);
                    async move { Ok::<_, Infallible>(health_answer(request, statuses).await) }
                });
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    Some(config) => {
                        let Ok(stream) =
                            tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                        else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    addr
}

async fn backend_status(sluice: &sluice::Server) -> (String, String) {
    let status = get(sluice.admin_addr().unwrap(), "/status").await;
    let status: serde_json::Value = serde_json::from_slice(status.body()).unwrap();
    let backend = &status["pools"][0]["backends"][0];
    (
        backend["state"].as_str().unwrap_or("").to_owned(),
        backend["reason"].as_str().unwrap_or("").to_owned(),
    )
}

async fn until_state(sluice: &sluice::Server, state: &str) -> (String, String) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let last = backend_status(sluice).await;
        if last.0 == state {
            return last;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "backend never {state}: last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(backend: SocketAddr, service: &str, tls: &str) -> String {
    format!(
        r#"admin: {{ bind: 127.0.0.1:0 }}
listeners:
  web: {{ bind: 127.0.0.1:0, pool: grpc }}
pools:
  grpc:
    protocol: h2
    backends: [{backend}]
{tls}    health_check: {{ type: grpc, {service} interval: 100ms, timeout: 1s, rise: 2, fall: 2 }}
"#
    )
}

#[tokio::test]
async fn a_grpc_check_follows_the_serving_status_over_h2c() {
    let statuses: Statuses = Arc::default();
    statuses.lock().unwrap().insert("app".into(), 1);
    let backend = grpc_health_server(Arc::clone(&statuses), None).await;
    let sluice = start_sluice(&config(backend, "service: app,", "")).await;
    until_state(&sluice, "up").await;

    statuses.lock().unwrap().insert("app".into(), 2);
    let (_, reason) = until_state(&sluice, "down").await;
    assert!(
        reason.contains("2 consecutive checks failed (fall=2)")
            && reason.contains("gRPC NOT_SERVING for \"app\""),
        "{reason}"
    );
    statuses.lock().unwrap().insert("app".into(), 1);
    until_state(&sluice, "up").await;

    // A service the server does not know: a trailers-only NOT_FOUND.
    statuses.lock().unwrap().remove("app");
    let (_, reason) = until_state(&sluice, "down").await;
    assert!(reason.contains("grpc-status 5 unknown service"), "{reason}");
}

#[tokio::test]
async fn a_grpc_check_speaks_tls_when_the_pool_does() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let (chain, key) = ca.leaf(&["grpc.test"]);
    let statuses: Statuses = Arc::default();
    statuses.lock().unwrap().insert(String::new(), 1);
    let backend = grpc_health_server(
        Arc::clone(&statuses),
        Some(server_tls((chain, key), &[b"h2"])),
    )
    .await;
    let tls = format!(
        "    tls: {{ ca: {}, sni: grpc.test }}\n",
        ca.pem_path.display()
    );
    let sluice = start_sluice(&config(backend, "", &tls)).await;
    let (_, reason) = until_state(&sluice, "up").await;
    statuses.lock().unwrap().insert(String::new(), 2);
    let (_, reason_down) = until_state(&sluice, "down").await;
    assert!(
        reason_down.contains("gRPC NOT_SERVING"),
        "{reason} / {reason_down}"
    );
}
