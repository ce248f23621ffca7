//! Power of two choices: draw two distinct backends at random, send to the less loaded one
//! (Mitzenmacher; HAProxy `random(2)`, nginx `random two`, Envoy `LEAST_REQUEST`).
//!
//! Load is in-flight relative to weight, or with `load: ewma` a peak-EWMA of response latency
//! times (in-flight + 1), as Finagle, linkerd and tower compute it. The EWMA's pure math lives
//! here (`ewma_observe`, `ewma_estimate`); `BackendState` stores the packed word and the proxy
//! feeds it observed latencies with the time passed in. Candidates are drawn uniformly; weights
//! act through the load comparison, and weight 0 is never picked.

use super::least_conn::least_loaded_from;
use super::lighter;
use crate::backend::Backend;
use crate::config::P2cLoad;

/// Pairs drawn before giving up on luck: with half the pool out, 4 pairs miss 0.4% of the time.
const ATTEMPTS: usize = 4;

/// The EWMA's time constant: an observation's weight halves about every 7 s, and an idle
/// backend's estimate decays toward zero so it is probed again (Finagle's and linkerd's 10 s).
pub const EWMA_DECAY_MICROS: f64 = 10_000_000.0;

/// The packed word of a backend nobody has measured yet (its `f32` half is a NaN, which
/// `ewma_observe` never produces).
pub const EWMA_UNOBSERVED: u64 = u64::MAX;

#[derive(Debug)]
pub struct P2c {
    load: P2cLoad,
}

impl P2c {
    pub fn new(load: P2cLoad) -> P2c {
        P2c { load }
    }

