//! First available: the first backend in config order that is not full, for packing work onto
//! as few backends as possible (HAProxy's `first`). Meaningful only with `max_connections` on
//! the backends: without a cap the first backend takes everything while it is available.

use crate::backend::Backend;

#[derive(Debug)]
pub struct First;

impl First {
    pub fn pick(&self, backends: &[Backend]) -> Option<usize> {
        backends.iter().position(Backend::is_available)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::pool;

    #[test]
    fn fills_backends_in_order_up_to_their_cap() {
        let mut backends = pool(&[1, 0, 1, 1]);
        for backend in &mut backends {
            backend.max_connections = Some(2);
        }
        let mut guards = Vec::new();
        let mut picks = Vec::new();
        while let Some(index) = First.pick(&backends) {
            picks.push(index);
            guards.push(backends[index].try_acquire().unwrap());
        }
        assert_eq!(picks, [0, 0, 2, 2, 3, 3]);
        guards.remove(0);
        assert_eq!(
            First.pick(&backends),
            Some(0),
            "a freed slot refills the first"
        );
    }
}
