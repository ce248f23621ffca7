//! Least connections: the available backend with the fewest in-flight relative to its weight.
//!
//! O(n) per pick: every candidate's counter is read. The scan starts at a rotating offset and
//! keeps the first of equally loaded backends, so ties go round robin (HAProxy's `leastconn`)
//! instead of always piling onto the first backend in the list while all are idle.

use crate::backend::Backend;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct LeastConn {
    cursor: AtomicUsize,
}

impl LeastConn {
    pub fn new() -> LeastConn {
        LeastConn::default()
    }

    pub fn pick(&self, backends: &[Backend]) -> Option<usize> {
        if backends.is_empty() {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % backends.len();
        least_loaded_from(backends, start)
    }
}

/// The least loaded available backend, scanning from `start` and keeping the first of equals.
pub(super) fn least_loaded_from(backends: &[Backend], start: usize) -> Option<usize> {
    let start = start.min(backends.len());
    // The best so far as plain numbers, so each candidate costs one counter read and two
    // multiplications: (in_flight + 1) / weight compared by cross-multiplying.
    let mut best: Option<usize> = None;
    let (mut best_load, mut best_weight) = (0u64, 0u64);
    let mut visit = |index: usize, candidate: &Backend| {
        if !candidate.is_available() {
            return;
        }
        let load = candidate.state.in_flight() as u64 + 1;
        let weight = u64::from(candidate.weight);
        if best.is_none() || load.saturating_mul(best_weight) < best_load.saturating_mul(weight) {
            best = Some(index);
            (best_load, best_weight) = (load, weight);
        }
    };
    let (before, after) = backends.split_at(start);
    for (offset, candidate) in after.iter().enumerate() {
        visit(start + offset, candidate);
    }
    for (index, candidate) in before.iter().enumerate() {
        visit(index, candidate);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{fill, load, pool};

    #[test]
    fn picks_the_least_loaded_relative_to_weight() {
        let backends = pool(&[1, 1, 1]);
        let _load = load(&backends, &[3, 1, 2]);
        assert_eq!(LeastConn::new().pick(&backends), Some(1));
        // (in_flight + 1) / weight: 4/2 = 2, 2/1 = 2, 3/3 = 1 wins.
        let weighted = pool(&[2, 1, 3]);
        let _load = load(&weighted, &[3, 1, 2]);
        assert_eq!(LeastConn::new().pick(&weighted), Some(2));
    }

    #[test]
    fn ties_rotate_instead_of_always_taking_the_first() {
        let backends = pool(&[1, 1, 1]);
        let least = LeastConn::new();
        let picks: Vec<_> = (0..6).map(|_| least.pick(&backends).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn idle_weighted_pool_prefers_the_heavier_backend() {
        let backends = pool(&[1, 5]);
        assert_eq!(LeastConn::new().pick(&backends), Some(1));
    }

    #[test]
    fn skips_unavailable_and_says_none_when_nothing_is_left() {
        let mut backends = pool(&[1, 0, 1]);
        let _load = load(&backends, &[0, 0, 5]);
        let _full = fill(&mut backends, 0);
        assert_eq!(LeastConn::new().pick(&backends), Some(2));
        let _full = fill(&mut backends, 2);
        assert_eq!(LeastConn::new().pick(&backends), None);
        assert_eq!(LeastConn::new().pick(&[]), None);
    }
}
