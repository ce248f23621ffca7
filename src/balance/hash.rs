//! Consistent hashing on a request key: a ketama-like ring, optionally with bounded loads.
//!
//! Each backend with weight > 0 owns points on a ring of `u64`s (160 for the heaviest weight,
//! proportionally fewer for lighter ones), placed by hashing its address and the point's
//! number, so the ring depends only on the backends, never on their order or on the process.
//! A key goes to the owner of the first point at or after it, walking on past unavailable
//! owners. A backend going unavailable therefore moves only the keys it owned (~1/N), and the
//! others keep theirs, whatever the weights. Removing one from the config does the same,
//! with one exception: point counts are relative to the heaviest weight (so that the ring stays
//! ~160 points a backend whatever weights say), and removing the pool's *only* heaviest
//! backend rescales everyone's points, moving more keys. Equal weights never hit this.
//!
//! Why a ring rather than Maglev: the bounded-load variant (Mirrokni et al., HAProxy's
//! `hash-balance-factor`) is a walk along the ring to the next backend under its cap, which a
//! Maglev table has no natural order for; and a ring lookup at 300 backends (~48k points, a
//! binary search of 16 steps) is already well under the 1 µs budget.
//!
//! With `bounded_load: c`, a backend is skipped while its in-flight is at
//! `ceil(c * (total in-flight + 1) * weight / total weight)` over the available backends, so no
//! backend ever exceeds c times its fair share; keys overflow to the next points on the ring.

use super::Strategy;
use super::key::hash_bytes;
use crate::backend::Backend;
use crate::config::BackendAddress;
use std::net::IpAddr;

/// Points for the heaviest backend (ketama's 160): spreads each backend's share to within
/// a few percent of its weight.
const POINTS: u64 = 160;

#[derive(Debug)]
pub struct Hash {
    /// Sorted ring positions; `owners[i]` is the backend index owning `points[i]`.
    points: Box<[u64]>,
    owners: Box<[u32]>,
    bounded_load: Option<f64>,
    fallback: Box<Strategy>,
}

impl Hash {
    pub fn new(backends: &[Backend], bounded_load: Option<f64>, fallback: Strategy) -> Hash {
        // Relative to the heaviest, not to the total: removing any other backend then leaves
        // every remaining backend's point count, and so its keys, unchanged.
        let heaviest = backends
            .iter()
            .map(|b| u64::from(b.weight))
            .max()
            .unwrap_or(0);
        let mut ring: Vec<(u64, u32)> = Vec::new();
        for (index, backend) in backends.iter().enumerate() {
            if backend.weight == 0 {
                continue;
            }
            let count = (POINTS * u64::from(backend.weight))
                .div_ceil(heaviest)
                .max(1);
            ring.extend((0..count).map(|point| (point_of(&backend.address, point), index as u32)));
        }
        // Ties (vanishingly rare) are broken by address, not by index: the ring then depends
        // on the set of (address, weight) alone, never on the order backends came in, so every
        // instance of a fleet builds the same ring from the same registry.
        ring.sort_unstable_by(|a, b| {
            (a.0.cmp(&b.0)).then_with(|| {
                backends[a.1 as usize]
                    .address
                    .cmp(&backends[b.1 as usize].address)
            })
        });
        Hash {
            points: ring.iter().map(|&(point, _)| point).collect(),
            owners: ring.iter().map(|&(_, owner)| owner).collect(),
            bounded_load,
            fallback: Box::new(fallback),
        }
    }

    /// Serves requests without a key.
    pub(super) fn fallback(&self) -> &Strategy {
        &self.fallback
    }

    pub fn pick(&self, backends: &[Backend], key: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|&point| point < key) % self.points.len();
        let available = |index: usize| backends.get(index).is_some_and(Backend::is_available);
        let Some(factor) = self.bounded_load else {
            return self.walk(start, backends.len(), available);
        };
        let (mut in_flight, mut weight) = (0u64, 0u64);
        for backend in backends.iter().filter(|b| b.is_available()) {
            in_flight += backend.state.in_flight() as u64;
            weight += u64::from(backend.weight);
        }
        if weight == 0 {
            return None;
        }
        let per_weight = factor * (in_flight + 1) as f64 / weight as f64;
        let under_cap = |index: usize| {
            available(index) && {
                let backend = &backends[index];
                let cap = (per_weight * f64::from(backend.weight)).ceil();
                (backend.state.in_flight() as f64) < cap
            }
        };
        // Some backend is always at or under the average, hence under its cap; but counts move
        // under our feet, so if none is found, place the request unbounded rather than refuse.
        self.walk(start, backends.len(), under_cap)
            .or_else(|| self.walk(start, backends.len(), available))
    }

    /// The owner of the first point from `start` (clockwise, wrapping) that `accept`s.
    fn walk(&self, start: usize, count: usize, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.points.len();
        // Normally a few steps. Before walking the whole ring (say every backend is down),
        // check in O(n) whether any backend would do at all.
        let check_at = len.min(4 * count.max(1));
        for step in 0..len {
            if step == check_at && !(0..count).any(&accept) {
                return None;
            }
            let owner = self.owners[(start + step) % len] as usize;
            if accept(owner) {
                return Some(owner);
            }
        }
        None
    }
}

