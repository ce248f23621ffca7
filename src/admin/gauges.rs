//! The gauges `/metrics` reads from the running snapshot rather than having them pushed from
//! the data path: backend up and in-flight, selections, pool counts and panic mode. Refreshed
//! just before each render.

use crate::metrics::{POOL_BACKENDS, POOL_CONFIGURED_BACKENDS, pool_panic};
use crate::state::Snapshot;

pub(super) fn refresh_gauges(snapshot: &Snapshot) {
    tls_gauges(snapshot);
    for pool in snapshot.pools.values() {
        let name = pool.config.name.clone();
        let (mut healthy, mut ejected, mut drained) = (0.0, 0.0, 0.0);
        for backend in &pool.backends {
            let health = &backend.state.health;
            let up = health.is_healthy() && !health.is_drained();
            (backend.state.series()).refresh(
                up,
                backend.state.in_flight(),
                backend.state.picked_total(),
            );
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

/// Certificate expiry and staleness, read from each TLS listener's store.
fn tls_gauges(snapshot: &Snapshot) {
    use crate::metrics::{TLS_CERT_EXPIRY, TLS_CERT_ROTATIONS_TOTAL, TLS_CERT_STALE};
    for listener in snapshot.config.listeners.values() {
        let Some(tls) = &listener.tls else { continue };
        for cert in tls.store.status() {
            let name = cert
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| cert.subject.clone());
            metrics::gauge!(TLS_CERT_EXPIRY, "listener" => listener.name.clone(), "name" => name, "cert" => cert.cert.clone())
                .set(cert.expires_at as f64);
            metrics::gauge!(TLS_CERT_STALE, "listener" => listener.name.clone(), "cert" => cert.cert)
                .set(if cert.problem.is_some() { 1.0 } else { 0.0 });
        }
        let (rotated, refused) = tls.store.counts();
        metrics::counter!(TLS_CERT_ROTATIONS_TOTAL, "listener" => listener.name.clone(), "result" => "rotated")
            .absolute(rotated);
        metrics::counter!(TLS_CERT_ROTATIONS_TOTAL, "listener" => listener.name.clone(), "result" => "refused")
            .absolute(refused);
    }
}
