//! Peak-EWMA of backend latency as one packed `u64` (estimate and its time together), the
//! load p2c's `load: ewma` compares. Pure math with the time passed in: `BackendState` keeps
//! the word in an atomic, the proxy feeds it observed latencies, `balance::p2c` reads it.
//!
//! A leaf: imports nothing of the crate. It was in `balance::p2c`, which made `backend`
//! import `balance` while `balance` imports `backend` (an import cycle).

/// The EWMA's time constant: an observation's weight halves about every 7 s, and an idle
/// backend's estimate decays toward zero so it is probed again (Finagle's and linkerd's 10 s).
pub const DECAY_MICROS: f64 = 10_000_000.0;

/// The packed word of a backend nobody has measured yet (its `f32` half is a NaN, which
/// `observe` never produces).
pub const UNOBSERVED: u64 = u64::MAX;

/// The next packed estimate after observing `rtt_micros` at `now_micros`. Peak-sensitive: a
/// latency above the estimate replaces it at once; below, it is blended in by the time since
/// the last observation (`w = exp(-elapsed / decay)`), so the estimate is per second, not per
/// request, and a burst of fast responses cannot hide a slow one instantly.
pub fn observe(packed: u64, rtt_micros: u64, now_micros: u64) -> u64 {
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
pub fn estimate(packed: u64, now_micros: u64) -> Option<f64> {
    let (estimate, stamp) = unpack(packed)?;
    Some(estimate * decay(elapsed_ms(millis(now_micros), stamp)))
}

fn decay(elapsed_ms: u32) -> f64 {
    (-(f64::from(elapsed_ms) * 1000.0) / DECAY_MICROS).exp()
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

    #[test]
    fn math_peaks_blends_and_decays() {
        assert_eq!(estimate(UNOBSERVED, 0), None);
        let first = observe(UNOBSERVED, 1_000, 0);
        assert_eq!(estimate(first, 0), Some(1_000.0));
        let peak = observe(first, 9_000, 1_000);
        assert_eq!(estimate(peak, 1_000), Some(9_000.0));
        // A fast sample 10 s later moves the estimate most of the way: w = e^-1.
        let blended = observe(peak, 1_000, 10_001_000);
        let expected = 9_000.0 * (-1f64).exp() + 1_000.0 * (1.0 - (-1f64).exp());
        let got = estimate(blended, 10_001_000).unwrap();
        assert!((got - expected).abs() < 1.0, "{got} vs {expected}");
        // Idle for 30 s: decays toward zero, so the backend gets probed again.
        let idle = estimate(blended, 40_001_000).unwrap();
        assert!(idle < got * 0.06, "{idle}");
        // A clock read racing an update (now slightly behind the stamp) is no time passed.
        assert_eq!(estimate(peak, 0), Some(9_000.0));
    }
}