    pub fn pick(
        &self,
        backends: &[Backend],
        now_micros: u64,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        match backends.len() {
            0 => return None,
            1 => return backends[0].is_available().then_some(0),
            _ => {}
        }
        for _ in 0..ATTEMPTS {
            let (a, b) = candidates(backends.len(), rng);
            match (backends[a].is_available(), backends[b].is_available()) {
                (true, true) => {
                    let b_wins = self.lighter(&backends[b], &backends[a], now_micros);
                    return Some(if b_wins { b } else { a });
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
        }
        // Most of the pool is out: the least loaded of the rest, from a random start.
        least_loaded_from(backends, rng.usize(..backends.len()))
    }

    /// Whether `a` is strictly less loaded than `b`; ties keep the first candidate, which is
    /// itself random.
    fn lighter(&self, a: &Backend, b: &Backend, now_micros: u64) -> bool {
        match self.load {
            P2cLoad::InFlight => lighter(a, b),
            P2cLoad::Ewma => {
                let (a_rtt, b_rtt) = seeded_estimates(
                    a.state.latency_estimate(now_micros),
                    b.state.latency_estimate(now_micros),
                );
                let a_cost = a_rtt * (a.state.in_flight() as f64 + 1.0) * f64::from(b.weight);
                let b_cost = b_rtt * (b.state.in_flight() as f64 + 1.0) * f64::from(a.weight);
                a_cost < b_cost
            }
        }
    }
}

/// Two distinct indexes below `count` (>= 2), uniformly.
pub fn candidates(count: usize, rng: &mut fastrand::Rng) -> (usize, usize) {
    let a = rng.usize(..count);
    let b = rng.usize(..count - 1);
    (a, if b >= a { b + 1 } else { b })
}

/// A backend with no latency sample must not look free (a zero estimate would send it every
/// request until its first response returns; linkerd's note on `default_rtt`), nor hopeless (a
/// fixed pessimistic seed starves it on a fast LAN). So it borrows its rival's estimate and
/// the pair is decided by in-flight alone until it has its own. Neither measured: in-flight.
fn seeded_estimates(a: Option<f64>, b: Option<f64>) -> (f64, f64) {
    match (a, b) {
        (Some(a), Some(b)) => (a, b),
        (Some(known), None) | (None, Some(known)) => (known, known),
        (None, None) => (1.0, 1.0),
    }
}

/// The next packed estimate after observing `rtt_micros` at `now_micros`. Peak-sensitive: a
/// latency above the estimate replaces it at once; below, it is blended in by the time since
/// the last observation (`w = exp(-elapsed / decay)`), so the estimate is per second, not per
/// request, and a burst of fast responses cannot hide a slow one instantly.
pub fn ewma_observe(packed: u64, rtt_micros: u64, now_micros: u64) -> u64 {
    let now_ms = millis(now_micros);
    let rtt = rtt_micros as f64;
    let next = match unpack(packed) {
        None => rtt,
        Some((estimate, _)) if rtt > estimate => rtt,
        Some((estimate, stamp)) => {
            let weight = decay(elapsed_ms(now_ms, stamp));
            estimate * weight + rtt * (1.0 - weight)
        }
    };
    pack(next, now_ms)
}

/// The estimate at `now_micros`, decayed since its last observation; `None` if never observed.
pub fn ewma_estimate(packed: u64, now_micros: u64) -> Option<f64> {
    let (estimate, stamp) = unpack(packed)?;
    Some(estimate * decay(elapsed_ms(millis(now_micros), stamp)))
}

fn decay(elapsed_ms: u32) -> f64 {
    (-(f64::from(elapsed_ms) * 1000.0) / EWMA_DECAY_MICROS).exp()
}

/// Millisecond timestamps wrap after 49 days; differences are taken with wrapping arithmetic.
fn millis(micros: u64) -> u32 {
    (micros / 1000) as u32
}

/// A thread that read the clock just before another's update can arrive with a `now` slightly
/// behind the stamp; that is "no time passed", not 49 days.
fn elapsed_ms(now_ms: u32, stamp_ms: u32) -> u32 {
    let elapsed = now_ms.wrapping_sub(stamp_ms);
    if elapsed > u32::MAX / 2 { 0 } else { elapsed }
}

/// High half: the estimate in microseconds as `f32`; low half: its time in milliseconds. One
/// word, so a reader never pairs an estimate with another observation's time.
fn pack(estimate_micros: f64, stamp_ms: u32) -> u64 {
    let estimate = estimate_micros.clamp(0.0, f64::from(f32::MAX)) as f32;
    (u64::from(estimate.to_bits()) << 32) | u64::from(stamp_ms)
}

fn unpack(packed: u64) -> Option<(f64, u32)> {
    let estimate = f32::from_bits((packed >> 32) as u32);
    (!estimate.is_nan()).then_some((f64::from(estimate), packed as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{fill, load, pool, rng};

    #[test]
    fn never_picks_the_more_loaded_of_its_two() {
        let backends = pool(&[1; 5]);
        let _load = load(&backends, &[0, 4, 1, 3, 2]);
        let p2c = P2c::new(P2cLoad::InFlight);
        let mut rng = rng();
        for _ in 0..1000 {
            let mut replay = rng.clone();
            let (a, b) = candidates(backends.len(), &mut replay);
            let picked = p2c.pick(&backends, 0, &mut rng).unwrap();
            let other = if picked == a { b } else { a };
            assert!(picked == a || picked == b);
            assert!(backends[picked].state.in_flight() <= backends[other].state.in_flight());
        }
    }

    #[test]
    fn candidates_are_distinct_and_cover_the_pool() {
        let mut rng = rng();
        let mut seen = [0usize; 3];
        for _ in 0..300 {
            let (a, b) = candidates(3, &mut rng);
            assert_ne!(a, b);
            seen[a] += 1;
            seen[b] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    }

    #[test]
    fn skips_unavailable_and_says_none_when_nothing_is_left() {
        let mut backends = pool(&[1, 0, 1]);
        let _full = fill(&mut backends, 0);
        let p2c = P2c::new(P2cLoad::InFlight);
        let mut rng = rng();
        assert!((0..100).all(|_| p2c.pick(&backends, 0, &mut rng) == Some(2)));
        let _full = fill(&mut backends, 2);
        assert_eq!(p2c.pick(&backends, 0, &mut rng), None);
        assert_eq!(p2c.pick(&backends[..1], 0, &mut rng), None);
    }

    #[test]
    fn ewma_prefers_the_faster_backend_at_equal_in_flight() {
        let backends = pool(&[1, 1]);
        backends[0].state.record_latency(50_000, 0);
        backends[1].state.record_latency(5_000, 0);
        let p2c = P2c::new(P2cLoad::Ewma);
        let mut rng = rng();
        assert!((0..50).all(|_| p2c.pick(&backends, 1_000, &mut rng) == Some(1)));
        // Ten times slower but idle beats fast with 10 in flight: 50ms x 1 < 5ms x 11.
        let _load = load(&backends, &[0, 10]);
        assert!((0..50).all(|_| p2c.pick(&backends, 1_000, &mut rng) == Some(0)));
    }

    #[test]
    fn an_unmeasured_backend_competes_on_in_flight_not_as_free() {
        let backends = pool(&[1, 1]);
        backends[0].state.record_latency(5_000, 0);
        let _load = load(&backends, &[1, 3]);
        let p2c = P2c::new(P2cLoad::Ewma);
        let mut rng = rng();
        assert!((0..50).all(|_| p2c.pick(&backends, 0, &mut rng) == Some(0)));
    }

    #[test]
    fn ewma_math_peaks_blends_and_decays() {
        assert_eq!(ewma_estimate(EWMA_UNOBSERVED, 0), None);
        let first = ewma_observe(EWMA_UNOBSERVED, 1_000, 0);
        assert_eq!(ewma_estimate(first, 0), Some(1_000.0));
        let peak = ewma_observe(first, 9_000, 1_000);
        assert_eq!(ewma_estimate(peak, 1_000), Some(9_000.0));
        // A fast sample 10 s later moves the estimate most of the way: w = e^-1.
        let blended = ewma_observe(peak, 1_000, 10_001_000);
        let expected = 9_000.0 * (-1f64).exp() + 1_000.0 * (1.0 - (-1f64).exp());
        let got = ewma_estimate(blended, 10_001_000).unwrap();
        assert!((got - expected).abs() < 1.0, "{got} vs {expected}");
        // Idle for 30 s: decays toward zero, so the backend gets probed again.
        let idle = ewma_estimate(blended, 40_001_000).unwrap();
        assert!(idle < got * 0.06, "{idle}");
        // A clock read racing an update (now slightly behind the stamp) is no time passed.
        assert_eq!(ewma_estimate(peak, 0), Some(9_000.0));
    }
}
