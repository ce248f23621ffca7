//! The I/O data paths: `tcp` (L4) and `http` (L7), plus what they share. Both read the current
//! snapshot and ask the pool's balancer for a backend; neither writes any shared state except
//! the per-backend atomics through RAII guards.

pub mod activity;
pub mod body;
pub mod headers;
pub mod http;
pub mod tcp;

use crate::backend::Backend;
use crate::balance::PickContext;
use crate::state::Pool;
use std::cell::RefCell;

thread_local! {
    /// One RNG per worker thread: selection needs cheap randomness and no shared lock.
    static RNG: RefCell<fastrand::Rng> = RefCell::new(fastrand::Rng::new());
}

/// Asks the pool's algorithm for a backend; `None` when none is available.
pub fn pick_backend(pool: &Pool) -> Option<&Backend> {
    let context = PickContext::default();
    let index = RNG.with(|rng| {
        pool.balancer
            .pick(&pool.backends, &context, &mut rng.borrow_mut())
    })?;
    pool.backends.get(index)
}
