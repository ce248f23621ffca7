//! The per-backend health state machine: one place that merges active checks, passive
//! outlier ejection and admin drain, and remembers *why* the backend is in its state.
//!
//! Pure: time is passed in as `now`, nothing here reads a clock or touches a socket. The I/O
//! layer (probe tasks, the proxy reporting outcomes) calls it under a per-backend lock;
//! transitions are rare, so the lock is never hot. Pool-level rules (how many may be ejected,
//! when to panic) are the free functions at the bottom.
//!
//! Decision: with active checks, passing checks end a passive ejection early (Envoy's
//! `successful_active_health_check_uneject_host`), because a restarted backend must not sit
//! out 30 s while its checks pass (a rolling deploy of N backends lost N x 30 s of capacity).
//! `rise` passes in a row since the ejection are needed, as for coming up. But checks can only
//! vouch for a recovery they can see: a backend that passes `/health` while failing real
//! traffic would otherwise flap every `rise x interval` at the cost of `consecutive_failures`
//! failed requests each time. So the checks may end an ejection when it is the backend's first
//! recent one, or when a check failed during it or was failing when it began (the checks saw
//! the outage, so their passes mean it is over); a repeat offender whose checks never failed
//! serves its ejection time.

use crate::config::health::HealthPolicy;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Up,
    /// Active checks say it is down.
    Down,
    /// Passive outlier detection took it out (or it awaits a passing check afterwards).
    Ejected,
    /// An operator drained it.
    Drained,
}

/// A state change, returned so the caller can log it once and count it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub from: State,
    pub to: State,
    pub reason: String,
    /// Set when the change ended a passive ejection: what ended it.
    pub ejection_ended: Option<EjectionEnd>,
}

/// What ended a passive ejection (the `by` label of `sluice_backend_ejections_ended_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectionEnd {
    /// `rise` active checks passed in a row before the ejection time was over.
    ActiveCheck,
    /// The ejection time ran out (and, with active checks, one passed afterwards).
    Time,
}

