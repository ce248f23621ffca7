//! Validated resilience settings of a pool: retries with a budget and backoff, request limits
//! with a bounded queue, and the circuit breaker. Defaults are the safe ones: retries on (2,
//! budgeted at 20%), no queue, no breaker.

use super::Validator;
use super::file::{RawBreaker, RawPool};
use crate::error::ConfigError;
use crate::resilience::breaker::BreakerPolicy;
use serde_saphyr::Spanned;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Resilience {
    pub retry: RetryPolicy,
    pub limits: Limits,
    pub breaker: Option<BreakerPolicy>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try; 0 disables retries.
    pub attempts: u32,
    /// Each try's deadline for response headers; timeouts are retried only when it is set
    /// (`timeouts.response` then bounds all tries together).
    pub per_try_timeout: Option<Duration>,
    /// Retries may add at most this share of recent requests...
    pub budget_ratio: f64,
    /// ...plus this many per second, so a quiet pool can still retry.
    pub budget_min_per_second: f64,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            budget_ratio: 0.2,
            budget_min_per_second: 3.0,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Limits {
    /// Default `max_connections` for the pool's backends that set none.
    pub max_requests_per_backend: Option<u32>,
    /// Requests that may wait for a backend slot when every backend is at its limit; beyond
    /// it, 503 with `Retry-After`. `None`: no waiting, 503 at once.
    pub max_pending: Option<u32>,
    pub queue_timeout: Duration,
}

impl Default for Resilience {
    fn default() -> Resilience {
        Resilience {
            retry: RetryPolicy::default(),
            limits: Limits {
                queue_timeout: Duration::from_secs(1),
                ..Limits::default()
            },
            breaker: None,
        }
    }
}

impl Validator<'_> {
    pub(super) fn resilience(&self, path: &str, raw: &RawPool) -> Result<Resilience, ConfigError> {
        let defaults = Resilience::default();
        let retry = match &raw.retry {
            None => defaults.retry,
            Some(retry) => {
                let path = format!("{path}.retry");
                let d = RetryPolicy::default();
                let attempts = match &retry.attempts {
                    Some(a) if a.value > 10 => {
                        return Err(self.error_at(
                            a.referenced,
                            format!("{path}.attempts"),
                            format!("at most 10 retries, got {}", a.value),
                        ));
                    }
                    a => a.as_ref().map_or(d.attempts, |a| a.value),
                };
                let per_try_timeout = match &retry.per_try_timeout {
                    None => None,
                    Some(text) => Some(self.duration(
                        Some(text),
                        &format!("{path}.per_try_timeout"),
                        Duration::ZERO,
                    )?),
                };
                let backoff = retry.backoff.as_ref();
                let backoff_base = self.duration(
                    backoff.and_then(|b| b.base.as_ref()),
                    &format!("{path}.backoff.base"),
                    d.backoff_base,
                )?;
                let backoff_max = self
                    .duration(
                        backoff.and_then(|b| b.max.as_ref()),
                        &format!("{path}.backoff.max"),
                        d.backoff_max,
                    )?
                    .max(backoff_base);
                RetryPolicy {
                    attempts,
                    per_try_timeout,
                    budget_ratio: self
                        .bounded(
                            retry.budget_percent.as_ref(),
                            0.0,
                            100.0,
                            &format!("{path}.budget_percent"),
                        )?
                        .map_or(d.budget_ratio, |p| p / 100.0),
                    budget_min_per_second: self
                        .bounded(
                            retry.budget_min_per_second.as_ref(),
                            0.0,
                            1e6,
                            &format!("{path}.budget_min_per_second"),
                        )?
                        .unwrap_or(d.budget_min_per_second),
                    backoff_base,
                    backoff_max,
                }
            }
        };
        let limits = match &raw.limits {
            None => defaults.limits,
            Some(limits) => Limits {
                max_requests_per_backend: limits.max_requests_per_backend.filter(|&n| n > 0),
                max_pending: limits.max_pending,
                queue_timeout: self.duration(
                    limits.queue_timeout.as_ref(),
                    &format!("{path}.limits.queue_timeout"),
                    defaults.limits.queue_timeout,
                )?,
            },
        };
        let breaker = match &raw.circuit_breaker {
            None => None,
            Some(breaker) => Some(self.breaker(&format!("{path}.circuit_breaker"), breaker)?),
        };
        Ok(Resilience {
            retry,
            limits,
            breaker,
        })
    }

    fn breaker(&self, path: &str, raw: &RawBreaker) -> Result<BreakerPolicy, ConfigError> {
        Ok(BreakerPolicy {
            window: self.duration(
                raw.window.as_ref(),
                &format!("{path}.window"),
                Duration::from_secs(10),
            )?,
            min_requests: raw.min_requests.unwrap_or(20).max(1),
            failure_ratio: self
                .bounded(
                    raw.failure_ratio.as_ref(),
                    0.0,
                    1.0,
                    &format!("{path}.failure_ratio"),
                )?
                .unwrap_or(0.5),
            open_for: self.duration(
                raw.open_for.as_ref(),
                &format!("{path}.open_for"),
                Duration::from_secs(5),
            )?,
            probes: raw.probes.unwrap_or(3).max(1),
        })
    }

    fn bounded(
        &self,
        value: Option<&Spanned<f64>>,
        low: f64,
        high: f64,
        path: &str,
    ) -> Result<Option<f64>, ConfigError> {
        match value {
            None => Ok(None),
            Some(v) if (low..=high).contains(&v.value) => Ok(Some(v.value)),
            Some(v) => Err(self.error_at(
                v.referenced,
                path.to_owned(),
                format!("must be between {low} and {high}, got {}", v.value),
            )),
        }
    }
}
