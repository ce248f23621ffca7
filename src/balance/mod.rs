//! Backend selection: one pure algorithm a file, chosen per pool by `config::Algorithm`.
//!
//! The proxy calls `Balancer::pick` once per TCP connection or HTTP request. Algorithms see the
//! snapshot's backends (weights plus shared atomics) and an injected RNG; they never touch
//! sockets or the clock (time arrives as `PickContext::now_micros`), so they are unit-tested
//! without I/O. Any state an algorithm keeps (a round-robin cursor) is shared by all worker
//! threads and is lock-free, except smooth WRR over very large weight sums (a short mutex).
//!
//! How the proxy uses it (HTTP; TCP uses `PickContext::for_connection`):
//! ```ignore
//! let context = PickContext::for_request(&pool.config, req.headers(), req.uri(), client, now_micros);
//! let index = pool.balancer.pick(&pool.backends, &context, &mut rng).ok_or(NoBackend)?;
//! let guard = pool.backends[index].try_acquire().ok_or(Full)?; // or pick again
//! // ... forward; on response headers: backend.state.record_latency(rtt_micros, now_micros)
//! if let Some(cookie) = sticky::set_cookie_if_needed(pool.config.sticky.as_ref(), &context,
//!     pool.backends[index].address) { response.headers_mut().append(SET_COOKIE, cookie); }
//! ```
//! Every algorithm skips unavailable backends (`Backend::is_available`: weight 0, at
//! `max_connections`, later unhealthy or ejected) and returns `None` when none is left.
//! Must not import `state`, `proxy` or anything doing I/O.

mod first;
mod hash;
mod key;
mod least_conn;
pub mod p2c;
mod random;
mod round_robin;
pub mod split;
pub mod sticky;

use crate::backend::Backend;
use crate::config::Algorithm;
pub use key::{connection_key, cookie, hash_bytes, request_key};

use first::First;
use hash::Hash;
use least_conn::LeastConn;
use p2c::P2c;
use random::Random;
use round_robin::RoundRobin;

/// Per-request facts an algorithm may key on. Plain data, built without allocating by
/// `for_request` / `for_connection` (in `key.rs`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PickContext {
    /// Hash of the pool's hash key for this request; `None` when the pool does not hash or the
    /// request lacks the key (the hash pool then uses its fallback).
    pub key: Option<u64>,
    /// The backend token from the client's sticky cookie, when the pool is sticky.
    pub sticky: Option<u64>,
    /// Monotonic time in microseconds, same clock as `BackendState::record_latency`; only p2c
    /// with `load: ewma` reads it (to decay latency estimates).
    pub now_micros: u64,
}

#[derive(Debug)]
pub struct Balancer {
    strategy: Strategy,
    /// `(sticky token, index)` sorted by token, for cookie lookups in O(log n).
    sticky_index: Box<[(u64, u32)]>,
}

#[derive(Debug)]
enum Strategy {
    RoundRobin(RoundRobin),
    Random(Random),
    LeastConn(LeastConn),
    P2c(P2c),
    Hash(Hash),
    First(First),
}

impl Balancer {
    pub fn new(algorithm: &Algorithm, backends: &[Backend]) -> Balancer {
        let mut sticky_index: Vec<(u64, u32)> = backends
            .iter()
            .enumerate()
            .map(|(index, backend)| (sticky::token(&backend.address), index as u32))
            .collect();
        sticky_index.sort_unstable();
        Balancer {
            strategy: Strategy::new(algorithm, backends),
            sticky_index: sticky_index.into_boxed_slice(),
        }
    }

    /// The index into `backends` of the chosen one, or `None` when none is available.
    /// `backends` must be the slice this balancer was built for. A sticky cookie naming an
    /// available backend wins over the algorithm.
    pub fn pick(
        &self,
        backends: &[Backend],
        context: &PickContext,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        if let Some(index) = context.sticky.and_then(|token| self.sticky_backend(token))
            && backends.get(index).is_some_and(Backend::is_available)
        {
            return Some(index);
        }
        self.strategy.pick(backends, context, rng)
    }

    /// The backend a sticky token (from `sticky::parse_cookie_value`) names, if still in
    /// the pool.
    pub fn sticky_backend(&self, token: u64) -> Option<usize> {
        let position = self
            .sticky_index
            .binary_search_by_key(&token, |&(t, _)| t)
            .ok()?;
        Some(self.sticky_index[position].1 as usize)
    }
}

impl Strategy {
    fn new(algorithm: &Algorithm, backends: &[Backend]) -> Strategy {
        match algorithm {
            Algorithm::RoundRobin => Strategy::RoundRobin(RoundRobin::new(backends)),
            Algorithm::Random => Strategy::Random(Random::new(backends)),
            Algorithm::LeastConn => Strategy::LeastConn(LeastConn::new()),
            Algorithm::P2c(options) => Strategy::P2c(P2c::new(options.load)),
            Algorithm::Hash(options) => Strategy::Hash(Hash::new(
                backends,
                options.bounded_load,
                Strategy::new(&options.fallback, backends),
            )),
            Algorithm::First => Strategy::First(First),
        }
    }

    fn pick(
        &self,
        backends: &[Backend],
        context: &PickContext,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        match self {
            Strategy::RoundRobin(rr) => rr.pick(backends, rng),
            Strategy::Random(random) => random.pick(backends, rng),
            Strategy::LeastConn(least) => least.pick(backends),
            Strategy::P2c(p2c) => p2c.pick(backends, context.now_micros, rng),
            Strategy::Hash(hash) => match context.key {
                Some(key) => hash.pick(backends, key),
                None => hash.fallback().pick(backends, context, rng),
            },
            Strategy::First(first) => first.pick(backends),
        }
    }
}

/// Whether `a` is strictly less loaded than `b`, in-flight relative to weight. Counting the
/// request about to be placed (`+ 1`, as HAProxy does) makes weights matter even when all are
/// idle: a weight-5 backend then takes work before a weight-1 one.
fn lighter(a: &Backend, b: &Backend) -> bool {
    let a_load = (a.state.in_flight() as u64 + 1).saturating_mul(u64::from(b.weight));
    let b_load = (b.state.in_flight() as u64 + 1).saturating_mul(u64::from(a.weight));
    a_load < b_load
}

/// Weighted random over the available backends, in O(n): the slow path of the algorithms
/// whose fast path met unavailable backends.
fn weighted_available(backends: &[Backend], rng: &mut fastrand::Rng) -> Option<usize> {
    let total: u64 = backends
        .iter()
        .filter(|b| b.is_available())
        .map(|b| u64::from(b.weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut draw = rng.u64(..total);
    let mut last = None;
    for (index, backend) in backends.iter().enumerate() {
        // Availability may change between the two passes (another thread's guard); then the
        // last available one seen takes the remainder rather than returning nothing.
        if backend.is_available() {
            let weight = u64::from(backend.weight);
            if draw < weight {
                return Some(index);
            }
            draw -= weight;
            last = Some(index);
        }
    }
    last
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
