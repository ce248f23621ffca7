//! Smooth weighted round robin (nginx's interleaving): weights 5,1,1 give `a a b a c a a`, not
//! `a a a a a b c`; equal weights degenerate to plain round robin.
//!
//! The pick path is one atomic increment: the interleaved sequence of one whole cycle is
//! computed once, when the snapshot is built (weights are static within a snapshot), and an
//! atomic cursor walks it. Weights are divided by their GCD first, so `100,100,100` is a
//! 3-entry cycle, and 10,000 discovered backends of weights 1-5 a 30,000-entry one.
//!
//! Only when the table would be too big (a reduced weight sum over `MAX_CYCLE`, 4 MiB) or too
//! slow to build (`MAX_BUILD_WORK`) is the same sequence generated lazily, one step per pick,
//! under a mutex: O(distinct weights + log n) per pick, never a scan of every backend (nginx's
//! own per-pick step is O(n), which at 10,000 backends was a third of the CPU under churn). A
//! pick that finds the mutex taken draws weighted-random instead of waiting.

use super::weighted_available;
use crate::backend::Backend;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};

/// Largest precomputed cycle: 2^20 `u32` entries (4 MiB) per pool. Any weights up to 100
/// over 10,000 backends, or any GCD-reduced sum below it, fit.
const MAX_CYCLE: u64 = 1 << 20;

/// Largest build, in class comparisons (cycle length x distinct weights): about 20 ms of one
/// core per rebuild. A pool over it (say 10,000 backends of weights 1-1000) keeps the lazy
/// schedule, whose pick costs the same comparisons per step without any table.
const MAX_BUILD_WORK: u64 = 1 << 24;

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
    /// The same sequence, generated one step per pick.
    Lazy { schedule: Mutex<Schedule> },
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
        let mut schedule = Schedule::new(&reduced);
        let work = schedule.total.saturating_mul(schedule.classes.len() as u64);
        let inner = if schedule.total <= MAX_CYCLE && work <= MAX_BUILD_WORK {
            Inner::Cycle {
                sequence: (0..schedule.total).map_while(|_| schedule.step()).collect(),
                cursor: AtomicUsize::new(0),
            }
        } else {
            Inner::Lazy {
                schedule: Mutex::new(schedule),
            }
        };
        RoundRobin { inner }
    }

    pub fn pick(&self, backends: &[Backend], rng: &mut fastrand::Rng) -> Option<usize> {
        let available = |index: &usize| backends.get(*index).is_some_and(Backend::is_available);
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
                    .find(available)
                    .or_else(|| weighted_available(backends, rng))
            }
            Inner::Lazy { schedule } => {
                // Never queue behind another thread's step: when the lock is taken, this pick
                // is a weighted random draw instead. Shares stay right in expectation; the
                // exact interleaving holds for the picks that got the lock.
                let mut schedule = match schedule.try_lock() {
                    Ok(schedule) => schedule,
                    Err(TryLockError::Poisoned(poison)) => poison.into_inner(),
                    Err(TryLockError::WouldBlock) => return weighted_available(backends, rng),
                };
                if schedule.backends != backends.len() {
                    return None;
                }
                // As for the table, an unavailable backend's turn goes to the next ones (here
                // claimed: there is no table to read ahead in), at most n of them.
                let tries = backends.len().min(schedule.total as usize);
                (0..tries)
                    .map_while(|_| schedule.step())
                    .map(|index| index as usize)
                    .find(available)
                    .or_else(|| weighted_available(backends, rng))
            }
        }
    }
}

/// The backends of one weight, best first: `(-total * times picked, index)`.
type Heads = BinaryHeap<(i128, Reverse<u32>)>;

/// nginx's smooth WRR, one step at a time, in O(distinct weights + log n) a step rather than
/// the O(n) of `smooth_step` (which scanned every backend per entry: 10^8 steps to tabulate
/// 10,000 discovered backends of weight 1, so each change of a big pool cost a second of CPU).
///
/// After t steps a backend's current weight is `t * weight - total * (times picked)`. Among
/// backends of one weight the best is the one with the largest `- total * picked` (then the
/// lowest index, nginx's tie rule), so each distinct weight keeps a heap of its backends and a
/// step compares only the heads. After `total` steps every backend was picked exactly its
/// weight times and every current weight is back at 0: the schedule restarts from its first
/// state, so the numbers stay bounded however long it runs.
#[derive(Debug)]
struct Schedule {
    /// `(weight, heap of (-total * picked, index))` per distinct non-zero weight.
    classes: Vec<(i128, Heads)>,
    /// Steps taken in the current cycle.
    step: u64,
    /// Sum of the weights: the cycle's length.
    total: u64,
    /// How many backends the weights were for (a pick with another pool answers none).
    backends: usize,
}

impl Schedule {
    fn new(weights: &[u64]) -> Schedule {
        let mut by_weight: BTreeMap<u64, Heads> = BTreeMap::new();
        for (index, &weight) in weights.iter().enumerate() {
            if weight > 0 {
                let heap = by_weight.entry(weight).or_default();
                heap.push((0, Reverse(index as u32)));
            }
        }
        Schedule {
            classes: (by_weight.into_iter())
                .map(|(weight, heap)| (i128::from(weight), heap))
                .collect(),
            step: 0,
            total: weights.iter().sum(),
            backends: weights.len(),
        }
    }

