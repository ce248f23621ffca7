//! Per-backend series: storage, lifetime and rendering of every `sluice_backend_*` family.
//!
//! The Prometheus recorder cannot forget a series, so a backend that left (a reload, a
//! discovery change) kept its ~20 series for the life of the process: moving 10,000 backends
//! back and forth grew the RSS from 106 to 216 MiB. These families therefore live here, not in
//! the recorder. Each backend's series are one `BackendSeries`, owned by its runtime state
//! (`backend::BackendState`, carried by identity across snapshots); this registry only holds
//! a `Weak` to each. So a backend that stays keeps its counters (Prometheus counters must not
//! reset while the target exists), and a backend that left disappears from `/metrics` once the
//! last thing using it (the snapshot, a request still in flight on it) lets go: nothing has to
//! remember to remove it. A backend that returns while its old series are still alive gets
//! them back; one that returns later starts from zero, as a new target does.
//!
//! Data-path cost: counters are `metrics::Counter` handles over our own atomics (one relaxed
//! add); the probe's counters look the backend up once per check (a hash lookup, no label
//! formatting, as the recorder did per call). Imports `config` only.

use crate::config::BackendAddress;
use metrics::atomics::AtomicU64;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use super::wire::WireCounters;
use super::{
    BACKEND_ACTIVE, BACKEND_PICKED_TOTAL, BACKEND_UP, BACKEND_WIRE_BYTES, BREAKER_OPEN,
    EJECTIONS_ENDED_TOTAL, EJECTIONS_TOTAL, HEALTH_CHECKS_TOTAL, RESPONSES_TOTAL,
};

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The `by` values of `sluice_backend_ejections_ended_total` (`EjectionEnd::label`).
const ENDED_BY: [&str; 2] = ["active_check", "time"];

/// One backend's series. Gauges read from the snapshot (`up`, `active`, `picked`) are
/// refreshed by the admin listener just before each render.
#[derive(Debug)]
pub struct BackendSeries {
    pool: Box<str>,
    address: BackendAddress,
    /// `pool="…",backend="…"`, escaped once.
    labels: String,
    up: AtomicU64,
    active: AtomicU64,
    picked: AtomicU64,
    breaker_open: AtomicU64,
    /// Active checks by result: success, failure.
    checks: [AtomicU64; 2],
    ejections: AtomicU64,
    ejections_ended: [AtomicU64; 2],
    responses: [Arc<AtomicU64>; 5],
    /// Written (`direction="in"`) and read (`out`) on the backend's sockets.
    wire_written: Arc<AtomicU64>,
    wire_read: Arc<AtomicU64>,
    wire: Arc<WireCounters>,
}

type ByAddress = HashMap<BackendAddress, Weak<BackendSeries>>;

