//! Prometheus metrics: the names in one place, the recorder installed once per process, and
//! the text rendered by the admin listener at `/metrics` (no listener of its own).
//!
//! Low in the layering: imports `config`, `health` (pure), `resilience` and `memory`, never
//! `backend` or `state` (they register their counters here).
//!
//! The `process_*` families (CPU, memory, descriptors, start time) are read from `/proc` at
//! each scrape and appended to the recorder's text (`process`).
//!
//! Names follow Prometheus conventions (base units, `_total` counters) and the families
//! HAProxy's and Envoy's exporters use, prefixed `sluice_`.

pub mod backend;
pub mod edge;
pub mod http_edge;
mod process;
pub mod wire;

use crate::config::BackendAddress;
use crate::health::machine::{Change, State};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::OnceLock;

pub const RELOADS_TOTAL: &str = "sluice_config_reloads_total";
pub const LAST_RELOAD_SUCCESS: &str = "sluice_config_last_reload_success_timestamp_seconds";
pub const BUILD_INFO: &str = "sluice_build_info";
pub const BACKEND_UP: &str = "sluice_backend_up";
pub const HEALTH_CHECKS_TOTAL: &str = "sluice_health_checks_total";
pub const EJECTIONS_TOTAL: &str = "sluice_backend_ejections_total";
pub const EJECTIONS_ENDED_TOTAL: &str = "sluice_backend_ejections_ended_total";
pub const REQUESTS_MOVED_TOTAL: &str = "sluice_requests_moved_total";
pub const POOL_PANIC: &str = "sluice_pool_panic";
pub const BACKEND_ACTIVE: &str = "sluice_backend_active_requests";
pub const BACKEND_PICKED_TOTAL: &str = "sluice_backend_selected_total";
pub const POOL_BACKENDS: &str = "sluice_pool_backends";
pub const POOL_CONFIGURED_BACKENDS: &str = "sluice_pool_configured_backends";
pub const RETRIES_TOTAL: &str = "sluice_retries_total";
pub const BREAKER_OPEN: &str = "sluice_backend_circuit_open";
pub const TIMEOUTS_TOTAL: &str = "sluice_timeouts_total";
pub const LISTENER_CONNECTIONS_TOTAL: &str = "sluice_listener_connections_total";
pub const LISTENER_ACTIVE_CONNECTIONS: &str = "sluice_listener_active_connections";
pub const WORKER_ACTIVE_CONNECTIONS: &str = "sluice_worker_active_connections";
pub const WORKER_MOVED_CONNECTIONS: &str = "sluice_worker_moved_connections_total";
pub const REQUEST_DURATION: &str = "sluice_http_request_duration_seconds";
pub const LISTENER_BYTES: &str = "sluice_listener_bytes_total";
pub const LISTENER_WIRE_BYTES: &str = "sluice_listener_wire_bytes_total";
pub const BACKEND_WIRE_BYTES: &str = "sluice_backend_wire_bytes_total";
pub const RESPONSES_TOTAL: &str = "sluice_backend_responses_total";
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "sluice_retry_budget_exhausted_total";
pub const DISCOVERY_UPDATES_TOTAL: &str = "sluice_discovery_updates_total";
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "sluice_tls_handshake_failures_total";
pub const TLS_PASSTHROUGH_REFUSED_TOTAL: &str = "sluice_tls_passthrough_refused_total";
pub const TLS_CERT_EXPIRY: &str = "sluice_tls_certificate_expiry_timestamp_seconds";
pub const TLS_CERT_STALE: &str = "sluice_tls_certificate_stale";
pub const TLS_CERT_ROTATIONS_TOTAL: &str = "sluice_tls_certificate_rotations_total";
pub const CLIENT_ERRORS_TOTAL: &str = "sluice_client_errors_total";
pub const ACCESS_LOG_DROPPED_TOTAL: &str = "sluice_access_log_dropped_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the global recorder the first time it is called. Another recorder already
/// installed (an embedding program's) is left alone; `/metrics` then says so.
pub fn install() {
    HANDLE.get_or_init(|| {
        // Buckets make the request duration a histogram (quantiles across instances), from
        // 0.5 ms to 60 s.
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ];
        let handle = PrometheusBuilder::new()
            .set_buckets(&buckets)
            .ok()?
            .install_recorder()
            .ok()?;
        describe();
        metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // Render the failure series from the start, so alerts can use it before any failure.
        metrics::counter!(RELOADS_TOTAL, "result" => "failure").absolute(0);
        metrics::counter!(RELOADS_TOTAL, "result" => "success").absolute(0);
        spawn_upkeep(handle.clone());
        Some(handle)
    });
}

