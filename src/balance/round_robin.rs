//! Smooth weighted round robin (nginx's interleaving): weights 5,1,1 give `a a b a c a a`, not
//! `a a a a a b c`; equal weights degenerate to plain round robin.
//!
//! The pick path is one atomic increment: the interleaved sequence of one whole cycle is
//! computed once, when the snapshot is built (weights are static within a snapshot), and an
//! atomic cursor walks it. Weights are divided by their GCD first, so `100,100,100` is a
//! 3-entry cycle. Only when the reduced weight sum exceeds `MAX_CYCLE` (a 64 KiB table) does
//! it fall back to nginx's classic per-pick algorithm under a mutex, O(n) per pick; a pick
//! that finds the mutex taken draws weighted-random instead of waiting.

use super::weighted_available;
use crate::backend::Backend;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};

/// Largest precomputed cycle: 16,384 `u32` entries (64 KiB) per pool, built in O(cycle x n)
/// at reload. Any weights up to 100 over 160 backends, or any GCD-reduced sum below it, fit.
const MAX_CYCLE: usize = 16_384;

#[derive(Debug)]
pub struct RoundRobin {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// One cycle of picks, precomputed; the cursor is shared by all worker threads.
    Cycle {
        sequence: Box<[u32]>,
        cursor: AtomicUsize,
    },
    /// nginx's `current_weight` per backend, for weight sums too large to tabulate.
    Classic { current: Mutex<Vec<i64>> },
}

impl RoundRobin {
    pub fn new(backends: &[Backend]) -> RoundRobin {
        let divisor = backends
            .iter()
            .map(|b| u64::from(b.weight))
            .fold(0, gcd)
            .max(1);
        let reduced: Vec<u64> = backends
            .iter()
            .map(|b| u64::from(b.weight) / divisor)
            .collect();
        let total: u64 = reduced.iter().sum();
        let inner = if total as usize <= MAX_CYCLE {
            Inner::Cycle {
                sequence: cycle(&reduced, total),
                cursor: AtomicUsize::new(0),
            }
        } else {
            Inner::Classic {
                current: Mutex::new(vec![0; backends.len()]),
            }
        };
        RoundRobin { inner }
    }

    pub fn pick(&self, backends: &[Backend], rng: &mut fastrand::Rng) -> Option<usize> {
        match &self.inner {
            Inner::Cycle { sequence, cursor } => {
                if sequence.is_empty() {
                    return None;
                }
                let start = cursor.fetch_add(1, Ordering::Relaxed);
                // An unavailable backend's slot goes to the next entries of the cycle (read,
                // not claimed, so the shared cursor still advances by one). After n misses in a
                // row (a heavy backend is down), switch to weighted random over the rest rather
                // than scanning a long cycle.
                let tries = backends.len().min(sequence.len());
                (0..tries)
                    .map(|offset| sequence[(start.wrapping_add(offset)) % sequence.len()] as usize)
                    .find(|&index| backends.get(index).is_some_and(Backend::is_available))
                    .or_else(|| weighted_available(backends, rng))
            }
            Inner::Classic { current } => {
                // Never queue behind another thread's O(n) step: when the lock is taken, this
                // pick is a weighted random draw instead. Shares stay right in expectation;
                // the exact interleaving holds for the picks that got the lock.
                let mut current = match current.try_lock() {
                    Ok(current) => current,
                    Err(TryLockError::Poisoned(poison)) => poison.into_inner(),
                    Err(TryLockError::WouldBlock) => return weighted_available(backends, rng),
                };
                if current.len() != backends.len() {
                    return None;
                }
                let weights = backends
                    .iter()
                    .map(|b| b.is_available().then_some(u64::from(b.weight)));
                smooth_step(&mut current, weights)
            }
        }
    }
}

/// One step of nginx's smooth WRR over `weights`, where `None` marks a backend that sits this
/// step out: every eligible backend gains its weight, the largest current wins and pays back
/// the total.
fn smooth_step(current: &mut [i64], weights: impl Iterator<Item = Option<u64>>) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    let mut best_current = i64::MIN;
    for (index, (current, weight)) in current.iter_mut().zip(weights).enumerate() {
        let Some(weight) = weight.filter(|&w| w > 0) else {
            continue;
        };
        *current += weight as i64;
        total += weight as i64;
        // Strictly greater: ties go to the earlier backend, as in nginx.
        if *current > best_current {
            best = Some(index);
            best_current = *current;
        }
    }
    let best = best?;
    current[best] -= total;
    Some(best)
}

