//! Round robin over the available backends with a shared atomic cursor.
//!
//! Weighted (smooth, nginx-style) interleaving is the algorithms issue's; for now weights
//! only matter as 0 = never picked.

use crate::backend::Backend;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct RoundRobin {
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub fn new(_backends: &[Backend]) -> RoundRobin {
        RoundRobin {
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn pick(&self, backends: &[Backend]) -> Option<usize> {
        let count = backends.len();
        if count == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&index| backends[index].is_available())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendId, BackendState};

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let address = format!("127.0.0.1:{}", 9000 + i).parse().unwrap();
                Backend {
                    address,
                    weight,
                    state: BackendState::new(BackendId {
                        pool: "p".into(),
                        address,
                    }),
                }
            })
            .collect()
    }

    #[test]
    fn cycles_through_every_backend_in_order() {
        let pool = backends(&[1, 1, 1]);
        let rr = RoundRobin::new(&pool);
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&pool).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_weight_zero_and_reports_none_when_all_drained() {
        let pool = backends(&[1, 0, 1]);
        let rr = RoundRobin::new(&pool);
        assert!((0..10).all(|_| rr.pick(&pool) != Some(1)));
        let drained = backends(&[0, 0]);
        assert_eq!(RoundRobin::new(&drained).pick(&drained), None);
        assert_eq!(RoundRobin::new(&[]).pick(&[]), None);
    }
}
