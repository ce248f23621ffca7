//! Validated resilience settings of a pool: retries with a budget and backoff, request limits
//! with a bounded queue, and the circuit breaker. Defaults are the safe ones: retries on (2,
//! budgeted at 20%), no queue, no breaker. A default never overrules a written value: the
//! backoff base yields to a written max, the queue wait to a written response timeout, and
//! the response timeout (`pool.rs`) to the tries a written `per_try_timeout` allows.

use super::Validator;
use super::file::{RawBreaker, RawPool, RawRetry};
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
    /// (`timeouts.response` then bounds all tries together; unset, it defaults to at least
    /// `time_for_all_tries`).
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

impl RetryPolicy {
    /// How long every try that `per_try_timeout` and `attempts` allow takes, with the
    /// longest backoff between them; `None` without a per-try timeout.
    pub fn time_for_all_tries(&self) -> Option<Duration> {
        let per_try = self.per_try_timeout?;
        let tries = per_try.saturating_mul(self.attempts.saturating_add(1));
        Some(tries.saturating_add(self.backoff_max.saturating_mul(self.attempts)))
    }
}

impl Validator<'_> {
    /// `retry:` of a pool (validated before `timeouts:`, whose response default follows it).
    pub(super) fn retry(
        &self,
        path: &str,
        raw: Option<&RawRetry>,
    ) -> Result<RetryPolicy, ConfigError> {
        let d = RetryPolicy::default();
        let Some(retry) = raw else {
            return Ok(d);
        };
        let path = format!("{path}.retry");
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
        let per_try_timeout = self.optional_duration(
            retry.per_try_timeout.as_ref(),
            &format!("{path}.per_try_timeout"),
        )?;
        // As with ejection times: a written `max` of 10ms caps the default base (25ms)
        // instead of being raised to it; a written base raises the default max.
        let backoff = retry.backoff.as_ref();
        let max_written = self.optional_duration(
            backoff.and_then(|b| b.max.as_ref()),
            &format!("{path}.backoff.max"),
        )?;
        let backoff_base = self.duration(
            backoff.and_then(|b| b.base.as_ref()),
            &format!("{path}.backoff.base"),
            max_written.map_or(d.backoff_base, |max| d.backoff_base.min(max)),
        )?;
        let backoff_max = max_written.unwrap_or(d.backoff_max).max(backoff_base);
        Ok(RetryPolicy {
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
        })
    }

    /// `limits:` and `circuit_breaker:` of a pool, with its validated retry policy and
    /// response timeout.
    pub(super) fn resilience(
        &self,
        path: &str,
        raw: &RawPool,
        retry: RetryPolicy,
        response: Duration,
    ) -> Result<Resilience, ConfigError> {
        let defaults = Resilience::default();
        // The queue wait counts against `timeouts.response`: a default wait longer than a
        // written response timeout would turn every queued request into a 504 after the wait.
        let queue_timeout = defaults.limits.queue_timeout.min(response);
        let limits = match &raw.limits {
            None => Limits {
                queue_timeout,
                ..defaults.limits
            },
            Some(limits) => Limits {
                max_requests_per_backend: limits.max_requests_per_backend.filter(|&n| n > 0),
                max_pending: limits.max_pending,
                queue_timeout: self.duration(
                    limits.queue_timeout.as_ref(),
                    &format!("{path}.limits.queue_timeout"),
                    queue_timeout,
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