fn registry() -> MutexGuard<'static, HashMap<Box<str>, ByAddress>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Box<str>, ByAddress>>> = OnceLock::new();
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BackendSeries {
    /// The series of `(pool, address)`: the live ones if something still holds them, else
    /// new ones at zero. The caller keeps the `Arc` for as long as the backend exists.
    pub fn get_or_create(pool: &str, address: &BackendAddress) -> Arc<BackendSeries> {
        let mut registry = registry();
        if let Some(live) = registry
            .get(pool)
            .and_then(|by_address| by_address.get(address))
            .and_then(Weak::upgrade)
        {
            return live;
        }
        let counter = || Arc::new(AtomicU64::new(0));
        let (wire_written, wire_read) = (counter(), counter());
        let series = Arc::new(BackendSeries {
            pool: pool.into(),
            address: address.clone(),
            labels: format!(
                "pool=\"{}\",backend=\"{}\"",
                escape(pool),
                escape(&address.to_string())
            ),
            up: AtomicU64::new(0),
            active: AtomicU64::new(0),
            picked: AtomicU64::new(0),
            breaker_open: AtomicU64::new(0),
            checks: Default::default(),
            ejections: AtomicU64::new(0),
            ejections_ended: Default::default(),
            responses: std::array::from_fn(|_| counter()),
            wire: Arc::new(WireCounters {
                written: metrics::Counter::from_arc(Arc::clone(&wire_written)),
                read: metrics::Counter::from_arc(Arc::clone(&wire_read)),
            }),
            wire_written,
            wire_read,
        });
        registry
            .entry(pool.into())
            .or_default()
            .insert(address.clone(), Arc::downgrade(&series));
        series
    }

    /// Runs `f` on the live series of `(pool, address)`; nothing when the backend is gone
    /// (a late probe result must not bring a departed backend's series back).
    pub fn with(pool: &str, address: &BackendAddress, f: impl FnOnce(&BackendSeries)) {
        let live = registry()
            .get(pool)
            .and_then(|by_address| by_address.get(address))
            .and_then(Weak::upgrade);
        if let Some(series) = live {
            f(&series);
        }
    }

    /// Response counters by status class, `1xx` first, for the data path.
    pub fn response_counters(&self) -> [metrics::Counter; 5] {
        std::array::from_fn(|i| metrics::Counter::from_arc(Arc::clone(&self.responses[i])))
    }

    /// The wire counters every connection to this backend adds to.
    pub fn wire(&self) -> Arc<WireCounters> {
        Arc::clone(&self.wire)
    }

    /// The values read from the running snapshot at each scrape.
    pub fn refresh(&self, up: bool, active: usize, picked: u64) {
        self.up.store(u64::from(up), Ordering::Relaxed);
        self.active.store(active as u64, Ordering::Relaxed);
        self.picked.store(picked, Ordering::Relaxed);
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(u64::from(up), Ordering::Relaxed);
    }

    pub fn set_breaker_open(&self, open: bool) {
        self.breaker_open.store(u64::from(open), Ordering::Relaxed);
    }

    pub fn count_check(&self, ok: bool) {
        self.checks[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_ejection(&self) {
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }

    /// `by` is one of `EjectionEnd::label`'s values.
    pub fn count_ejection_ended(&self, by: &str) {
        if let Some(i) = ENDED_BY.iter().position(|known| *known == by) {
            self.ejections_ended[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for BackendSeries {
    /// Forgets the registry entry, unless a newer series for the same backend took it.
    fn drop(&mut self) {
        let mut registry = registry();
        let Some(by_address) = registry.get_mut(&*self.pool) else {
            return;
        };
        if by_address
            .get(&self.address)
            .is_some_and(|weak| weak.strong_count() == 0)
        {
            by_address.remove(&self.address);
        }
        if by_address.is_empty() {
            registry.remove(&*self.pool);
        }
    }
}

/// How many backends have series now (tests, and the churn bench's sanity check).
pub fn live_count() -> usize {
    registry().values().map(HashMap::len).sum()
}

/// Appends every live backend's families to `text`, in Prometheus text format, sorted by
/// pool and backend so that scrapes diff cleanly.
pub fn render(text: &mut String) {
    let mut live: Vec<Arc<BackendSeries>> = registry()
        .values()
        .flat_map(HashMap::values)
        .filter_map(Weak::upgrade)
        .collect();
    if live.is_empty() {
        return;
    }
    live.sort_by(|a, b| (&a.pool, &a.labels).cmp(&(&b.pool, &b.labels)));
    let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
    family(text, BACKEND_UP, "gauge", &live, |s, out| {
        line(out, BACKEND_UP, &s.labels, "", load(&s.up));
    });
    family(text, BACKEND_ACTIVE, "gauge", &live, |s, out| {
        line(out, BACKEND_ACTIVE, &s.labels, "", load(&s.active));
    });
    family(text, BACKEND_PICKED_TOTAL, "counter", &live, |s, out| {
        line(out, BACKEND_PICKED_TOTAL, &s.labels, "", load(&s.picked));
    });
    family(text, BREAKER_OPEN, "gauge", &live, |s, out| {
        line(out, BREAKER_OPEN, &s.labels, "", load(&s.breaker_open));
    });
    family(text, HEALTH_CHECKS_TOTAL, "counter", &live, |s, out| {
        // Only backends that were checked, as before (no active checks, no series).
        if s.checks.iter().any(|c| load(c) > 0) {
            for (result, count) in ["success", "failure"].iter().zip(&s.checks) {
                let extra = format!(",result=\"{result}\"");
                line(out, HEALTH_CHECKS_TOTAL, &s.labels, &extra, load(count));
            }
        }
    });
    family(text, EJECTIONS_TOTAL, "counter", &live, |s, out| {
        line(out, EJECTIONS_TOTAL, &s.labels, "", load(&s.ejections));
    });
    family(text, EJECTIONS_ENDED_TOTAL, "counter", &live, |s, out| {
        for (by, count) in ENDED_BY.iter().zip(&s.ejections_ended) {
            line(
                out,
                EJECTIONS_ENDED_TOTAL,
                &s.labels,
                &format!(",by=\"{by}\""),
                load(count),
            );
        }
    });
    family(text, RESPONSES_TOTAL, "counter", &live, |s, out| {
        for (class, count) in CLASSES.iter().zip(&s.responses) {
            line(
                out,
                RESPONSES_TOTAL,
                &s.labels,
                &format!(",class=\"{class}\""),
                load(count),
            );
        }
    });
    family(text, BACKEND_WIRE_BYTES, "counter", &live, |s, out| {
        for (direction, count) in [("in", &s.wire_written), ("out", &s.wire_read)] {
            let extra = format!(",direction=\"{direction}\"");
            line(out, BACKEND_WIRE_BYTES, &s.labels, &extra, load(count));
        }
    });
}

fn family(
    text: &mut String,
    name: &str,
    kind: &str,
    live: &[Arc<BackendSeries>],
    mut each: impl FnMut(&BackendSeries, &mut String),
) {
    let start = text.len();
    let _ = writeln!(text, "# HELP {name} {}", help(name));
    let _ = writeln!(text, "# TYPE {name} {kind}");
    let header = text.len();
    for series in live {
        each(series, text);
    }
    if text.len() == header {
        // No backend has a value in this family: leave it out, as the recorder did.
        text.truncate(start);
    } else {
        text.push('\n');
    }
}

fn line(text: &mut String, name: &str, labels: &str, extra: &str, value: u64) {
    let _ = writeln!(text, "{name}{{{labels}{extra}}} {value}");
}

/// Label values escaped as the text format wants (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn help(name: &str) -> &'static str {
    match name {
        BACKEND_UP => "1 if the backend is healthy and not drained (takes new requests), else 0.",
        BACKEND_ACTIVE => "Requests or connections in flight to the backend.",
        BACKEND_PICKED_TOTAL => "Times the balancer picked the backend.",
        BREAKER_OPEN => "1 while the backend's circuit breaker is open or half-open, else 0.",
        HEALTH_CHECKS_TOTAL => {
            "Active health checks run against the backend, by result (success, failure)."
        }
        EJECTIONS_TOTAL => {
            "Times the backend was ejected by passive health (backend-origin failures)."
        }
        EJECTIONS_ENDED_TOTAL => "Ejections that ended, by what ended them (the by label).",
        RESPONSES_TOTAL => "Responses received from the backend, by status class.",
        BACKEND_WIRE_BYTES => {
            "Bytes written to (in) and read from (out) the backend's sockets, health checks included: headers, framing and TLS records included."
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(port: u16) -> BackendAddress {
        BackendAddress::Inet(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn rendered() -> String {
        let mut text = String::new();
        render(&mut text);
        text
    }

    #[test]
    fn series_live_as_long_as_their_owner_and_keep_their_counts() {
        let pool = "series_lifetime";
        let kept = BackendSeries::get_or_create(pool, &address(1));
        let gone = BackendSeries::get_or_create(pool, &address(2));
        kept.response_counters()[1].increment(7);
        gone.response_counters()[1].increment(3);
        let kept_line = "sluice_backend_responses_total{pool=\"series_lifetime\",backend=\"127.0.0.1:1\",class=\"2xx\"} 7";
        let gone_label = "backend=\"127.0.0.1:2\"";
        assert!(rendered().contains(kept_line));
        assert!(rendered().contains(gone_label));

        // The wire counters handed to a connection outlive the series without keeping them.
        let wire = gone.wire();
        drop(gone);
        wire.add(1, 1);
        let text = rendered();
        assert!(
            !text.contains(gone_label),
            "departed backend still rendered"
        );
        assert!(text.contains(kept_line), "kept backend lost its count");
        BackendSeries::with(pool, &address(2), |_| {
            panic!("a departed backend came back")
        });

        // The same backend asked for again while alive: the same counters.
        let again = BackendSeries::get_or_create(pool, &address(1));
        assert!(Arc::ptr_eq(&again, &kept));
        drop((again, kept));
        assert!(
            !registry().contains_key(pool),
            "empty pool entry left behind"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