/// One whole cycle of smooth WRR over `weights` (summing to `total`): the same sequence as
/// `total` calls of `smooth_step`, in O(total x (distinct weights + log n)) rather than
/// O(total x n). That step scanned every backend per entry: 100 million steps for 10,000
/// discovered backends of weight 1, so each change of a big pool cost a second of CPU.
///
/// After t steps a backend's current weight is `t * weight - total * (times picked)`. Among
/// backends of one weight the best is the one with the largest `- total * picked` (then the
/// lowest index, nginx's tie rule), so each distinct weight keeps a heap of its backends and a
/// step compares only the heads.
fn cycle(weights: &[u64], total: u64) -> Box<[u32]> {
    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BinaryHeap};
    type Heads = BinaryHeap<(i64, Reverse<u32>)>;
    let mut by_weight: BTreeMap<u64, Heads> = BTreeMap::new();
    for (index, &weight) in weights.iter().enumerate() {
        if weight > 0 {
            let heap = by_weight.entry(weight).or_default();
            heap.push((0, Reverse(index as u32)));
        }
    }
    let mut classes: Vec<(i64, Heads)> = (by_weight.into_iter())
        .map(|(weight, heap)| (weight as i64, heap))
        .collect();
    let total = total as i64;
    let mut sequence = Vec::with_capacity(total as usize);
    for step in 1..=total {
        let mut best: Option<(i64, u32, usize)> = None;
        for (class, (weight, heap)) in classes.iter().enumerate() {
            let Some(&(base, Reverse(index))) = heap.peek() else {
                continue;
            };
            let current = base + step * weight;
            if best.is_none_or(|(value, at, _)| current > value || (current == value && index < at))
            {
                best = Some((current, index, class));
            }
        }
        let Some((_, index, class)) = best else { break };
        let heap = &mut classes[class].1;
        if let Some((base, _)) = heap.pop() {
            heap.push((base - total, Reverse(index)));
        }
        sequence.push(index);
    }
    sequence.into_boxed_slice()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{fill, pool, rng};

    fn picks(rr: &RoundRobin, backends: &[Backend], n: usize) -> Vec<usize> {
        let mut rng = rng();
        (0..n)
            .map(|_| rr.pick(backends, &mut rng).unwrap())
            .collect()
    }

    #[test]
    fn interleaves_like_nginx() {
        let backends = pool(&[5, 1, 1]);
        let rr = RoundRobin::new(&backends);
        assert_eq!(picks(&rr, &backends, 14), [0, 0, 1, 0, 2, 0, 0].repeat(2));
    }

    #[test]
    fn the_cycle_is_what_smooth_steps_give() {
        let mut rng = fastrand::Rng::with_seed(27);
        for case in 0..300 {
            let n = rng.usize(1..40);
            let top = [1, 2, 5, 100][case % 4];
            let weights: Vec<u64> = (0..n).map(|_| rng.u64(0..=top)).collect();
            let total: u64 = weights.iter().sum();
            let mut current = vec![0i64; n];
            let stepped: Vec<u32> = (0..total)
                .filter_map(|_| smooth_step(&mut current, weights.iter().map(|&w| Some(w))))
                .map(|index| index as u32)
                .collect();
            assert_eq!(*cycle(&weights, total), *stepped, "{weights:?}");
        }
    }

    #[test]
    fn a_big_equal_pool_is_built_fast() {
        // 10,000 discovered backends: before, 10^8 steps of the scan.
        let backends = pool(&[1; 10_000]);
        let rr = RoundRobin::new(&backends);
        let Inner::Cycle { sequence, .. } = &rr.inner else {
            panic!("tabulated")
        };
        assert!(sequence.iter().copied().eq(0..10_000));
    }

    #[test]
    fn equal_weights_are_plain_round_robin_whatever_their_value() {
        for weight in [1, 7, 10_000] {
            let backends = pool(&[weight; 3]);
            let rr = RoundRobin::new(&backends);
            assert_eq!(picks(&rr, &backends, 6), [0, 1, 2, 0, 1, 2]);
        }
    }

    #[test]
    fn huge_weight_sums_use_the_classic_algorithm_with_the_same_result() {
        // Reduced sum 10_000 + 9_999 + 1 is over MAX_CYCLE.
        let backends = pool(&[10_000, 9_999, 1, 9_997]);
        let rr = RoundRobin::new(&backends);
        assert!(matches!(rr.inner, Inner::Classic { .. }));
        let got = picks(&rr, &backends, 29_997);
        let count = |i| got.iter().filter(|&&g| g == i).count();
        assert_eq!(
            [count(0), count(1), count(2), count(3)],
            [10_000, 9_999, 1, 9_997]
        );
    }

    #[test]
    fn skips_unavailable_and_weight_zero_and_says_none_when_all_are_out() {
        let mut backends = pool(&[1, 0, 1, 3]);
        let _full = fill(&mut backends, 3);
        let rr = RoundRobin::new(&backends);
        let got = picks(&rr, &backends, 20);
        assert!(got.iter().all(|&i| i == 0 || i == 2), "{got:?}");
        let drained = pool(&[0, 0]);
        assert_eq!(RoundRobin::new(&drained).pick(&drained, &mut rng()), None);
        assert_eq!(RoundRobin::new(&[]).pick(&[], &mut rng()), None);
        let mut one = pool(&[2]);
        let _guard = fill(&mut one, 0);
        assert_eq!(RoundRobin::new(&one).pick(&one, &mut rng()), None);
    }

    #[test]
    fn classic_mode_skips_unavailable_too() {
        let mut backends = pool(&[10_000, 9_999, 1]);
        let _full = fill(&mut backends, 0);
        let rr = RoundRobin::new(&backends);
        let got = picks(&rr, &backends, 10_000);
        assert_eq!(got.iter().filter(|&&i| i == 2).count(), 1);
        assert!(got.iter().all(|&i| i != 0));
    }
}
