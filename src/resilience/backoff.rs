//! Jittered exponential backoff between retries.
//!
//! "Equal jitter": half of the exponential step is fixed, half random, so retries from many
//! clients spread out (no thundering herd) yet never fire immediately.

use std::time::Duration;

/// The wait before retry number `attempt` (1 for the first retry). `unit` is a uniform random
/// number in [0, 1) from the caller's RNG.
pub fn backoff(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let step = base.saturating_mul(1u32 << exponent).min(max);
    let half = step / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(25);
    const MAX: Duration = Duration::from_millis(250);

    #[test]
    fn grows_exponentially_within_jitter_bounds_and_caps() {
        for (attempt, step_ms) in [(1, 25), (2, 50), (3, 100), (4, 200), (5, 250), (30, 250)] {
            let step = Duration::from_millis(step_ms);
            assert_eq!(
                backoff(attempt, BASE, MAX, 0.0),
                step / 2,
                "attempt {attempt}"
            );
            let high = backoff(attempt, BASE, MAX, 0.999_999);
            assert!(
                high <= step && high > step.mul_f64(0.99),
                "attempt {attempt}: {high:?}"
            );
        }
    }

    #[test]
    fn never_zero_and_tolerates_odd_inputs() {
        assert!(backoff(1, BASE, MAX, 0.0) > Duration::ZERO);
        assert_eq!(backoff(0, BASE, MAX, 0.0), backoff(1, BASE, MAX, 0.0));
        assert_eq!(backoff(3, BASE, MAX, 7.0), backoff(3, BASE, MAX, 1.0));
    }
}
