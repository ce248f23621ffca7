//! The gauges `/metrics` reads from the running snapshot rather than having them pushed from
//! the data path: backend up and in-flight, selections, pool counts and panic mode. Refreshed
//! just before each render.

use crate::metrics::{
    BACKEND_ACTIVE, BACKEND_PICKED_TOTAL, BACKEND_UP, POOL_BACKENDS, POOL_CONFIGURED_BACKENDS,
    pool_panic,
};
use crate::state::Snapshot;

pub(super) fn refresh_gauges(snapshot: &Snapshot) {
    for pool in snapshot.pools.values() {
        let name = pool.config.name.clone();
        let (mut healthy, mut ejected, mut drained) = (0.0, 0.0, 0.0);
        for backend in &pool.backends {
            let health = &backend.state.health;
            let labels = [
                ("pool", name.clone()),
                ("backend", backend.address.to_string()),
            ];
            let up = health.is_healthy() && !health.is_drained();
            metrics::gauge!(BACKEND_UP, &labels).set(if up { 1.0 } else { 0.0 });
            metrics::gauge!(BACKEND_ACTIVE, &labels).set(backend.state.in_flight() as f64);
            metrics::counter!(BACKEND_PICKED_TOTAL, &labels).absolute(backend.state.picked_total());
            healthy += f64::from(u8::from(health.is_healthy()));
            ejected += f64::from(u8::from(health.is_ejected()));
            drained += f64::from(u8::from(health.is_drained()));
        }
        let count = |state: &'static str, value: f64| {
            metrics::gauge!(POOL_BACKENDS, "pool" => name.clone(), "state" => state).set(value);
        };
        count("healthy", healthy);
        count("ejected", ejected);
        count("drained", drained);
        // The states overlap (a drained backend can be healthy), so the total is not their
        // sum and gets a family of its own rather than a `state="total"` value (issue 25).
        metrics::gauge!(POOL_CONFIGURED_BACKENDS, "pool" => name.clone())
            .set(pool.backends.len() as f64);
        pool_panic(&name, pool.panic.load(std::sync::atomic::Ordering::Relaxed));
    }
}
