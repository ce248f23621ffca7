//! Test fixtures shared by the algorithm tests: pools built from weights, and load put on them
//! with real `InFlight` guards (so tests exercise the same counters the proxy does).

use crate::backend::{Backend, BackendId, BackendState, InFlight};

pub fn pool(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| backend(i, weight))
        .collect()
}

pub fn backend(i: usize, weight: u32) -> Backend {
    let address: crate::config::BackendAddress =
        std::net::SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080)).into();
    Backend {
        address: address.clone(),
        weight,
        max_connections: None,
        breaker: None,
        state: BackendState::new(BackendId {
            pool: "p".into(),
            address,
        }),
    }
}

/// Holds `loads[i]` guards on backend `i`; drop the result to release them.
pub fn load(backends: &[Backend], loads: &[usize]) -> Vec<InFlight> {
    backends
        .iter()
        .zip(loads)
        .flat_map(|(backend, &n)| (0..n).map(|_| backend.state.acquire()))
        .collect()
}

/// Makes backend `i` unavailable without touching its weight: full at one connection.
pub fn fill(backends: &mut [Backend], i: usize) -> InFlight {
    backends[i].max_connections = Some(1);
    backends[i].state.acquire()
}

pub fn rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(7)
}
