//! Per-backend runtime state that outlives config reloads, and the RAII guard that counts
//! in-flight work on it.
//!
//! A `BackendState` is identified by `(pool, address)`; the snapshot builder (`state.rs`) hands
//! the same `Arc` to every snapshot in which that backend appears, so counters survive a reload
//! and a weight change. Counters are atomics: the data path never takes a lock here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What the snapshot builder matches on to carry runtime state across reloads.
/// Weight is deliberately not part of it: reweighting a backend keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    pub pool: String,
    pub address: SocketAddr,
}

#[derive(Debug)]
pub struct BackendState {
    id: BackendId,
    in_flight: AtomicUsize,
    picked_total: AtomicU64,
}

impl BackendState {
    pub fn new(id: BackendId) -> Arc<BackendState> {
        Arc::new(BackendState {
            id,
            in_flight: AtomicUsize::new(0),
            picked_total: AtomicU64::new(0),
        })
    }

    pub fn id(&self) -> &BackendId {
        &self.id
    }

    pub fn address(&self) -> SocketAddr {
        self.id.address
    }

    /// Connections (L4) or requests (L7) currently using this backend.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// How many times this backend was chosen since it first appeared in a config.
    pub fn picked_total(&self) -> u64 {
        self.picked_total.load(Ordering::Relaxed)
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
    }
}

/// A backend as one snapshot sees it: its configured weight plus the shared runtime state.
#[derive(Debug, Clone)]
pub struct Backend {
    pub address: SocketAddr,
    pub weight: u32,
    pub state: Arc<BackendState>,
}

impl Backend {
    /// Whether selection may pick it. Weight 0 means drain: no new work, in-flight finishes.
    /// Health and ejection will narrow this further.
    pub fn is_available(&self) -> bool {
        self.weight > 0
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
    fn guard_keeps_state_alive_after_the_config_forgets_it() {
        let backend = state();
        let guard = backend.acquire();
        drop(backend);
        assert_eq!(guard.backend().in_flight(), 1);
    }
}