/// `# HELP` text (and the kind, hence `# TYPE`) of every family, given to the recorder once.
/// Units are recorded too; the exporter leaves names alone (recommended naming is off, and
/// every name already ends in its base unit).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        RELOADS_TOTAL,
        "Config reloads attempted, by result (success, failure)."
    );
    describe_gauge!(
        LAST_RELOAD_SUCCESS,
        Unit::Seconds,
        "Unix time of the last successful config load."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which sluice runs."
    );
    describe_counter!(
        REQUESTS_MOVED_TOTAL,
        "Requests waiting on a backend that were moved to another one, by cause."
    );
    describe_gauge!(
        POOL_PANIC,
        "1 while the pool is in panic mode (too few healthy backends: all are used), else 0."
    );
    describe_gauge!(
        POOL_BACKENDS,
        "Backends of the pool in each state (healthy, ejected, drained); a backend can be in more than one."
    );
    describe_gauge!(
        POOL_CONFIGURED_BACKENDS,
        "Backends the pool has (configured or discovered), whatever their state."
    );
    describe_counter!(RETRIES_TOTAL, "Requests retried on another backend.");
    describe_counter!(
        TIMEOUTS_TOTAL,
        "Timeouts that fired, by kind (connect, response, body_idle, total, tcp_idle)."
    );
    describe_counter!(
        LISTENER_CONNECTIONS_TOTAL,
        "Client connections accepted by the listener."
    );
    describe_gauge!(
        LISTENER_ACTIVE_CONNECTIONS,
        "Client connections open on the listener."
    );
    describe_gauge!(
        WORKER_ACTIVE_CONNECTIONS,
        "Client connections served by the worker thread."
    );
    describe_counter!(
        WORKER_MOVED_CONNECTIONS,
        "New connections handed to a less loaded worker thread."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request duration on the listener, to the response headers."
    );
    describe_counter!(
        LISTENER_BYTES,
        Unit::Bytes,
        "Payload bytes proxied by the listener: in is client to backend, out is backend to client (HTTP: bodies only)."
    );
    describe_counter!(
        LISTENER_WIRE_BYTES,
        Unit::Bytes,
        "Bytes read from (in) and written to (out) the listener's client sockets: headers, framing, PROXY headers and TLS records included."
    );
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED_TOTAL,
        "Retries not made because the pool's retry budget was spent."
    );
    describe_counter!(
        DISCOVERY_UPDATES_TOTAL,
        "Reads of a discovery source, by source and result (success, failure)."
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES_TOTAL,
        "TLS handshakes that failed on a terminating listener, by reason."
    );
    describe_counter!(
        TLS_PASSTHROUGH_REFUSED_TOTAL,
        "Connections a passthrough listener closed before choosing a pool, by reason."
    );
    describe_gauge!(
        TLS_CERT_EXPIRY,
        "When each served TLS certificate expires (notAfter), Unix seconds, by listener, name (its first DNS name) and cert (file)."
    );
    describe_gauge!(
        TLS_CERT_STALE,
        "1 while a certificate's files on disk are refused (incomplete, key does not fit, expired) and the last good pair keeps serving."
    );
    describe_counter!(
        TLS_CERT_ROTATIONS_TOTAL,
        "Certificate files seen changed by the watch, by result: rotated (swapped in) or refused (the last good pair kept)."
    );
    describe_counter!(
        CLIENT_ERRORS_TOTAL,
        "Requests failed by their client (malformed, aborted, too slow, too large), by reason."
    );
    edge::describe();
    describe_counter!(
        ACCESS_LOG_DROPPED_TOTAL,
        "Access log lines dropped because the writer fell behind or failed."
    );
    http_edge::describe();
}

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until upkeep folds it into the buckets, and only
/// a scrape ran upkeep: without one, memory grew by the request rate (about 1 MiB/s at 70k
/// requests/s). A thread of its own, so it runs whatever runtime (or none) the caller has.
/// It also hands the heap's free pages back to the kernel (`crate::memory`).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
                crate::memory::release_free_pages();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "metrics upkeep thread did not start; histograms are folded at scrapes only");
    }
}

