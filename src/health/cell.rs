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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::clock_micros;
    use crate::config::health::{ActiveCheck, CheckKind};
    use tokio::time::sleep;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            active: Some(ActiveCheck {
                kind: CheckKind::Tcp,
                interval: Duration::from_secs(1),
                unhealthy_interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                rise: 1,
                fall: 1,
                start_healthy: false,
            }),
            slow_start: Some(Duration::from_secs(10)),
            ..HealthPolicy::default()
        }
    }

    fn check(cell: &HealthCell, ok: bool, policy: &HealthPolicy) -> Option<Change> {
        let now = Instant::now();
        cell.update(|machine| machine.record_check(now, ok, "check".into(), policy))
    }

    /// The data path's slow start (lock-free, in `clock_micros`) ramps from the moment the
    /// machine says the backend came up, on tokio's clock: exact under a paused one.
    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_from_each_return_on_the_paused_clock() {
        let policy = policy();
        let cell = HealthCell::new(&policy, Instant::now(), Arc::default());
        sleep(Duration::from_secs(60)).await;
        assert_eq!(check(&cell, true, &policy).unwrap().to, State::Up);
        let factor = || cell.slow_start_factor(clock_micros(), policy.slow_start);
        assert_eq!(factor(), 0.1, "from 10%");
        sleep(Duration::from_secs(5)).await;
        assert_eq!(factor(), 0.5);
        sleep(Duration::from_secs(5)).await;
        assert_eq!(factor(), 1.0);
        assert_eq!(cell.slow_start_factor(clock_micros(), None), 1.0);

        // Down and up again: the ramp starts over from the return.
        assert_eq!(check(&cell, false, &policy).unwrap().to, State::Down);
        sleep(Duration::from_secs(30)).await;
        assert!(check(&cell, true, &policy).is_some());
        sleep(Duration::from_millis(2500)).await;
        assert_eq!(factor(), 0.25);
    }
}
