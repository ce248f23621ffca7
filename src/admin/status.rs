//! The `GET /status` document: version, uptime, last reload and the reload history,
//! listeners with their rates, and per pool its backends' state, counters, rates, latency
//! quantiles, breaker and origins (config or which registry, last seen when), the pool's chart
//! points and its discovery sources (a backend's part is also the answer of an action).
//!
//! Fields are only ever added: `sluice status` and scripts read this document.

use super::Admin;
use super::history::{BackendRates, ChartPoint, History, ListenerRates};
use crate::control::{ReloadReport, Weights};
use crate::discovery::Origin;
use crate::health::machine::State;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

#[derive(Serialize)]
pub(super) struct Status {
    version: &'static str,
    uptime_seconds: f64,
    config_file: Option<String>,
    last_reload: Option<ReloadReport>,
    /// The last reloads (at most 20), oldest first: trigger, outcome, plan or error text.
    reload_history: Vec<ReloadReport>,
    listeners: Vec<ListenerStatus>,
    /// Open client connections of each worker thread (`runtime.scheduler: per_thread`), by
    /// worker index: how evenly the kernel spreads connections. Absent without workers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    worker_connections: Vec<usize>,
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
    /// Rate-limit keys held, clients counted and the top refused keys (`crate::edge`).
    #[serde(skip_serializing_if = "Option::is_none")]
    edge: Option<crate::edge::EdgeReport>,
    /// A TLS listener's certificates: names, expiry, and why files on disk were refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    certificates: Option<Vec<crate::tls::store::CertStatus>>,
    /// Why `tls.ticket_keys` on disk is refused (the keys in force stay).
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket_keys_problem: Option<String>,
    /// Why `tls.client_auth`'s CA bundle or CRL on disk is refused (the one in force stays).
    #[serde(skip_serializing_if = "Option::is_none")]
    client_auth_problem: Option<String>,
    /// Client connections open now.
    connections: usize,
    /// HTTP responses sent since start, by status class (`1xx`..`5xx`); empty on TCP.
    responses: BTreeMap<&'static str, u64>,
    /// Over the last few seconds (`null` until two samples were taken).
    #[serde(flatten)]
    rates: ListenerRates,
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
    /// The last minutes, one point per sample (oldest first): requests/s, p99, errors/s.
    chart: Vec<ChartPoint>,
}

#[derive(Serialize)]
pub(super) struct BackendStatus {
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
    /// Responses received since start, by status class (`1xx`..`5xx`).
    responses: BTreeMap<&'static str, u64>,
    /// Attempts that got no response (connect failure, reset, timeout).
    failures_total: u64,
    /// Requests and errors (5xx and failures) per second over the last sample, latency
    /// p50/p99 (time to response headers; TCP: connect time) over the last minute.
    #[serde(flatten)]
    rates: BackendRates,
    /// Where the backend comes from: `config` and/or the discovery sources that list it, with
    /// when each last saw it (Unix seconds).
    origins: Vec<Origin>,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn by_class(counts: [u64; 5]) -> BTreeMap<&'static str, u64> {
    CLASSES.into_iter().zip(counts).collect()
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

pub(super) fn backend_status(
    backend: &crate::backend::Backend,
    now: Instant,
    weights: &Weights,
    pool: &str,
) -> BackendStatus {
    let cell = &backend.state.health;
    let machine = cell.machine();
    let ago = |at: Instant| now.saturating_duration_since(at).as_secs_f64();
    BackendStatus {
        address: backend.address.to_string(),
        weight: backend.weight,
        weight_override: weights
            .get(&(pool.to_owned(), backend.address.clone()))
            .copied(),
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
        responses: by_class(backend.state.responses_by_class()),
        failures_total: backend.state.failures(),
        rates: BackendRates::default(),
        origins: Vec::new(),
    }
}

pub(super) fn status(admin: &Admin, history: &History) -> Status {
    let view = admin.control.view();
    let snapshot = &view.snapshot;
    let now = Instant::now();
    // The config file's backends were last seen when that file was last applied.
    let config_seen = (view.reload_history.iter().rev())
        .find(|r| r.success)
        .map(|r| r.finished_at)
        .unwrap_or_else(|| crate::clock::unix_seconds() - view.started.elapsed().as_secs_f64());
    let mut origins = admin.discovery.origins();
    let listeners = snapshot
        .config
        .listeners
        .values()
        .map(|l| ListenerStatus {
            name: l.name.clone(),
            bind: l.bind.to_string(),
            local_addr: (view.listeners.iter())
                .find(|(name, _, _)| *name == l.name)
                .and_then(|(_, bind, _)| bind.tcp())
                .map(|a| a.to_string()),
            protocol: match l.protocol {
                crate::config::Protocol::Http => "http",
                crate::config::Protocol::Tcp => "tcp",
            },
            pool: l.pool.clone(),
            routes: l.routes.len(),
            edge: snapshot.edge(&l.name).and_then(|e| e.report()),
            certificates: l.tls.as_ref().map(|t| t.store.status()),
            ticket_keys_problem: l.tls.as_ref().and_then(|t| t.store.ticket_problem()),
            client_auth_problem: l.tls.as_ref().and_then(|t| t.store.client_auth_problem()),
            connections: (view.listeners.iter())
                .find(|(name, _, _)| *name == l.name)
                .map_or(0, |(_, _, open)| *open),
            responses: match l.protocol {
                crate::config::Protocol::Http => {
                    by_class(crate::metrics::listener_handles(&l.name).responses.get())
                }
                crate::config::Protocol::Tcp => BTreeMap::new(),
            },
            rates: history.listener(&l.name),
        })
        .collect();
    let mut discovery = admin.discovery.status();
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
                .map(|b| {
                    let name = &pool.config.name;
                    let mut status = backend_status(b, now, &view.weights, name);
                    status.rates = history.backend(name, &status.address);
                    let listed = (view.file_config.pools.get(name))
                        .is_some_and(|p| p.backends.iter().any(|c| c.address == b.address));
                    if listed {
                        status.origins.push(Origin {
                            source: "config",
                            last_seen: Some(config_seen),
                        });
                    }
                    let key = (name.clone(), b.address.clone());
                    status
                        .origins
                        .extend(origins.remove(&key).unwrap_or_default());
                    status
                })
                .collect(),
            discovery: discovery.remove(&pool.config.name).unwrap_or_default(),
            chart: history.chart(&pool.config.name, now),
        })
        .collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: view.started.elapsed().as_secs_f64(),
        config_file: (view.config_path.as_ref()).map(|p| p.display().to_string()),
        last_reload: view.last_reload.clone(),
        reload_history: view.reload_history.clone(),
        worker_connections: view.worker_connections.clone(),
        listeners,
        pools,
    }
}
