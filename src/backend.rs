//! Per-backend runtime state that outlives config reloads, and the RAII guard that counts
//! in-flight work on it.
//!
//! A `BackendState` is identified by `(pool, address)`; the snapshot builder (`state.rs`) hands
//! the same `Arc` to every snapshot in which that backend appears, so counters survive a reload
//! and a weight change. Counters are atomics: the data path never takes a lock here.
//!
//! The latency estimate p2c's `load: ewma` reads is kept here too (one packed atomic); its math
//! is pure and lives in `crate::ewma`, with the time passed in by the caller.

use crate::config::BackendAddress;
use crate::config::health::HealthPolicy;
use crate::ewma;
use crate::health::cell::HealthCell;
use crate::resilience::breaker::BreakerPolicy;
use crate::resilience::breaker_cell::BreakerCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// What the snapshot builder matches on to carry runtime state across reloads.
/// Weight is deliberately not part of it: reweighting a backend keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    pub pool: String,
    pub address: BackendAddress,
}

#[derive(Debug)]
pub struct BackendState {
    id: BackendId,
    /// Active checks, passive ejection and drain, merged (see `health::cell`).
    pub health: HealthCell,
    /// Error-rate circuit breaker (used when the pool configures `circuit_breaker:`).
    pub breaker: BreakerCell,
    /// This backend's Prometheus series; they live exactly as long as this state, so a
    /// backend that left the config leaves `/metrics` too (`metrics::backend`).
    series: Arc<crate::metrics::backend::BackendSeries>,
    /// Responses by status class (1xx..5xx), as Prometheus counters (`series`).
    responses: [metrics::Counter; 5],
    /// The pool's wait queue for a free slot (`limits.max_pending`), woken when work ends.
    queue: Arc<SlotQueue>,
    in_flight: AtomicUsize,
    picked_total: AtomicU64,
    /// Peak-EWMA of response latency, packed by `ewma::observe` (estimate and its time in
    /// one word, so readers never see one without the other).
    latency: AtomicU64,
    /// The same observations in buckets, for the p50/p99 `/status` shows (`crate::latency`).
    pub latency_histogram: crate::latency::Histogram,
    /// Responses by status class again, readable (the Prometheus handles are write-only):
    /// `/status` and its charts compute rates and error shares from them.
    responses_seen: [AtomicU64; 5],
    /// Attempts that got no response at all (connect failure, reset, timeout).
    failures: AtomicU64,
}

impl BackendState {
    /// A backend with default health settings and a panic flag of its own (tests, benches).
    pub fn new(id: BackendId) -> Arc<BackendState> {
        BackendState::with_health(
            id,
            &HealthPolicy::default(),
            tokio::time::Instant::now(),
            Arc::default(),
            Arc::default(),
        )
    }

    /// `pool_panic` is the pool's shared panic flag: while set, unhealthy backends are used too.
    pub fn with_health(
        id: BackendId,
        policy: &HealthPolicy,
        now: tokio::time::Instant,
        pool_panic: Arc<AtomicBool>,
        queue: Arc<SlotQueue>,
    ) -> Arc<BackendState> {
        let series = crate::metrics::backend::BackendSeries::get_or_create(&id.pool, &id.address);
        let responses = series.response_counters();
        Arc::new(BackendState {
            id,
            series,
            queue,
            breaker: BreakerCell::default(),
            responses,
            health: HealthCell::new(policy, now, pool_panic),
            in_flight: AtomicUsize::new(0),
            picked_total: AtomicU64::new(0),
            latency: AtomicU64::new(ewma::UNOBSERVED),
            latency_histogram: crate::latency::Histogram::default(),
            responses_seen: Default::default(),
            failures: AtomicU64::new(0),
        })
    }

    /// Counts one backend response by its status class.
    pub fn count_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].increment(1);
        self.responses_seen[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Responses received so far by status class (1xx..5xx).
    pub fn responses_by_class(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses_seen[i].load(Ordering::Relaxed))
    }

    /// Counts one attempt the backend failed without a response (connect failure, reset,
    /// timeout): only backend-origin failures, never a client's.
    pub fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Attempts that got no response (`count_failure`).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The backend's Prometheus series (the admin listener refreshes its gauges).
    pub fn series(&self) -> &crate::metrics::backend::BackendSeries {
        &self.series
    }

    pub fn id(&self) -> &BackendId {
        &self.id
    }

    pub fn address(&self) -> &BackendAddress {
        &self.id.address
    }

    /// Connections (L4) or requests (L7) currently using this backend.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// How many times this backend was chosen since it first appeared in a config.
    pub fn picked_total(&self) -> u64 {
        self.picked_total.load(Ordering::Relaxed)
    }

    /// Feeds one observed latency (time to response headers for HTTP, connect time for TCP)
    /// into the peak-EWMA. `now_micros` is any monotonic clock in microseconds; pass the same
    /// clock to `PickContext::now_micros`.
    pub fn record_latency(&self, rtt_micros: u64, now_micros: u64) {
        self.latency_histogram.record(rtt_micros);
        // A lost race only retries; the update is a pure function of the previous word.
        let _ = self
            .latency
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                Some(ewma::observe(packed, rtt_micros, now_micros))
            });
    }

    /// The latency estimate in microseconds, decayed to `now_micros`; `None` before the first
    /// observation.
    pub fn latency_estimate(&self, now_micros: u64) -> Option<f64> {
        ewma::estimate(self.latency.load(Ordering::Relaxed), now_micros)
    }

    /// Counts one unit of work until the returned guard drops, whatever way the work ends
    /// (success, error, client gone, task cancelled), so the count cannot drift.
    pub fn acquire(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.picked_total.fetch_add(1, Ordering::Relaxed);
        InFlight {
            state: Arc::clone(self),
        }
    }

    /// Like `acquire`, but only while fewer than `max` are in flight, atomically: two threads
    /// that both saw room cannot both take the last slot.
    pub fn try_acquire(self: &Arc<Self>, max: usize) -> Option<InFlight> {
        self.in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                (current < max).then_some(current + 1)
            })
            .ok()?;
        self.picked_total.fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            state: Arc::clone(self),
        })
    }
}

