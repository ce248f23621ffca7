//! Backend selection: one pure algorithm a file, chosen per pool by `config::Algorithm`.
//!
//! The proxy calls `Balancer::pick` once per TCP connection or HTTP request. Algorithms see the
//! snapshot's backends (weights plus shared atomics) and an injected RNG; they never touch
//! sockets or the clock, so they are unit-tested without I/O. Any state an algorithm keeps
//! (a round-robin cursor) is shared by all worker threads and must be lock-free or nearly so.

mod round_robin;

use crate::backend::Backend;
use crate::config::Algorithm;
pub use round_robin::RoundRobin;

/// Per-request facts an algorithm may key on. Empty for now; hashing adds fields.
#[derive(Debug, Default, Clone, Copy)]
pub struct PickContext {}

#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
}

impl Balancer {
    pub fn new(algorithm: &Algorithm, backends: &[Backend]) -> Balancer {
        match algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin(RoundRobin::new(backends)),
        }
    }

    /// The index into `backends` of the chosen one, or `None` when none is available.
    /// `backends` must be the slice this balancer was built for.
    pub fn pick(
        &self,
        backends: &[Backend],
        _context: &PickContext,
        _rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(backends),
        }
    }
}
