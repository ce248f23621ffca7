//! A backend's circuit breaker as the data path uses it: the pure `CircuitBreaker` behind a
//! mutex, with an atomic mirror so that selection on a closed breaker (the common case) reads
//! one atomic. Only pools that configure `circuit_breaker:` ever lock it.

use crate::resilience::breaker::{BreakerPolicy, BreakerState, CircuitBreaker};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

const CLOSED: u8 = 0;
const NOT_CLOSED: u8 = 1;

#[derive(Debug)]
pub struct BreakerCell {
    machine: Mutex<CircuitBreaker>,
    state: AtomicU8,
}

impl Default for BreakerCell {
    fn default() -> BreakerCell {
        BreakerCell {
            machine: Mutex::new(CircuitBreaker::new(Instant::now())),
            state: AtomicU8::new(CLOSED),
        }
    }
}

impl BreakerCell {
    pub fn machine(&self) -> MutexGuard<'_, CircuitBreaker> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mirror(&self, machine: &CircuitBreaker) {
        let state = if machine.state() == BreakerState::Closed {
            CLOSED
        } else {
            NOT_CLOSED
        };
        self.state.store(state, Ordering::Relaxed);
    }

    /// For selection: could a request go to this backend now? Lock-free while closed.
    pub fn may_select(&self, policy: Option<&BreakerPolicy>) -> bool {
        match policy {
            Some(policy) if self.state.load(Ordering::Relaxed) != CLOSED => {
                self.machine().would_allow(Instant::now(), policy)
            }
            _ => true,
        }
    }

    /// Admits one request (counting half-open probes). False: pick another backend.
    pub fn admit(&self, policy: Option<&BreakerPolicy>) -> bool {
        match policy {
            Some(policy) if self.state.load(Ordering::Relaxed) != CLOSED => {
                let mut machine = self.machine();
                let admitted = machine.allow(Instant::now(), policy);
                self.mirror(&machine);
                admitted
            }
            _ => true,
        }
    }

    /// Records an outcome; returns the new state and its reason when it changed.
    pub fn record(&self, ok: bool, policy: &BreakerPolicy) -> Option<(BreakerState, String)> {
        let mut machine = self.machine();
        let change = machine.record(Instant::now(), ok, policy);
        self.mirror(&machine);
        change.map(|state| (state, machine.reason().to_owned()))
    }
}