/// Held for the life of a proxied connection or request. Keeps the state alive even after
/// the backend left the config, so its counters stay exact while the work drains.
#[derive(Debug)]
pub struct InFlight {
    state: Arc<BackendState>,
}

impl InFlight {
    pub fn backend(&self) -> &Arc<BackendState> {
        &self.state
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.state.queue.slot_freed();
    }
}

/// Requests of one pool waiting for a backend slot. Shared by the pool's backends so that
/// any finished request can wake a waiter; costs one atomic load when nobody waits.
#[derive(Debug, Default)]
pub struct SlotQueue {
    pending: AtomicU32,
    freed: tokio::sync::Notify,
}

impl SlotQueue {
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Takes a place in the queue if fewer than `max` wait; released on drop.
    pub fn enter(self: &Arc<Self>, max: u32) -> Option<QueuePlace> {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(QueuePlace {
            queue: Arc::clone(self),
        })
    }

    /// Resolves the next time a slot frees up after this call (create it before re-checking
    /// for a slot, so a release in between is not missed).
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    fn slot_freed(&self) {
        if self.pending.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// A place in a pool's wait queue.
#[derive(Debug)]
pub struct QueuePlace {
    queue: Arc<SlotQueue>,
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.queue.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A backend as one snapshot sees it: its configured weight plus the shared runtime state.
#[derive(Debug, Clone)]
pub struct Backend {
    pub address: BackendAddress,
    /// The pool's breaker policy, if any (a copy per backend keeps `is_available` self-contained).
    pub breaker: Option<Arc<BreakerPolicy>>,
    pub weight: u32,
    /// In-flight ceiling from the config; `None`: unlimited.
    pub max_connections: Option<u32>,
    pub state: Arc<BackendState>,
}

impl Backend {
    /// Whether selection may pick it. Weight 0 means drain: no new work, in-flight finishes.
    /// At `max_connections` it is full until some work ends. Unhealthy, ejected or drained
    /// backends are skipped, unless the pool is in panic mode (then only drained ones are).
    pub fn is_available(&self) -> bool {
        self.weight > 0
            && self.state.health.usable()
            && self.state.breaker.may_select(self.breaker.as_deref())
            && self
                .max_connections
                .is_none_or(|max| self.state.in_flight() < max as usize)
    }

    /// The guard the proxy holds after `pick`: enforces `max_connections` exactly (the pick
    /// read the count without reserving, so a racing thread may have taken the last slot;
    /// `None` then, and the caller picks again).
    pub fn try_acquire(&self) -> Option<InFlight> {
        match self.max_connections {
            None => Some(self.state.acquire()),
            Some(max) => self.state.try_acquire(max as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Arc<BackendState> {
        BackendState::new(BackendId {
            pool: "app".into(),
            address: "127.0.0.1:1".parse().unwrap(),
        })
    }

    #[test]
    fn guard_counts_exactly_under_drop_in_any_order() {
        let backend = state();
        let first = backend.acquire();
        let second = backend.acquire();
        assert_eq!(backend.in_flight(), 2);
        drop(first);
        assert_eq!(backend.in_flight(), 1);
        drop(second);
        assert_eq!(backend.in_flight(), 0);
        assert_eq!(backend.picked_total(), 2);
    }

    #[test]
    fn max_connections_makes_a_backend_unavailable_and_try_acquire_is_exact() {
        let backend = Backend {
            address: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
            max_connections: Some(2),
            breaker: None,
            state: state(),
        };
        let first = backend.try_acquire().unwrap();
        assert!(backend.is_available());
        let _second = backend.try_acquire().unwrap();
        assert!(!backend.is_available());
        assert!(backend.try_acquire().is_none());
        assert_eq!(backend.state.in_flight(), 2);
        drop(first);
        assert!(backend.is_available());
    }

    #[test]
    fn latency_estimate_starts_unknown_then_follows_peaks() {
        let backend = state();
        assert_eq!(backend.latency_estimate(0), None);
        backend.record_latency(1_000, 0);
        backend.record_latency(5_000, 1_000);
        let estimate = backend.latency_estimate(1_000).unwrap();
        assert!(
            (estimate - 5_000.0).abs() < 1.0,
            "peak is taken at once: {estimate}"
        );
    }

    #[test]
    fn guard_keeps_state_alive_after_the_config_forgets_it() {
        let backend = state();
        let guard = backend.acquire();
        drop(backend);
        assert_eq!(guard.backend().in_flight(), 1);
    }
}
