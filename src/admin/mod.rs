//! The admin listener (loopback by default): `/healthz` (process alive), `/ready` (config
//! loaded, listeners bound), `/status` (JSON), `/metrics` (Prometheus text), and
//! `POST /reload` (re-read the config file; answers with the outcome).
//!
//! Mutating endpoints are refused from non-loopback peers: the admin bind may be widened for
//! scraping, but changing the daemon stays a local action.
//!
//! This file: the accept loop, routing, the token/peer check and response helpers. The
//! `/status` document is built in `status.rs`, backend actions run in `actions.rs`, the
//! gauges `/metrics` reads from the snapshot in `gauges.rs`, and `/` serves
//! `status_page.html`. A sampler task reads the counters every few seconds into `history.rs`
//! (rates, latency quantiles and the page's charts).
//!
//! A trigger: every change it makes goes through the control plane's narrow interface
//! (`ControlPlane`). Must not import `server` or the control plane's owner.

mod actions;
mod gauges;
mod history;
mod status;

use crate::control::ControlPlane;
use crate::discovery::Discovery;
use crate::error::Chain;
use actions::backend_action;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use status::status;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

type AdminResponse = Response<Full<Bytes>>;

/// What the admin API reads and asks: the control plane, and the discovery registry (for the
/// sources' status).
pub struct Admin {
    pub control: Arc<dyn ControlPlane>,
    pub discovery: Arc<Discovery>,
}

/// The admin listener's own state: what it was given, and the samples it takes.
struct Served {
    admin: Admin,
    history: history::History,
}

pub fn spawn(listener: TcpListener, admin: Admin, stop: CancellationToken, tracker: &TaskTracker) {
    let admin = Arc::new(Served {
        admin,
        history: history::History::default(),
    });
    tracker.spawn(sample(Arc::clone(&admin), stop.clone()));
    let connections = tracker.clone();
    tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.cancelled() => return,
            };
            let Ok((stream, peer)) = accepted else {
                continue;
            };
            let admin = Arc::clone(&admin);
            let stop = stop.clone();
            connections.spawn(async move {
                let service = service_fn(move |request| {
                    let admin = Arc::clone(&admin);
                    async move { Ok::<_, Infallible>(route(request, peer, &admin).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    () = stop.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(error) = result {
                    debug!(error = %Chain(&error), "admin connection error");
                }
            });
        }
    });
}

/// Reads every listener's and backend's counters into the history, at once and then every
/// `history::TICK`, until `stop`.
async fn sample(served: Arc<Served>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(history::TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let snapshot = served.admin.control.view().snapshot;
        let mut reading = history::Reading::default();
        for listener in snapshot.config.listeners.values() {
            let handles = crate::metrics::listener_handles(&listener.name);
            reading
                .listeners
                .push((listener.name.clone(), handles.responses.get()));
        }
        for pool in snapshot.pools.values() {
            for backend in &pool.backends {
                reading.backends.push(history::BackendReading {
                    pool: pool.config.name.clone(),
                    address: backend.address.to_string(),
                    responses: backend.state.responses_by_class(),
                    failures: backend.state.failures(),
                    latency: backend.state.latency_histogram.counts(),
                });
            }
        }
        served.history.record(tokio::time::Instant::now(), reading);
    }
}

async fn route(request: Request<Incoming>, peer: SocketAddr, served: &Served) -> AdminResponse {
    let admin = &served.admin;
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    match (request.uri().path(), read) {
        ("/healthz", true) => text(StatusCode::OK, "ok\n".into()),
        ("/ready", true) => {
            let listeners = admin.control.view().snapshot.config.listeners.len();
            text(StatusCode::OK, format!("ready: {listeners} listeners\n"))
        }
        ("/status", true) => json(StatusCode::OK, &status(admin, &served.history)),
        ("/metrics", true) => {
            let view = admin.control.view();
            gauges::refresh_gauges(&view.snapshot);
            let open: Vec<(String, usize)> = (view.listeners.into_iter())
                .map(|(name, _, open)| (name, open))
                .collect();
            match crate::metrics::render(&open, &view.worker_connections) {
                Some(body) => {
                    let mut response = text(StatusCode::OK, body);
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    response
                }
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "metrics recorder not installed\n".into(),
                ),
            }
        }
        ("/reload", false) if request.method() == Method::POST => {
            if let Some(refusal) = refuse_action(&request, peer, admin) {
                return refusal;
            }
            let report = admin.control.reload("admin").await;
            let status = if report.success {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json(status, &report)
        }
        (path, false) if request.method() == Method::POST && path.starts_with("/pools/") => {
            if let Some(refusal) = refuse_action(&request, peer, admin) {
                return refusal;
            }
            backend_action(path, request.uri().query(), peer, admin).await
        }
        (path, true) if path.starts_with("/pools/") => actions::backend_read(path, admin),
        ("/", true) => {
            let mut response = text(StatusCode::OK, STATUS_PAGE.to_owned());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        ("/config", true) => match admin.control.view().config_text {
            Some(config) => {
                let mut response = text(StatusCode::OK, config);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/yaml"),
                );
                response
            }
            None => text(
                StatusCode::NOT_FOUND,
                "started without a config file\n".into(),
            ),
        },
        ("/healthz" | "/ready" | "/status" | "/metrics" | "/reload", _) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Admin actions need the bearer token when `admin.token_file` is set (from any peer), and
/// come from loopback peers only otherwise. `None`: allowed.
fn refuse_action(
    request: &Request<Incoming>,
    peer: SocketAddr,
    admin: &Admin,
) -> Option<AdminResponse> {
    match admin.control.view().admin_token {
        Some(token) => {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if constant_time_eq(given.as_bytes(), token.as_bytes()) {
                None
            } else {
                let mut response = text(
                    StatusCode::UNAUTHORIZED,
                    "admin token required (Authorization: Bearer ...)\n".into(),
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"sluice-admin\""),
                );
                Some(response)
            }
        }
        None if peer.ip().is_loopback() => None,
        None => Some(text(
            StatusCode::FORBIDDEN,
            "admin actions are allowed from loopback only (or set admin.token_file)\n".into(),
        )),
    }
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A page a person would rather read than JSON: pools and backends from `/status`, refreshed
/// every two seconds. Self-contained (no external scripts or styles).
const STATUS_PAGE: &str = include_str!("status_page.html");

fn json<T: Serialize>(status: StatusCode, value: &T) -> AdminResponse {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
    }
}

fn text(status: StatusCode, body: String) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
