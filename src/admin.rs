//! The admin listener (loopback by default): `/healthz` (process alive), `/ready` (config
//! loaded, listeners bound), `/status` (JSON), `/metrics` (Prometheus text), and
//! `POST /reload` (re-read the config file; answers with the outcome).
//!
//! Mutating endpoints are refused from non-loopback peers: the admin bind may be widened for
//! scraping, but changing the daemon stays a local action.

use crate::health::machine::State;
use crate::reload::ReloadReport;
use crate::server::Shared;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

type AdminResponse = Response<Full<Bytes>>;

pub fn spawn(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: &TaskTracker,
) {
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
            let shared = Arc::clone(&shared);
            let stop = stop.clone();
            connections.spawn(async move {
                let service = service_fn(move |request| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, Infallible>(route(request, peer, &shared).await) }
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
                    debug!(%error, "admin connection error");
                }
            });
        }
    });
}

async fn route(
    request: Request<Incoming>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> AdminResponse {
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    match (request.uri().path(), read) {
        ("/healthz", true) => text(StatusCode::OK, "ok\n".into()),
        ("/ready", true) => {
            let listeners = shared.snapshot.load().config.listeners.len();
            text(StatusCode::OK, format!("ready: {listeners} listeners\n"))
        }
        ("/status", true) => json(StatusCode::OK, &status(shared)),
        ("/metrics", true) => {
            match crate::metrics::render(&shared.snapshot.load(), &shared.open_connections()) {
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
            if let Some(refusal) = refuse_action(&request, peer, shared) {
                return refusal;
            }
            let report = shared.reloads.reload_file(shared, "admin").await;
            let status = if report.success {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json(status, &report)
        }
        (path, false) if request.method() == Method::POST && path.starts_with("/pools/") => {
            if let Some(refusal) = refuse_action(&request, peer, shared) {
                return refusal;
            }
            backend_action(path, request.uri().query(), peer, shared)
        }
        ("/", true) => {
            let mut response = text(StatusCode::OK, STATUS_PAGE.to_owned());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        ("/config", true) => match shared.config_text() {
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
    shared: &Shared,
) -> Option<AdminResponse> {
    match shared.admin_token() {
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

/// `POST /pools/{pool}/backends/{address}/drain`, `.../enable` or `.../weight?value=N`. The override lives in the
/// backend's runtime state, so it survives reloads while the backend stays in the config.
fn backend_action(
    path: &str,
    query: Option<&str>,
    peer: SocketAddr,
    shared: &Shared,
) -> AdminResponse {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let [_, pool_name, "backends", address, action] = parts[..] else {
        return text(
            StatusCode::NOT_FOUND,
            "expected /pools/{pool}/backends/{address}/drain|enable\n".into(),
        );
    };
    let address = address
        .replace("%5B", "[")
        .replace("%5D", "]")
        .replace("%3A", ":")
        // Unix socket backends: `unix:%2Frun%2Fapp.sock`.
        .replace("%2F", "/")
        .replace("%2f", "/");
    let snapshot = shared.snapshot.load_full();
    let Some(pool) = snapshot.pools.get(pool_name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no pool named {pool_name:?}\n"),
        );
    };
    let Some(backend) = pool
        .backends
        .iter()
        .find(|b| b.address.to_string() == address)
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no backend {address} in pool {pool_name}\n"),
        );
    };
    let by = format!("admin API from {}", peer.ip());
    let now = Instant::now();
    let micros = crate::proxy::clock_micros();
    let change = match action {
        "drain" => backend.state.health.update(micros, |m| m.drain(now, &by)),
        "enable" => backend.state.health.update(micros, |m| m.enable(now, &by)),
        "weight" => {
            let value = query
                .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("value=")))
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|&w| w <= crate::config::MAX_WEIGHT);
            let Some(weight) = value else {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "expected ?value=N with N in 0..={}\n",
                        crate::config::MAX_WEIGHT
                    ),
                );
            };
            let address = backend.address.clone();
            if shared.set_weight(pool_name, &address, weight).is_none() {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("no backend {address} in pool {pool_name}\n"),
                );
            }
            tracing::info!(pool = %pool_name, backend = %address, weight, %by, "weight set at runtime");
            let snapshot = shared.snapshot.load_full();
            return match snapshot
                .pools
                .get(pool_name)
                .and_then(|p| p.backends.iter().find(|b| b.address == address))
            {
                Some(updated) => json(
                    StatusCode::OK,
                    &backend_status(updated, now, shared, pool_name),
                ),
                None => text(StatusCode::NOT_FOUND, "backend left the pool\n".into()),
            };
        }
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                format!("unknown action {action:?} (drain, enable)\n"),
            );
        }
    };
    if let Some(change) = &change {
        crate::health::probe::announce(pool, backend, change);
    }
    json(
        StatusCode::OK,
        &backend_status(backend, now, shared, pool_name),
    )
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    uptime_seconds: f64,
    config_file: Option<String>,
    last_reload: Option<ReloadReport>,
    listeners: Vec<ListenerStatus>,
    pools: Vec<PoolStatus>,
}

