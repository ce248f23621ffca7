//! Power of two choices: draw two distinct backends at random, send to the less loaded one
//! (Mitzenmacher; HAProxy `random(2)`, nginx `random two`, Envoy `LEAST_REQUEST`).
//!
//! Load is in-flight relative to weight, or with `load: ewma` a peak-EWMA of response latency
//! times (in-flight + 1), as Finagle, linkerd and tower compute it. The EWMA's pure math is in
//! `crate::ewma`; `BackendState` stores the packed word and the proxy feeds it observed
//! latencies with the time passed in. Candidates are drawn uniformly; weights
//! act through the load comparison, and weight 0 is never picked.

use super::least_conn::least_loaded_from;
use super::lighter;
use crate::backend::Backend;
use crate::config::P2cLoad;

/// Pairs drawn before giving up on luck: with half the pool out, 4 pairs miss 0.4% of the time.
const ATTEMPTS: usize = 4;

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
}