impl EjectionEnd {
    pub fn label(self) -> &'static str {
        match self {
            EjectionEnd::ActiveCheck => "active_check",
            EjectionEnd::Time => "time",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CheckResult {
    pub at: Instant,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct BackendHealth {
    active_healthy: bool,
    check_successes: u32,
    check_failures: u32,
    last_check: Option<CheckResult>,
    passive_failures: u32,
    ejected_until: Option<Instant>,
    /// The ejection time ran out but active checks are configured: wait for one to pass.
    awaiting_check: bool,
    /// Whether `rise` passing checks may end the current ejection before its time (see the
    /// module header): its first recent ejection, or a check failed since it began.
    checks_may_end_ejection: bool,
    /// Recent ejections, for the growing ejection time; decays while the backend behaves.
    ejections: u32,
    last_ejection: Option<Instant>,
    drained_by: Option<(String, Instant)>,
    /// When it last became available (slow start ramps from here).
    available_since: Instant,
    state_since: Instant,
    reason: String,
}

impl BackendHealth {
    pub fn new(now: Instant, policy: &HealthPolicy) -> BackendHealth {
        let (active_healthy, reason) = match &policy.active {
            None => (true, "no active check configured; available".to_owned()),
            Some(check) if check.start_healthy => (
                true,
                "starting healthy until checks say otherwise".to_owned(),
            ),
            Some(check) => (
                false,
                format!("starting unhealthy until {} checks pass", check.rise),
            ),
        };
        BackendHealth {
            active_healthy,
            check_successes: 0,
            check_failures: 0,
            last_check: None,
            passive_failures: 0,
            ejected_until: None,
            awaiting_check: false,
            checks_may_end_ejection: false,
            ejections: 0,
            last_ejection: None,
            drained_by: None,
            available_since: now,
            state_since: now,
            reason,
        }
    }

    pub fn state(&self) -> State {
        if self.drained_by.is_some() {
            State::Drained
        } else if self.is_ejected() {
            State::Ejected
        } else if !self.active_healthy {
            State::Down
        } else {
            State::Up
        }
    }

    pub fn is_available(&self) -> bool {
        self.state() == State::Up
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn state_since(&self) -> Instant {
        self.state_since
    }

    pub fn last_check(&self) -> Option<&CheckResult> {
        self.last_check.as_ref()
    }

    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    pub fn check_streaks(&self) -> (u32, u32) {
        (self.check_successes, self.check_failures)
    }

    pub fn passive_failures(&self) -> u32 {
        self.passive_failures
    }

    pub fn drained_by(&self) -> Option<&(String, Instant)> {
        self.drained_by.as_ref()
    }

    /// Applies `mutate`, then reports a change of state (with the reason it set) if any.
    fn transition(
        &mut self,
        now: Instant,
        mutate: impl FnOnce(&mut BackendHealth) -> Option<String>,
    ) -> Option<Change> {
        let from = self.state();
        let reason = mutate(self);
        let to = self.state();
        if from == to {
            return None;
        }
        let reason = reason.unwrap_or_else(|| self.reason.clone());
        self.reason = reason.clone();
        self.state_since = now;
        if to == State::Up {
            self.available_since = now;
            self.passive_failures = 0;
        }
        Some(Change {
            from,
            to,
            reason,
            ejection_ended: None,
        })
    }

    fn is_ejected(&self) -> bool {
        self.ejected_until.is_some() || self.awaiting_check
    }

    /// One active check result.
    pub fn record_check(
        &mut self,
        now: Instant,
        ok: bool,
        detail: String,
        policy: &HealthPolicy,
    ) -> Option<Change> {
        let (rise, fall) = policy.active.as_ref().map_or((1, 1), |c| (c.rise, c.fall));
        self.last_check = Some(CheckResult {
            at: now,
            ok,
            detail: detail.clone(),
        });
        let passing_while_up = ok && self.state() == State::Up;
        let mut ended = None;
        let mut change = self.transition(now, |h| {
            if ok {
                h.check_successes = h.check_successes.saturating_add(1);
                h.check_failures = 0;
                let mut why = None;
                if h.awaiting_check {
                    h.awaiting_check = false;
                    ended = Some(EjectionEnd::Time);
                    why = Some("ejection over and an active check passed".to_owned());
                } else if let Some(until) = h.ejected_until
                    && h.checks_may_end_ejection
                    && h.check_successes >= rise
                {
                    h.ejected_until = None;
                    ended = Some(EjectionEnd::ActiveCheck);
                    let early = until.saturating_duration_since(now);
                    why = Some(format!(
                        "active check passed {rise}/{rise} after ejection, {:.1}s before the ejection time was over; last: {detail}",
                        early.as_secs_f64()
                    ));
                }
                if !h.active_healthy && h.check_successes >= rise {
                    h.active_healthy = true;
                    // Ending an ejection says more than coming up: keep that reason.
                    why = why.or_else(|| {
                        Some(format!(
                            "{} consecutive checks passed (rise={rise})",
                            h.check_successes
                        ))
                    });
                }
                why
            } else {
                h.check_failures = h.check_failures.saturating_add(1);
                h.check_successes = 0;
                if h.is_ejected() {
                    // The checks see the outage now, so their passes will mean it is over.
                    h.checks_may_end_ejection = true;
                }
                if h.active_healthy && h.check_failures >= fall {
                    h.active_healthy = false;
                    return Some(format!(
                        "{} consecutive checks failed (fall={fall}); last: {detail}",
                        h.check_failures
                    ));
                }
                None
            }
        });
        if passing_while_up && change.is_none() {
            // Keep "why up" current rather than the reason of an old transition.
            self.reason = format!("checks passing; last: {detail}");
        }
        if let Some(change) = &mut change
            && change.from == State::Ejected
        {
            change.ejection_ended = ended;
        }
        change
    }

    /// One outcome of real traffic. `may_eject` says whether the pool allows one more
    /// ejection (`may_eject_another`).
    pub fn record_outcome(
        &mut self,
        now: Instant,
        ok: bool,
        detail: &str,
        may_eject: bool,
        policy: &HealthPolicy,
    ) -> Option<Change> {
        if ok {
            self.passive_failures = 0;
            return None;
        }
        if self.state() != State::Up {
            // Failures of a backend already out belong to the episode that took it out (the
            // requests it had in flight, those moved off it): counted, they would eject it
            // again on its first failure once it is back.
            return None;
        }
        self.passive_failures = self.passive_failures.saturating_add(1);
        let outlier = &policy.outlier;
        let tripped = outlier.consecutive_failures > 0
            && self.passive_failures >= outlier.consecutive_failures;
        if !tripped || !may_eject {
            return None;
        }
        self.transition(now, |h| {
            // Forgive one past ejection for every max_ejection_time of good behaviour.
            if let Some(last) = h.last_ejection {
                let quiet = now.saturating_duration_since(last);
                let forgiven = quiet.as_secs_f64() / outlier.max_ejection_time.as_secs_f64().max(1e-3);
                h.ejections = h.ejections.saturating_sub(forgiven as u32);
            }
            h.ejections = h.ejections.saturating_add(1);
            let duration = outlier
                .base_ejection_time
                .saturating_mul(h.ejections)
                .min(outlier.max_ejection_time);
            h.ejected_until = Some(now + duration);
            h.last_ejection = Some(now);
            let failures = h.passive_failures;
            h.passive_failures = 0;
            // Passes count from the ejection on: those before it did not see the failures.
            h.check_successes = 0;
            // A failing last check saw the outage as much as one failing during it would.
            h.checks_may_end_ejection = h.ejections <= 1 || h.check_failures > 0;
            let early = match &policy.active {
                None => String::new(),
                Some(check) if h.checks_may_end_ejection => format!(
                    "; back sooner after {} passing active checks in a row",
                    check.rise
                ),
                Some(check) => format!(
                    "; ejected again soon after the last one, so passing active checks end it early only after one has failed ({} in a row)",
                    check.rise
                ),
            };
            Some(format!(
                "ejected for {:.0?}: {failures} consecutive failures (consecutive_failures={}), last: {detail}; ejection #{} recently{early}",
                duration, outlier.consecutive_failures, h.ejections
            ))
        })
    }

    /// Ends an ejection whose time ran out. With active checks configured, the backend comes
    /// back only once one passes (a backend that is still broken stays out).
    pub fn tick(&mut self, now: Instant, policy: &HealthPolicy) -> Option<Change> {
        let until = self.ejected_until?;
        if now < until {
            return None;
        }
        let mut change = self.transition(now, |h| {
            h.ejected_until = None;
            if policy.active.is_some() {
                h.awaiting_check = true;
                h.reason = "ejection time over; waiting for an active check to pass".to_owned();
                None
            } else {
                Some("ejection time over".to_owned())
            }
        });
        if let Some(change) = &mut change {
            change.ejection_ended = Some(EjectionEnd::Time);
        }
        change
    }

    pub fn drain(&mut self, now: Instant, by: &str) -> Option<Change> {
        self.transition(now, |h| {
            h.drained_by = Some((by.to_owned(), now));
            Some(format!("drained by {by}"))
        })
    }

    pub fn enable(&mut self, now: Instant, by: &str) -> Option<Change> {
        self.transition(now, |h| {
            h.drained_by = None;
            Some(format!("enabled by {by}"))
        })
    }

    /// When it last became available: slow start ramps from here (`slow_start_factor`).
    pub fn available_since(&self) -> Instant {
        self.available_since
    }
}

/// Share of its weight a backend gets `elapsed` after it became available: ramps linearly from
/// 10% to 100% over the slow-start `window` (10%, not 0, so it gets enough traffic to warm up
/// at all), 1.0 outside it. The one slow-start computation: the data path reaches it through
/// `HealthCell::slow_start_factor`, which reads `available_since` without the lock.
pub fn slow_start_factor(elapsed: Duration, window: Option<Duration>) -> f64 {
    match window {
        Some(window) if !window.is_zero() => {
            (elapsed.as_secs_f64() / window.as_secs_f64()).clamp(0.1, 1.0)
        }
        _ => 1.0,
    }
}

/// Whether passive detection may eject one more backend of a pool (`max_ejection_percent`).
/// One ejection is always allowed, as in Envoy, so a small pool can still shed a bad backend.
pub fn may_eject_another(ejected: usize, total: usize, max_share: f64) -> bool {
    ejected == 0 || ((ejected + 1) as f64) <= max_share * total as f64
}

/// Panic mode: too few backends are available, so balance over all of them instead.
pub fn in_panic(available: usize, total: usize, threshold: f64) -> bool {
    threshold > 0.0 && total > 0 && (available as f64) < threshold * total as f64
}

#[cfg(test)]
mod tests;