    /// The next backend of the sequence; `None` only when every weight is 0.
    fn step(&mut self) -> Option<u32> {
        if self.step == self.total {
            self.restart();
        }
        self.step += 1;
        let step = i128::from(self.step);
        let mut best: Option<(i128, u32, usize)> = None;
        for (class, (weight, heap)) in self.classes.iter().enumerate() {
            let Some(&(base, Reverse(index))) = heap.peek() else {
                continue;
            };
            let current = base + step * weight;
            if best.is_none_or(|(value, at, _)| current > value || (current == value && index < at))
            {
                best = Some((current, index, class));
            }
        }
        let (_, index, class) = best?;
        let heap = &mut self.classes[class].1;
        if let Some((base, _)) = heap.pop() {
            heap.push((base - i128::from(self.total), Reverse(index)));
        }
        Some(index)
    }

    /// Back to the state before the first step (what a whole cycle leads to anyway).
    fn restart(&mut self) {
        for (_, heap) in &mut self.classes {
            let indices = std::mem::take(heap).into_iter();
            *heap = indices.map(|(_, index)| (0, index)).collect();
        }
        self.step = 0;
    }
}

/// One step of nginx's smooth WRR over `weights` (the reference the schedule is tested against), where `None` marks a backend that sits this
/// step out: every eligible backend gains its weight, the largest current wins and pays back
/// the total.
#[cfg(test)]
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

    fn tabulated(rr: &RoundRobin) -> &[u32] {
        match &rr.inner {
            Inner::Cycle { sequence, .. } => sequence,
            Inner::Lazy { .. } => panic!("not tabulated"),
        }
    }

    #[test]
    fn the_schedule_is_what_smooth_steps_give_cycle_after_cycle() {
        let mut rng = fastrand::Rng::with_seed(27);
        for case in 0..300 {
            let n = rng.usize(1..40);
            let top = [1, 2, 5, 100][case % 4];
            let weights: Vec<u64> = (0..n).map(|_| rng.u64(0..=top)).collect();
            let total: u64 = weights.iter().sum();
            let mut current = vec![0i64; n];
            // Three cycles: the restart after each must continue the same sequence.
            let stepped: Vec<u32> = (0..3 * total)
                .filter_map(|_| smooth_step(&mut current, weights.iter().map(|&w| Some(w))))
                .map(|index| index as u32)
                .collect();
            let mut schedule = Schedule::new(&weights);
            let lazy: Vec<u32> = (0..3 * total).map_while(|_| schedule.step()).collect();
            assert_eq!(lazy, stepped, "{weights:?}");
        }
    }

    #[test]
    fn a_big_equal_pool_is_built_fast() {
        // 10,000 discovered backends: before, 10^8 steps of the scan.
        let backends = pool(&[1; 10_000]);
        let rr = RoundRobin::new(&backends);
        assert!(tabulated(&rr).iter().copied().eq(0..10_000));
    }

    #[test]
    fn a_big_pool_of_small_weights_is_tabulated_with_exact_shares() {
        // The churn case of issue #27: 10,000 backends of weights 1-5 (sum 30,000) once fell
        // back to a per-pick scan of every backend.
        let weights: Vec<u32> = (0..10_000).map(|i| 1 + i % 5).collect();
        let backends = pool(&weights);
        let rr = RoundRobin::new(&backends);
        let sequence = tabulated(&rr);
        assert_eq!(sequence.len(), 30_000);
        let mut counts = vec![0u32; backends.len()];
        for &index in sequence {
            counts[index as usize] += 1;
        }
        assert_eq!(counts, weights);
    }

    #[test]
    fn too_much_build_work_leaves_the_schedule_lazy() {
        // Sum under MAX_CYCLE, but sum x distinct weights over MAX_BUILD_WORK.
        let weights: Vec<u32> = (0..2_000).map(|i| 1 + i % 1_000).collect();
        let backends = pool(&weights);
        let rr = RoundRobin::new(&backends);
        assert!(matches!(rr.inner, Inner::Lazy { .. }));
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
    fn huge_weight_sums_use_the_lazy_schedule_with_the_same_result() {
        // Reduced sum 1_000_000 + 999_999 + 1 + 999_997 is over MAX_CYCLE.
        let weights: [u32; 4] = [1_000_000, 999_999, 1, 999_997];
        let backends = pool(&weights);
        let rr = RoundRobin::new(&backends);
        assert!(matches!(rr.inner, Inner::Lazy { .. }));
        let mut current = vec![0i64; 4];
        let smooth: Vec<usize> = (0..1_000)
            .filter_map(|_| smooth_step(&mut current, weights.iter().map(|&w| Some(w.into()))))
            .collect();
        assert_eq!(picks(&rr, &backends, 1_000), smooth);
        let rest = picks(&rr, &backends, 2_999_997 - 1_000);
        let got = [smooth, rest].concat();
        let count = |i| got.iter().filter(|&&g| g == i).count();
        assert_eq!(
            [count(0), count(1), count(2), count(3)],
            weights.map(|w| w as usize)
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
    fn lazy_mode_skips_unavailable_too() {
        let mut backends = pool(&[1_000_000, 999_999, 1]);
        let _full = fill(&mut backends, 0);
        let rr = RoundRobin::new(&backends);
        assert!(matches!(rr.inner, Inner::Lazy { .. }));
        // Backend 0's turns go to the next ones: one cycle is a million picks of 1 and 2.
        let got = picks(&rr, &backends, 1_000_000);
        assert_eq!(got.iter().filter(|&&i| i == 2).count(), 1);
        assert!(got.iter().all(|&i| i != 0));
    }
}
