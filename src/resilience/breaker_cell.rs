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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::sleep;

    /// The cell reads the clock itself: under a paused one, `open_for` passes exactly.
    #[tokio::test(start_paused = true)]
    async fn opens_then_admits_probes_after_open_for_on_the_paused_clock() {
        let policy = BreakerPolicy {
            window: Duration::from_secs(10),
            min_requests: 4,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(5),
            probes: 1,
        };
        let cell = BreakerCell::default();
        let mut opened = None;
        for _ in 0..4 {
            opened = opened.or(cell.record(false, &policy));
        }
        assert_eq!(opened.map(|(state, _)| state), Some(BreakerState::Open));
        assert!(!cell.may_select(Some(&policy)));
        sleep(Duration::from_millis(4999)).await;
        assert!(!cell.may_select(Some(&policy)), "open for 5 s");
        sleep(Duration::from_millis(1)).await;
        assert!(cell.may_select(Some(&policy)));
        assert!(cell.admit(Some(&policy)), "one half-open probe");
        assert!(!cell.admit(Some(&policy)), "only one");
        assert_eq!(
            cell.record(true, &policy).map(|(state, _)| state),
            Some(BreakerState::Closed)
        );
        assert!(cell.may_select(Some(&policy)));
    }
}
