//! The health part of a backend's runtime state: the pure state machine behind a mutex, plus
//! atomics mirroring its verdict so the data path decides availability without locking.
//!
//! Writers (probes, outcome reports, admin actions) go through `update`, which applies one
//! machine call and refreshes the mirrors; readers (`usable`) only load atomics. The pool's
//! panic flag is shared by all backends of a pool, so panic mode is one store for the pool.
//! Slow start reads the machine's `available_since` from a mirror too (as `clock_micros`), and
//! ramps with the machine's own `slow_start_factor`: one computation, one source of the time.

use crate::clock::micros_at;
use crate::config::health::HealthPolicy;
use crate::health::evacuation::{Cause, Evacuation};
use crate::health::machine::{BackendHealth, Change, State, slow_start_factor};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub struct HealthCell {
    machine: Mutex<BackendHealth>,
    healthy: AtomicBool,
    drained: AtomicBool,
    ejected: AtomicBool,
    pool_panic: Arc<AtomicBool>,
    /// Mirrors the machine's passive failure streak, so a success on a backend without
    /// recent failures (the common case) costs one load, not a lock.
    passive_failures: AtomicU32,
    /// The machine's `available_since` as `clock::clock_micros`, for slow start without the lock.
    available_since_micros: AtomicU64,
    pub checks_passed: AtomicU64,
    pub checks_failed: AtomicU64,
    pub ejections_total: AtomicU64,
    /// Sounded when the backend stops answering or leaves the pool for failing.
    evacuation: Evacuation,
}

impl HealthCell {
    pub fn new(policy: &HealthPolicy, now: Instant, pool_panic: Arc<AtomicBool>) -> HealthCell {
        let machine = BackendHealth::new(now, policy);
        let available_since = micros_at(machine.available_since());
        HealthCell {
            healthy: AtomicBool::new(machine.state() == State::Up),
            drained: AtomicBool::new(false),
            ejected: AtomicBool::new(false),
            machine: Mutex::new(machine),
            pool_panic,
            passive_failures: AtomicU32::new(0),
            available_since_micros: AtomicU64::new(available_since),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            ejections_total: AtomicU64::new(0),
            evacuation: Evacuation::default(),
        }
    }

    /// Whether selection may use the backend: not drained, and healthy or the pool panics.
    pub fn usable(&self) -> bool {
        !self.drained.load(Ordering::Relaxed)
            && (self.healthy.load(Ordering::Relaxed) || self.pool_panic.load(Ordering::Relaxed))
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    pub fn pool_panic(&self) -> &Arc<AtomicBool> {
        &self.pool_panic
    }

    /// Requests waiting on the backend listen to this (see `health::evacuation`).
    pub fn evacuation(&self) -> &Evacuation {
        &self.evacuation
    }

    pub fn has_passive_failures(&self) -> bool {
        self.passive_failures.load(Ordering::Relaxed) > 0
    }

    /// A read-only look at the machine (for `/status`).
    pub fn machine(&self) -> MutexGuard<'_, BackendHealth> {
        self.machine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies one machine call and refreshes the atomic mirrors.
    pub fn update(
        &self,
        call: impl FnOnce(&mut BackendHealth) -> Option<Change>,
    ) -> Option<Change> {
        let mut machine = self.machine();
        let change = call(&mut machine);
        let state = machine.state();
        self.healthy.store(state == State::Up, Ordering::Relaxed);
        self.drained
            .store(state == State::Drained, Ordering::Relaxed);
        self.ejected
            .store(state == State::Ejected, Ordering::Relaxed);
        self.passive_failures
            .store(machine.passive_failures(), Ordering::Relaxed);
        if let Some(change) = &change {
            if change.to == State::Up {
                self.available_since_micros
                    .store(micros_at(machine.available_since()), Ordering::Relaxed);
            }
            if change.to == State::Ejected && change.from != State::Ejected {
                self.ejections_total.fetch_add(1, Ordering::Relaxed);
            }
            // Leaving the pool for failing: what waits on it is likely lost. A drain is not
            // a failure; its work in flight finishes.
            match (change.from, change.to) {
                (State::Up, State::Down) => self.evacuation.sound(Cause::Down),
                (State::Up, State::Ejected) => self.evacuation.sound(Cause::Ejected),
                _ => {}
            }
        }
        change
    }

    /// Share of the weight to use now under slow start (1.0 outside the window); `now_micros`
    /// is `clock_micros()`, read once per request.
    pub fn slow_start_factor(&self, now_micros: u64, window: Option<Duration>) -> f64 {
        let since = self.available_since_micros.load(Ordering::Relaxed);
        slow_start_factor(
            Duration::from_micros(now_micros.saturating_sub(since)),
            window,
        )
    }
}
