//! The I/O data paths: `tcp` (L4) and `http` (L7), plus what they share. Both read the current
//! snapshot and ask the pool's balancer for a backend; neither writes any shared state except
//! the per-backend atomics through RAII guards.

pub mod accept;
pub mod activity;
pub mod body;
pub mod headers;
pub mod http;
pub mod tcp;
pub mod tunnel;

use crate::backend::{Backend, InFlight};
use crate::balance::PickContext;
use crate::state::Pool;
use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Instant;

thread_local! {
    /// One RNG per worker thread: selection needs cheap randomness and no shared lock.
    static RNG: RefCell<fastrand::Rng> = RefCell::new(fastrand::Rng::new());
}

/// How many times a pick is retried when the chosen backend filled up between the pick and
/// the acquire (another thread took its last `max_connections` slot).
const PICK_ATTEMPTS: usize = 3;

/// Asks the pool's algorithm for a backend and takes an in-flight slot on it; `None` when no
/// backend is available.
pub fn pick_backend<'p>(pool: &'p Pool, context: &PickContext) -> Option<(&'p Backend, InFlight)> {
    RNG.with(|rng| {
        let mut rng = rng.borrow_mut();
        for _ in 0..PICK_ATTEMPTS {
            let index = pool.balancer.pick(&pool.backends, context, &mut rng)?;
            let backend = pool.backends.get(index)?;
            if let Some(in_flight) = backend.try_acquire() {
                return Some((backend, in_flight));
            }
        }
        None
    })
}

/// Monotonic microseconds since the process started: the clock selection (p2c's latency
/// decay) and latency recording share.
pub fn clock_micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}
