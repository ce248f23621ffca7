//! A log line for every response sluice makes up itself (a 502/503/504 when no backend could
//! answer, a 4xx refusing what a client sent), so an operator sees them in the journal and not
//! only in metrics: with the request id, listener, pool, backend and reason.
//!
//! Rate-limited: a storm (every backend down under load, a scanner sending garbage) writes at
//! most `BURST` lines at once and `PER_SECOND` after that, then one line saying how many were
//! left out. The limiter is pure (`Bucket`); the clock is tokio's.

use std::sync::Mutex;
use tokio::time::Instant;

/// Lines written at once after a quiet period.
const BURST: f64 = 20.0;
/// Lines per second in a steady storm.
const PER_SECOND: f64 = 5.0;

/// A token bucket that also counts what it refused.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Option<Instant>,
    suppressed: u64,
}

impl Bucket {
    const fn new() -> Bucket {
        Bucket {
            tokens: BURST,
            refilled: None,
            suppressed: 0,
        }
    }

    /// `Some(n)`: write this line, after saying `n` were left out since the last one written.
    fn take(&mut self, now: Instant) -> Option<u64> {
        if let Some(last) = self.refilled {
            let earned = now.saturating_duration_since(last).as_secs_f64() * PER_SECOND;
            self.tokens = (self.tokens + earned).min(BURST);
        }
        self.refilled = Some(now);
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.suppressed))
    }
}

static BUCKET: Mutex<Bucket> = Mutex::new(Bucket::new());

/// What sluice answered by itself, and why.
pub struct Answered<'a> {
    pub status: u16,
    pub reason: &'a str,
    pub listener: &'a str,
    pub request_id: &'a str,
    pub pool: Option<&'a str>,
    pub backend: Option<String>,
}

/// Logs one answer sluice made up, at `warn`, within the rate limit.
pub fn note(answer: &Answered<'_>) {
    let allowed = BUCKET
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take(Instant::now());
    let Some(suppressed) = allowed else {
        return;
    };
    tracing::warn!(
        status = answer.status,
        listener = answer.listener,
        pool = answer.pool.unwrap_or("-"),
        backend = answer.backend.as_deref().unwrap_or("-"),
        request_id = answer.request_id,
        suppressed,
        "answered {} by sluice: {}",
        answer.status,
        answer.reason.trim_end(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_storm_writes_a_burst_then_a_steady_trickle_and_counts_the_rest() {
        let mut bucket = Bucket::new();
        let now = Instant::now();
        let written = (0..100).filter(|_| bucket.take(now).is_some()).count();
        assert_eq!(written, BURST as usize);
        assert_eq!(bucket.suppressed, 100 - BURST as u64);
        // One second later: PER_SECOND more, the first of them reporting what was left out.
        let later = now + Duration::from_secs(1);
        assert_eq!(bucket.take(later), Some(100 - BURST as u64));
        let more = (0..100).filter(|_| bucket.take(later).is_some()).count();
        assert_eq!(more, PER_SECOND as usize - 1);
        // A quiet minute fills the bucket again, but no further than the burst.
        let quiet = later + Duration::from_secs(60);
        let after_quiet = (0..100).filter(|_| bucket.take(quiet).is_some()).count();
        assert_eq!(after_quiet, BURST as usize);
    }
}
