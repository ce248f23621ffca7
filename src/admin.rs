//! The admin listener (loopback by default): `/healthz` (process alive) and `/ready` (config
//! loaded, listeners bound). Status, metrics and admin actions build on this router.

use crate::state::SharedSnapshot;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

pub fn spawn(
    listener: TcpListener,
    snapshot: SharedSnapshot,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let connections = tracker.clone();
    tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => return,
            };
            let Ok((stream, _peer)) = accepted else {
                continue;
            };
            let snapshot = snapshot.clone();
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let service = service_fn(move |request| {
                    let snapshot = snapshot.clone();
                    async move { Ok::<_, Infallible>(route(&request, &snapshot)) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    () = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(error) = result {
                    debug!(%error, "admin connection error");
                }
            });
        }
    });
}

fn route(request: &Request<Incoming>, snapshot: &SharedSnapshot) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET | &Method::HEAD, "/ready") => {
            let listeners = snapshot.load().config.listeners.len();
            text(StatusCode::OK, format!("ready: {listeners} listeners\n"))
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
