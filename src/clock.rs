//! The one monotonic clock of the library: `tokio::time::Instant`, and the microsecond reading
//! of it that selection, latency recording, slow start and deadlines share.
//!
//! Decision: every monotonic reading in the library is a `tokio::time::Instant` (clippy.toml
//! bans `tokio::time::Instant`, as linkerd2-proxy does), so a `#[tokio::test(start_paused =
//! true)]` drives check intervals, ejections and their backoff, the breaker, slow start and
//! timeouts without real waiting, and no test needs a wall-clock bound. In a build without
//! tokio's `test-util` (every release build) `tokio::time::Instant::now()` is
//! `tokio::time::Instant::now()`, so this costs the hot path nothing; outside a runtime, or in a
//! runtime whose clock is not paused, it reads the real clock too. `SystemTime` is for
//! wall-clock timestamps only, each place with an `allow` and its reason: the access log's
//! lines, the `Date` header, and `unix_seconds` below (`/status`'s reload and discovery times).
//!
//! A leaf: imports nothing of the crate. It was `proxy::clock_micros`, which made `state` and
//! the health probes import `proxy` while `proxy` imports them (an import cycle).

use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// How long before the first reading the origin is set. A paused test clock starts at the
/// real time its runtime was built and only moves forward, so an origin an hour before the
/// first reading (real time) is before anything any runtime of the process can read: a
/// reading never saturates to 0, whichever runtime of a test binary read the clock first.
const ORIGIN_MARGIN: Duration = Duration::from_secs(3600);

/// Monotonic microseconds since a fixed origin of the process: the clock selection (p2c's
/// latency decay), latency recording and slow start share. One `Instant::now()` and a
/// subtraction: it is read on every request.
pub fn clock_micros() -> u64 {
    micros_at(Instant::now())
}

/// `clock_micros` of an instant already read.
pub fn micros_at(instant: Instant) -> u64 {
    instant.saturating_duration_since(origin()).as_micros() as u64
}

/// The instant `clock_micros` read `micros`: deadlines from a time already read, without
/// reading the clock again (each read showed in profiles of the keep-alive path).
pub fn clock_instant(micros: u64) -> Instant {
    origin() + Duration::from_micros(micros)
}

/// Wall-clock seconds since the Unix epoch, for timestamps that people and other programs read
/// (`/status`'s reload and discovery times): never for durations or deadlines.
#[allow(clippy::disallowed_types)] // a timestamp, not a measure of time passing
pub fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        // Real time, not a paused test clock that may have run ahead of other runtimes'.
        #[allow(clippy::disallowed_types)] // the one read of the real clock, see above
        let now = Instant::from_std(std::time::Instant::now());
        now.checked_sub(ORIGIN_MARGIN).unwrap_or(now)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_and_its_instant_agree() {
        let micros = clock_micros();
        assert_eq!(micros_at(clock_instant(micros)), micros);
    }

    /// Under a paused clock the microsecond clock moves with tokio's, not with real time.
    #[tokio::test(start_paused = true)]
    async fn follows_a_paused_clock() {
        let before = clock_micros();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(clock_micros() - before, 30_000_000);
        assert_eq!(micros_at(Instant::now()), clock_micros());
    }
}
