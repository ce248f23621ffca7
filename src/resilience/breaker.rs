//! The per-backend circuit breaker on error rate: closed -> open when, over a rolling window
//! with at least `min_requests`, the failure ratio exceeds `failure_ratio`; open for
//! `open_for`; then half-open, admitting `probes` requests; closed again when they all
//! succeed, open again on the first failure.
//!
//! Pure: time passed in. It complements passive ejection (consecutive failures catch a dead
//! backend fast; the breaker catches one that fails a share of requests).

use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

const BUCKETS: usize = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    pub window: Duration,
    pub min_requests: u32,
    pub failure_ratio: f64,
    pub open_for: Duration,
    pub probes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    state: BreakerState,
    opened_at: Option<Instant>,
    /// (bucket index since origin, successes, failures)
    buckets: [(u64, u32, u32); BUCKETS],
    origin: Instant,
    admitted: u32,
    probe_successes: u32,
    reason: String,
}

impl CircuitBreaker {
    pub fn new(now: Instant) -> CircuitBreaker {
        CircuitBreaker {
            state: BreakerState::Closed,
            opened_at: None,
            buckets: [(u64::MAX, 0, 0); BUCKETS],
            origin: now,
            admitted: 0,
            probe_successes: 0,
            reason: "closed: no failures recorded".to_owned(),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    fn bucket_index(&self, now: Instant, policy: &BreakerPolicy) -> u64 {
        let length = (policy.window / BUCKETS as u32).max(Duration::from_millis(1));
        (now.saturating_duration_since(self.origin).as_nanos() / length.as_nanos()) as u64
    }

    fn totals(&self, now: Instant, policy: &BreakerPolicy) -> (u32, u32) {
        let current = self.bucket_index(now, policy);
        self.buckets
            .iter()
            .filter(|(index, _, _)| {
                *index != u64::MAX && current.saturating_sub(*index) < BUCKETS as u64
            })
            .fold((0, 0), |(ok, failed), bucket| {
                (ok + bucket.1, failed + bucket.2)
            })
    }

    /// Whether a request may go to this backend now. Moves open -> half-open when the open
    /// time is over, and counts half-open admissions.
    pub fn allow(&mut self, now: Instant, policy: &BreakerPolicy) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => {
                let over = self
                    .opened_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= policy.open_for);
                if over {
                    self.state = BreakerState::HalfOpen;
                    self.admitted = 1;
                    self.probe_successes = 0;
                    self.reason = format!(
                        "half-open: open time over, admitting {} probe requests",
                        policy.probes
                    );
                }
                over
            }
            BreakerState::HalfOpen => {
                if self.admitted < policy.probes {
                    self.admitted += 1;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Whether `allow` would admit a request (without admitting it): for selection.
    pub fn would_allow(&self, now: Instant, policy: &BreakerPolicy) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => self
                .opened_at
                .is_some_and(|at| now.saturating_duration_since(at) >= policy.open_for),
            BreakerState::HalfOpen => self.admitted < policy.probes,
        }
    }

    /// Records the outcome of a request. Returns the new state when it changed.
    pub fn record(
        &mut self,
        now: Instant,
        ok: bool,
        policy: &BreakerPolicy,
    ) -> Option<BreakerState> {
        match self.state {
            BreakerState::HalfOpen => {
                if ok {
                    self.probe_successes += 1;
                    if self.probe_successes >= policy.probes {
                        self.state = BreakerState::Closed;
                        self.buckets = [(u64::MAX, 0, 0); BUCKETS];
                        self.reason = format!("closed: {} probe requests succeeded", policy.probes);
                        return Some(BreakerState::Closed);
                    }
                    None
                } else {
                    self.open(now, "a probe request failed while half-open".to_owned());
                    Some(BreakerState::Open)
                }
            }
            // Outcomes of requests admitted before it opened change nothing.
            BreakerState::Open => None,
            BreakerState::Closed => {
                let index = self.bucket_index(now, policy);
                let bucket = &mut self.buckets[(index % BUCKETS as u64) as usize];
                if bucket.0 != index {
                    *bucket = (index, 0, 0);
                }
                if ok {
                    bucket.1 += 1;
                    return None;
                }
                bucket.2 += 1;
                let (successes, failures) = self.totals(now, policy);
                let total = successes + failures;
                let ratio = f64::from(failures) / f64::from(total.max(1));
                if total >= policy.min_requests && ratio > policy.failure_ratio {
                    self.open(
                        now,
                        format!(
                            "open: {failures} of {total} requests failed in {:?} ({:.0}% > {:.0}%)",
                            policy.window,
                            ratio * 100.0,
                            policy.failure_ratio * 100.0
                        ),
                    );
                    return Some(BreakerState::Open);
                }
                None
            }
        }
    }

    fn open(&mut self, now: Instant, reason: String) {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.reason = reason;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            window: Duration::from_secs(10),
            min_requests: 10,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(5),
            probes: 2,
        }
    }

    #[test]
    fn opens_only_above_the_ratio_with_enough_requests() {
        let (policy, start) = (policy(), Instant::now());
        let mut breaker = CircuitBreaker::new(start);
        for _ in 0..5 {
            assert!(
                breaker.record(start, false, &policy).is_none(),
                "under min_requests"
            );
        }
        for _ in 0..5 {
            breaker.record(start, true, &policy);
        }
        // 5 of 10 failed: not above 50%.
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(
            breaker.record(start, false, &policy),
            Some(BreakerState::Open)
        );
        assert!(
            breaker.reason().contains("6 of 11 requests failed"),
            "{}",
            breaker.reason()
        );
        assert!(!breaker.allow(start + Duration::from_secs(1), &policy));
    }

    #[test]
    fn half_open_admits_probes_then_closes_or_reopens() {
        let (policy, start) = (policy(), Instant::now());
        let mut breaker = CircuitBreaker::new(start);
        for _ in 0..10 {
            breaker.record(start, false, &policy);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let later = start + Duration::from_secs(5);
        assert!(breaker.would_allow(later, &policy));
        assert!(breaker.allow(later, &policy));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.allow(later, &policy), "second probe");
        assert!(!breaker.allow(later, &policy), "only two probes");
        assert_eq!(breaker.record(later, true, &policy), None);
        assert_eq!(
            breaker.record(later, true, &policy),
            Some(BreakerState::Closed)
        );
        assert!(breaker.allow(later, &policy));

        for _ in 0..10 {
            breaker.record(later, false, &policy);
        }
        let again = later + Duration::from_secs(6);
        assert!(breaker.allow(again, &policy));
        assert_eq!(
            breaker.record(again, false, &policy),
            Some(BreakerState::Open)
        );
        assert!(
            !breaker.allow(again, &policy),
            "reopened for a full open_for"
        );
    }

    #[test]
    fn old_failures_age_out_of_the_window() {
        let (policy, start) = (policy(), Instant::now());
        let mut breaker = CircuitBreaker::new(start);
        for _ in 0..9 {
            breaker.record(start, false, &policy);
        }
        let later = start + Duration::from_secs(11);
        for _ in 0..9 {
            breaker.record(later, true, &policy);
        }
        assert!(
            breaker.record(later, false, &policy).is_none(),
            "1 of 10 in the window"
        );
    }
}