/// Renders the Prometheus text. The caller first refreshes the gauges read from the running
/// snapshot (the admin listener's `gauges`): this module sits below `backend` and `state`,
/// which register their counters here, so it cannot read them back.
pub fn render(
    open_connections: &[(String, usize)],
    worker_connections: &[usize],
) -> Option<String> {
    let handle = HANDLE.get()?.as_ref()?;
    for (listener, open) in open_connections {
        metrics::gauge!(LISTENER_ACTIVE_CONNECTIONS, "listener" => listener.clone())
            .set(*open as f64);
    }
    for (worker, open) in worker_connections.iter().enumerate() {
        metrics::gauge!(WORKER_ACTIVE_CONNECTIONS, "worker" => worker.to_string())
            .set(*open as f64);
    }
    // Without the exporter's own HTTP listener nothing else runs upkeep (histogram buckets).
    handle.run_upkeep();
    let mut text = handle.render();
    backend::render(&mut text);
    // Read at the scrape, as every Prometheus client does: nothing runs between scrapes.
    process::read().render(&mut text);
    Some(text)
}

pub fn reload(success: bool, finished_at: f64) {
    let result = if success { "success" } else { "failure" };
    metrics::counter!(RELOADS_TOTAL, "result" => result).increment(1);
    if success {
        metrics::gauge!(LAST_RELOAD_SUCCESS).set(finished_at);
    }
}

/// A backend's health changed: its `up` gauge and ejection counters (series of a backend
/// that already left are not brought back).
pub fn backend_state(pool: &str, backend: &BackendAddress, change: &Change) {
    backend::BackendSeries::with(pool, backend, |series| {
        series.set_up(change.to == State::Up);
        if change.to == State::Ejected && change.from != State::Ejected {
            series.count_ejection();
        }
        if let Some(ended) = change.ejection_ended {
            series.count_ejection_ended(ended.label());
        }
    });
}

/// A request waiting on a backend was moved to another one: `cause` is why the backend was
/// given up on (`check_timeout`, `down` or `ejected`).
pub fn request_moved(pool: &str, cause: &'static str) {
    metrics::counter!(REQUESTS_MOVED_TOTAL, "pool" => pool.to_owned(), "cause" => cause)
        .increment(1);
}

pub fn health_check(pool: &str, backend: &BackendAddress, ok: bool) {
    backend::BackendSeries::with(pool, backend, |series| series.count_check(ok));
}

pub fn pool_panic(pool: &str, panic: bool) {
    metrics::gauge!(POOL_PANIC, "pool" => pool.to_owned()).set(if panic { 1.0 } else { 0.0 });
}

pub fn retry(pool: &str) {
    metrics::counter!(RETRIES_TOTAL, "pool" => pool.to_owned()).increment(1);
}

pub fn retry_budget_exhausted(pool: &str) {
    metrics::counter!(RETRY_BUDGET_EXHAUSTED_TOTAL, "pool" => pool.to_owned()).increment(1);
}

pub fn breaker(
    pool: &str,
    backend: &BackendAddress,
    state: crate::resilience::breaker::BreakerState,
) {
    let open = state != crate::resilience::breaker::BreakerState::Closed;
    backend::BackendSeries::with(pool, backend, |series| series.set_breaker_open(open));
}

/// A timeout fired: `kind` is connect, response, body_idle, total or tcp_idle.
pub fn timeout(pool: &str, kind: &'static str) {
    metrics::counter!(TIMEOUTS_TOTAL, "pool" => pool.to_owned(), "kind" => kind).increment(1);
}

/// A discovery source read its backends (`success`) or failed to (`failure`).
pub fn discovery_update(pool: &str, source: &'static str, result: &'static str) {
    metrics::counter!(
        DISCOVERY_UPDATES_TOTAL,
        "pool" => pool.to_owned(),
        "source" => source,
        "result" => result
    )
    .increment(1);
}

/// The listener's byte counters, (in, out): client to backend, backend to client.
pub fn listener_bytes(listener: &str) -> (metrics::Counter, metrics::Counter) {
    let handles = listener_handles(listener);
    (handles.bytes_in.clone(), handles.bytes_out.clone())
}

