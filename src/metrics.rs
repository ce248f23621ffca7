//! Prometheus metrics: the names in one place, the recorder installed once per process, and
//! the text rendered by the admin listener at `/metrics` (no listener of its own).
//!
//! Names follow Prometheus conventions (base units, `_total` counters) and the families
//! HAProxy's and Envoy's exporters use, prefixed `sluice_`.

use crate::health::machine::{Change, State};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::OnceLock;

pub const RELOADS_TOTAL: &str = "sluice_config_reloads_total";
pub const LAST_RELOAD_SUCCESS: &str = "sluice_config_last_reload_success_timestamp_seconds";
pub const BUILD_INFO: &str = "sluice_build_info";
pub const BACKEND_UP: &str = "sluice_backend_up";
pub const HEALTH_CHECKS_TOTAL: &str = "sluice_health_checks_total";
pub const EJECTIONS_TOTAL: &str = "sluice_backend_ejections_total";
pub const POOL_PANIC: &str = "sluice_pool_panic";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the global recorder the first time it is called. Another recorder already
/// installed (an embedding program's) is left alone; `/metrics` then says so.
pub fn install() {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new().install_recorder().ok()?;
        metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // Render the failure series from the start, so alerts can use it before any failure.
        metrics::counter!(RELOADS_TOTAL, "result" => "failure").absolute(0);
        metrics::counter!(RELOADS_TOTAL, "result" => "success").absolute(0);
        Some(handle)
    });
}

pub fn render() -> Option<String> {
    let handle = HANDLE.get()?.as_ref()?;
    // Without the exporter's own HTTP listener nothing else runs upkeep (histogram buckets).
    handle.run_upkeep();
    Some(handle.render())
}

pub fn reload(success: bool, finished_at: f64) {
    let result = if success { "success" } else { "failure" };
    metrics::counter!(RELOADS_TOTAL, "result" => result).increment(1);
    if success {
        metrics::gauge!(LAST_RELOAD_SUCCESS).set(finished_at);
    }
}

pub fn backend_state(pool: &str, backend: SocketAddr, change: &Change) {
    let labels = [("pool", pool.to_owned()), ("backend", backend.to_string())];
    let up = if change.to == State::Up { 1.0 } else { 0.0 };
    metrics::gauge!(BACKEND_UP, &labels).set(up);
    if change.to == State::Ejected && change.from != State::Ejected {
        metrics::counter!(EJECTIONS_TOTAL, &labels).increment(1);
    }
}

pub fn health_check(pool: &str, backend: SocketAddr, ok: bool) {
    let result = if ok { "success" } else { "failure" };
    let labels = [
        ("pool", pool.to_owned()),
        ("backend", backend.to_string()),
        ("result", result.to_owned()),
    ];
    metrics::counter!(HEALTH_CHECKS_TOTAL, &labels).increment(1);
}

pub fn pool_panic(pool: &str, panic: bool) {
    metrics::gauge!(POOL_PANIC, "pool" => pool.to_owned()).set(if panic { 1.0 } else { 0.0 });
}
