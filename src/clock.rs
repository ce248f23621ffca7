//! The monotonic clock selection, latency recording, slow start and deadlines share:
//! microseconds since the process started, and the instant a reading stands for.
//!
//! A leaf: imports nothing of the crate. It was `proxy::clock_micros`, which made `state` and
//! the health probes import `proxy` while `proxy` imports them (an import cycle).

use std::sync::OnceLock;
use std::time::Instant;

/// Monotonic microseconds since the process started: the clock selection (p2c's latency
/// decay) and latency recording share.
pub fn clock_micros() -> u64 {
    clock_start().elapsed().as_micros() as u64
}

/// The instant `clock_micros` read `micros`: deadlines from a time already read, without
/// reading the clock again (each read showed in profiles of the keep-alive path).
pub fn clock_instant(micros: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(*clock_start() + std::time::Duration::from_micros(micros))
}

fn clock_start() -> &'static Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now)
}