/// A listener's data-path metrics, registered once per listener name: a registry lookup
/// formats and hashes labels, and four of them per accepted connection showed in the
/// new-connection-per-request benchmark.
#[derive(Debug)]
pub struct ListenerHandles {
    pub connections: metrics::Counter,
    pub bytes_in: metrics::Counter,
    pub bytes_out: metrics::Counter,
    pub duration: metrics::Histogram,
    /// Answers by status class, `1xx` first (`edge::HTTP_REQUESTS_TOTAL`).
    pub classes: [metrics::Counter; 5],
    /// Responses by status class, readable (for `/status`; Prometheus handles are not).
    pub responses: StatusClasses,
    /// Bytes on the client sockets (`wire::Metered`): read is in, written is out.
    pub wire: std::sync::Arc<wire::WireCounters>,
}

impl ListenerHandles {
    /// Counts one HTTP answer by its class, in Prometheus and for `/status`.
    pub fn answered(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].increment(1);
        self.responses.count(status);
    }
}

/// Counts by HTTP status class (1xx..5xx), readable: what `/status` computes rates and error
/// shares from.
#[derive(Debug, Default)]
pub struct StatusClasses([std::sync::atomic::AtomicU64; 5]);

impl StatusClasses {
    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0[class].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.0[i].load(std::sync::atomic::Ordering::Relaxed))
    }
}

pub fn listener_handles(listener: &str) -> std::sync::Arc<ListenerHandles> {
    type Cache = std::sync::RwLock<HashMap<Box<str>, std::sync::Arc<ListenerHandles>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    if let Some(found) = cache
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(listener)
    {
        return std::sync::Arc::clone(found);
    }
    let label = || listener.to_owned();
    let made = std::sync::Arc::new(ListenerHandles {
        connections: metrics::counter!(LISTENER_CONNECTIONS_TOTAL, "listener" => label()),
        bytes_in: metrics::counter!(LISTENER_BYTES, "listener" => label(), "direction" => "in"),
        bytes_out: metrics::counter!(LISTENER_BYTES, "listener" => label(), "direction" => "out"),
        duration: metrics::histogram!(REQUEST_DURATION, "listener" => label()),
        classes: edge::classes(listener),
        responses: StatusClasses::default(),
        wire: std::sync::Arc::new(wire::WireCounters {
            read: metrics::counter!(LISTENER_WIRE_BYTES, "listener" => label(), "direction" => "in"),
            written: metrics::counter!(LISTENER_WIRE_BYTES, "listener" => label(), "direction" => "out"),
        }),
    });
    let mut cache = cache.write().unwrap_or_else(|p| p.into_inner());
    std::sync::Arc::clone(cache.entry(listener.into()).or_insert(made))
}

/// A backend's wire counters (written is `direction="in"`, read is `out`), the ones its
/// series render (`backend`). A connection to a backend that already left the running config
/// (a late health check) counts into counters nobody renders.
pub fn backend_wire(pool: &str, backend: &BackendAddress) -> std::sync::Arc<wire::WireCounters> {
    let mut found = None;
    backend::BackendSeries::with(pool, backend, |series| found = Some(series.wire()));
    found.unwrap_or_else(|| {
        std::sync::Arc::new(wire::WireCounters {
            read: metrics::Counter::noop(),
            written: metrics::Counter::noop(),
        })
    })
}

/// A new connection was passed to a less loaded worker thread.
pub fn worker_connection_moved() {
    static MOVED: OnceLock<metrics::Counter> = OnceLock::new();
    MOVED
        .get_or_init(|| metrics::counter!(WORKER_MOVED_CONNECTIONS))
        .increment(1);
}

/// A TLS handshake on a terminating listener failed: `reason` is `timeout` or `error`.
pub fn tls_handshake_failure(listener: &str, reason: &'static str) {
    metrics::counter!(TLS_HANDSHAKE_FAILURES_TOTAL, "listener" => listener.to_owned(), "reason" => reason)
        .increment(1);
}

/// A passthrough listener closed a connection before choosing a pool: `reason` is
/// `timeout`, `not_tls` (no readable ClientHello) or `no_route` (no route and no default).
pub fn tls_passthrough_refused(listener: &str, reason: &'static str) {
    metrics::counter!(TLS_PASSTHROUGH_REFUSED_TOTAL, "listener" => listener.to_owned(), "reason" => reason)
        .increment(1);
}

/// A request failed by its client's doing (refused head, malformed, aborted, too slow or too
/// large body): counted here and never against a backend. `reason` names the class.
pub fn client_error(listener: &str, reason: &'static str) {
    metrics::counter!(CLIENT_ERRORS_TOTAL, "listener" => listener.to_owned(), "reason" => reason)
        .increment(1);
}