/// Where point number `point` of the backend at `address` sits on the ring.
fn point_of(address: &BackendAddress, point: u64) -> u64 {
    let address = match address {
        BackendAddress::Inet(address) => address,
        BackendAddress::Unix(path) => {
            // A path has no fixed size: hash it, then place the point like an IP's.
            let mut bytes = path.as_os_str().as_encoded_bytes().to_vec();
            bytes.extend_from_slice(&point.to_be_bytes());
            return hash_bytes(&bytes);
        }
    };
    let mut bytes = [0u8; 26];
    match address.ip().to_canonical() {
        IpAddr::V4(v4) => bytes[12..16].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes[..16].copy_from_slice(&v6.octets()),
    }
    bytes[16..18].copy_from_slice(&address.port().to_be_bytes());
    bytes[18..].copy_from_slice(&point.to_be_bytes());
    hash_bytes(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::least_conn::LeastConn;
    use crate::balance::testing::{backend, fill, pool};

    fn ring(backends: &[Backend], bounded_load: Option<f64>) -> Hash {
        Hash::new(
            backends,
            bounded_load,
            Strategy::LeastConn(LeastConn::new()),
        )
    }

    fn keys(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|k| hash_bytes(&k.to_be_bytes()))
    }

    #[test]
    fn removing_one_of_n_moves_only_its_keys() {
        let backends = pool(&[1; 10]);
        let before = ring(&backends, None);
        let mut smaller = backends.clone();
        let removed = smaller.remove(4).address.clone();
        let after = ring(&smaller, None);
        let mut moved = 0;
        for key in keys(10_000) {
            let old = backends[before.pick(&backends, key).unwrap()]
                .address
                .clone();
            let new = smaller[after.pick(&smaller, key).unwrap()].address.clone();
            if old != new {
                assert_eq!(old, removed, "only the removed backend's keys move");
                moved += 1;
            }
        }
        assert!(
            (600..1_500).contains(&moved),
            "~1/10 of 10,000 moved: {moved}"
        );
    }

    #[test]
    fn an_unavailable_backend_moves_only_its_keys_without_a_rebuild() {
        let mut backends = pool(&[1; 10]);
        let hash = ring(&backends, None);
        let before: Vec<_> = keys(10_000).map(|k| hash.pick(&backends, k)).collect();
        let _full = fill(&mut backends, 3);
        for (key, old) in keys(10_000).zip(before) {
            let new = hash.pick(&backends, key);
            assert!(old == new || old == Some(3));
            assert_ne!(new, Some(3));
        }
    }

    #[test]
    fn shares_follow_weights_roughly_and_weight_zero_gets_nothing() {
        let backends = pool(&[1, 2, 0, 1]);
        let hash = ring(&backends, None);
        let mut counts = [0usize; 4];
        for key in keys(40_000) {
            counts[hash.pick(&backends, key).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!((16_000..24_000).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn ring_does_not_depend_on_backend_order() {
        let backends = pool(&[1; 5]);
        let reversed: Vec<_> = backends.iter().rev().cloned().collect();
        let (a, b) = (ring(&backends, None), ring(&reversed, None));
        for key in keys(1_000) {
            let x = backends[a.pick(&backends, key).unwrap()].address.clone();
            let y = reversed[b.pick(&reversed, key).unwrap()].address.clone();
            assert_eq!(x, y);
        }
    }

    #[test]
    fn bounded_load_keeps_every_backend_under_factor_times_average() {
        let backends: Vec<_> = (0..8).map(|i| backend(i, 1)).collect();
        let hash = ring(&backends, Some(1.25));
        // A hot key: every request has the same key, the worst case for plain hashing.
        let mut guards = Vec::new();
        for round in 0..400u64 {
            let key = if round % 2 == 0 {
                42
            } else {
                hash_bytes(&round.to_be_bytes())
            };
            let index = hash.pick(&backends, key).unwrap();
            guards.push(backends[index].state.acquire());
            let total = guards.len() as f64;
            let cap = (1.25 * total / backends.len() as f64).ceil() as usize;
            assert!(backends.iter().all(|b| b.state.in_flight() <= cap));
        }
    }

    #[test]
    fn none_when_nothing_is_available() {
        let mut backends = pool(&[1, 1, 0]);
        let _a = fill(&mut backends, 0);
        let _b = fill(&mut backends, 1);
        for bounded in [None, Some(1.5)] {
            assert_eq!(ring(&backends, bounded).pick(&backends, 7), None);
        }
        assert_eq!(ring(&[], None).pick(&[], 7), None);
    }
}
