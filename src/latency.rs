//! A small bounded latency histogram for `/status`: per backend p50/p99 without keeping
//! samples. Log-linear buckets (four per power of two, as HdrHistogram does with two
//! significant bits), so any quantile is within about 12 % of the true value from 1 µs to
//! 71 minutes in 124 counters (under 1 KiB a backend).
//!
//! The data path does one relaxed `fetch_add` per observation (`record`); readers copy the
//! counters (`Counts`) and take the difference of two copies to get a window (`since`), so the
//! admin API can show the last minute, not the life of the process. Pure: no clock.
//!
//! A leaf: imports nothing of the crate.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two (two bits).
const SUB_BITS: u32 = 2;
const SUB: usize = 1 << SUB_BITS;
/// The largest power of two tracked: values from 2^32 µs (about 71 minutes) on share the
/// last bucket.
const MAX_EXP: u32 = 31;
/// Values below `SUB` µs each have a bucket of their own; then `SUB` per power of two.
pub const BUCKETS: usize = SUB + (MAX_EXP - SUB_BITS + 1) as usize * SUB;

/// The bucket of a value in microseconds.
pub fn bucket(micros: u64) -> usize {
    if micros < SUB as u64 {
        return micros as usize;
    }
    let exp = (63 - micros.leading_zeros()).min(MAX_EXP);
    let micros = micros.min((1u64 << (MAX_EXP + 1)) - 1);
    let sub = (micros >> (exp - SUB_BITS)) as usize & (SUB - 1);
    SUB + (exp - SUB_BITS) as usize * SUB + sub
}

/// The values a bucket holds, `[low, high)` in microseconds.
pub fn bounds(index: usize) -> (u64, u64) {
    if index < SUB {
        return (index as u64, index as u64 + 1);
    }
    let exp = (index - SUB) / SUB + SUB_BITS as usize;
    let sub = ((index - SUB) % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS as usize);
    let low = (SUB as u64 + sub) * width;
    (low, low + width)
}

/// The live counters: shared by the data path (writers) and the admin API (readers).
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Histogram {
    /// One observation: a relaxed add on one counter (no lock, no allocation).
    pub fn record(&self, micros: u64) {
        self.counts[bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters. Not atomic as a whole: an observation recorded meanwhile may
    /// be in it or not, which moves a quantile by at most one sample.
    pub fn counts(&self) -> Counts {
        Counts(std::array::from_fn(|i| {
            self.counts[i].load(Ordering::Relaxed)
        }))
    }
}

/// A copy of a histogram's counters since it was made (or a window: see `since`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(pub [u64; BUCKETS]);

impl Default for Counts {
    fn default() -> Self {
        Counts([0; BUCKETS])
    }
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The observations made between `earlier` and `self` (two copies of one histogram).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts(std::array::from_fn(|i| {
            self.0[i].saturating_sub(earlier.0[i])
        }))
    }

    /// Adds another histogram's counts (a pool's backends merged).
    pub fn add(&mut self, other: &Counts) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine += theirs;
        }
    }

    /// The `q` quantile (0..=1) in microseconds, interpolated linearly inside its bucket as
    /// Prometheus' `histogram_quantile` does; `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (index, &count) in self.0.iter().enumerate() {
            if count == 0 {
                continue;
            }
            if (below + count) as f64 >= rank {
                let (low, high) = bounds(index);
                let into = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
                return Some(low as f64 + into * (high - low) as f64);
            }
            below += count;
        }
        let (low, _) = bounds(BUCKETS - 1);
        Some(low as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_without_gaps() {
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, high) = bounds(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert!(high > low);
            assert_eq!(bucket(low), index);
            assert_eq!(bucket(high - 1), index);
            expected_low = high;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn a_bucket_is_at_most_a_quarter_of_its_lower_bound_wide() {
        for index in SUB..BUCKETS {
            let (low, high) = bounds(index);
            assert!((high - low) * 4 <= low, "bucket {index}: {low}..{high}");
        }
    }

    #[test]
    fn quantiles_are_within_the_bucket_error() {
        let histogram = Histogram::default();
        // 1..=1000 ms, one each: p50 is 500 ms, p99 990 ms.
        for ms in 1..=1000u64 {
            histogram.record(ms * 1000);
        }
        let counts = histogram.counts();
        let p50 = counts.quantile(0.5).unwrap();
        let p99 = counts.quantile(0.99).unwrap();
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.125, "{p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.125, "{p99}");
        assert_eq!(Counts::default().quantile(0.5), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_copies() {
        let histogram = Histogram::default();
        for _ in 0..100 {
            histogram.record(100_000);
        }
        let before = histogram.counts();
        for _ in 0..10 {
            histogram.record(1_000);
        }
        let window = histogram.counts().since(&before);
        assert_eq!(window.total(), 10);
        let p99 = window.quantile(0.99).unwrap();
        assert!(
            (900.0..1100.0).contains(&p99),
            "only the window's samples: {p99}"
        );
        let mut merged = window.clone();
        merged.add(&before);
        assert_eq!(merged, histogram.counts());
    }
}