#[derive(Serialize)]
struct ListenerStatus {
    name: String,
    bind: String,
    local_addr: Option<String>,
    protocol: &'static str,
    /// The default pool; `null` for a listener that only routes.
    pool: Option<String>,
    routes: usize,
}

#[derive(Serialize)]
struct PoolStatus {
    name: String,
    healthy: usize,
    total: usize,
    /// Too few healthy backends: balancing over all of them (`panic_threshold`).
    panic: bool,
    backends: Vec<BackendStatus>,
    /// One entry per discovery source: target, backend count, last update and last error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    discovery: Vec<crate::discovery::SourceStatus>,
}

#[derive(Serialize)]
struct BackendStatus {
    address: String,
    weight: u32,
    /// Set when the weight is a runtime override from the admin API (kept across reloads).
    weight_override: Option<u32>,
    /// up | down | ejected | drained
    state: State,
    /// Why it is in that state: the threshold that tripped, the last error, who drained it.
    reason: String,
    since_seconds: f64,
    available: bool,
    in_flight: usize,
    picked_total: u64,
    last_check: Option<CheckStatus>,
    checks_passed: u64,
    checks_failed: u64,
    ejections_total: u64,
    ejected_for_seconds: Option<f64>,
    drained_by: Option<String>,
    /// closed | open | half_open, and why (only with `circuit_breaker:`).
    circuit_breaker: Option<BreakerStatus>,
}

#[derive(Serialize)]
struct BreakerStatus {
    state: crate::resilience::breaker::BreakerState,
    reason: String,
}

#[derive(Serialize)]
struct CheckStatus {
    ok: bool,
    detail: String,
    seconds_ago: f64,
}

fn backend_status(
    backend: &crate::backend::Backend,
    now: Instant,
    shared: &Shared,
    pool: &str,
) -> BackendStatus {
    let cell = &backend.state.health;
    let machine = cell.machine();
    let ago = |at: Instant| now.saturating_duration_since(at).as_secs_f64();
    BackendStatus {
        address: backend.address.to_string(),
        weight: backend.weight,
        weight_override: shared.weight_override(pool, &backend.address),
        state: machine.state(),
        reason: machine.reason().to_owned(),
        since_seconds: ago(machine.state_since()),
        available: backend.is_available(),
        in_flight: backend.state.in_flight(),
        picked_total: backend.state.picked_total(),
        last_check: machine.last_check().map(|check| CheckStatus {
            ok: check.ok,
            detail: check.detail.clone(),
            seconds_ago: ago(check.at),
        }),
        checks_passed: cell.checks_passed.load(Ordering::Relaxed),
        checks_failed: cell.checks_failed.load(Ordering::Relaxed),
        ejections_total: cell.ejections_total.load(Ordering::Relaxed),
        ejected_for_seconds: machine
            .ejected_until()
            .map(|until| until.saturating_duration_since(now).as_secs_f64()),
        drained_by: machine
            .drained_by()
            .map(|(by, at)| format!("{by}, {:.0}s ago", ago(*at))),
        circuit_breaker: backend.breaker.as_ref().map(|_| {
            let breaker = backend.state.breaker.machine();
            BreakerStatus {
                state: breaker.state(),
                reason: breaker.reason().to_owned(),
            }
        }),
    }
}

fn status(shared: &Shared) -> Status {
    let snapshot = shared.snapshot.load();
    let now = Instant::now();
    let listeners = snapshot
        .config
        .listeners
        .values()
        .map(|l| ListenerStatus {
            name: l.name.clone(),
            bind: l.bind.to_string(),
            local_addr: shared.local_addr(&l.name).map(|a| a.to_string()),
            protocol: match l.protocol {
                crate::config::Protocol::Http => "http",
                crate::config::Protocol::Tcp => "tcp",
            },
            pool: l.pool.clone(),
            routes: l.routes.len(),
        })
        .collect();
    let mut discovery = shared.discovery.status();
    let mut pools: Vec<PoolStatus> = snapshot
        .pools
        .values()
        .map(|pool| PoolStatus {
            name: pool.config.name.clone(),
            healthy: pool
                .backends
                .iter()
                .filter(|b| b.state.health.is_healthy())
                .count(),
            total: pool.backends.len(),
            panic: pool.panic.load(Ordering::Relaxed),
            backends: pool
                .backends
                .iter()
                .map(|b| backend_status(b, now, shared, &pool.config.name))
                .collect(),
            discovery: discovery.remove(&pool.config.name).unwrap_or_default(),
        })
        .collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: shared.started.elapsed().as_secs_f64(),
        config_file: shared.config_path.as_ref().map(|p| p.display().to_string()),
        last_reload: shared.reloads.last_report(),
        listeners,
        pools,
    }
}

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
