//! Validated health settings of a pool: active checks, passive outlier ejection, panic
//! threshold and slow start. Pure data with documented defaults; the state machine that uses
//! them is `health::machine`.
//!
//! A default never overrules a value the operator wrote: where two settings bound each
//! other (check timeout and interval, base and maximum ejection time), the default of the
//! unwritten one adapts to the written one.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    pub active: Option<ActiveCheck>,
    pub outlier: OutlierPolicy,
    /// Below this share of available backends the pool balances over all of them
    /// (Envoy's panic mode): overloading the few left would take them down too.
    /// 0 disables. Default 0.5.
    pub panic_threshold: f64,
    /// A backend that becomes available ramps from a small share of its weight to the full
    /// weight over this window. `None`: full weight at once.
    pub slow_start: Option<Duration>,
}

impl Default for HealthPolicy {
    fn default() -> HealthPolicy {
        HealthPolicy {
            active: None,
            outlier: OutlierPolicy::default(),
            panic_threshold: 0.5,
            slow_start: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActiveCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    /// Interval while the backend is down (often shorter, to notice recovery quickly).
    pub unhealthy_interval: Duration,
    /// Deadline of one check. It may be longer than the interval: the next check starts
    /// once this one has ended. Default: 1 s, or the interval when that is shorter.
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub rise: u32,
    /// Consecutive failures to become unhealthy.
    pub fall: u32,
    /// Whether a backend starts healthy (HAProxy's behaviour: traffic flows at once and the
    /// first `fall` failures take it out) or unhealthy until `rise` checks passed.
    pub start_healthy: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    Tcp,
    Http(HttpCheck),
    Grpc(GrpcCheck),
}

/// `grpc.health.v1.Health/Check`: passes when the answer says SERVING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCheck {
    /// The service asked about; "" asks about the server as a whole (the protocol's rule).
    pub service: String,
    /// `:authority` of the check; default the backend's address.
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    /// Inclusive status ranges; default 200-399.
    pub expect_status: Vec<(u16, u16)>,
    pub body_contains: Option<String>,
}

impl HttpCheck {
    pub fn status_ok(&self, status: u16) -> bool {
        self.expect_status
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutlierPolicy {
    /// 0 disables passive ejection. Default 5.
    pub consecutive_failures: u32,
    /// First ejection lasts this long; each recent ejection adds one more (Envoy).
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// Never eject more than this share of a pool passively. Default 0.5.
    pub max_ejection_percent: f64,
    /// Count HTTP 5xx answers as failures (connect errors, resets and timeouts always count).
    pub http_5xx: bool,
}

impl Default for OutlierPolicy {
    fn default() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 0.5,
            http_5xx: true,
        }
    }
}

// ---- validation of the YAML mirror into the types above ----

use super::Validator;
use super::file::{CheckType, InitialState, RawHealthCheck, RawOutlier, RawPool, RawStatus};
use crate::error::ConfigError;
use serde_saphyr::Spanned;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

impl Validator<'_> {
    pub(super) fn health(&self, path: &str, raw: &RawPool) -> Result<HealthPolicy, ConfigError> {
        let defaults = HealthPolicy::default();
        let active = match &raw.health_check {
            None => None,
            Some(check) => Some(self.active_check(&format!("{path}.health_check"), check)?),
        };
        let outlier = match &raw.outlier {
            None => defaults.outlier,
            Some(outlier) => self.outlier(&format!("{path}.outlier"), outlier)?,
        };
        let panic_threshold = match &raw.panic_threshold {
            None => defaults.panic_threshold,
            Some(value) => self.percent(value, &format!("{path}.panic_threshold"))?,
        };
        let slow_start =
            self.optional_duration(raw.slow_start.as_ref(), &format!("{path}.slow_start"))?;
        Ok(HealthPolicy {
            active,
            outlier,
            panic_threshold,
            slow_start,
        })
    }

    fn active_check(
        &self,
        path: &str,
        raw: &Spanned<RawHealthCheck>,
    ) -> Result<ActiveCheck, ConfigError> {
        let check = &raw.value;
        let interval = self.duration(
            check.interval.as_ref(),
            &format!("{path}.interval"),
            DEFAULT_INTERVAL,
        )?;
        // A check may last longer than the interval (HAProxy's `inter 300` with `timeout check
        // 500ms`, Envoy's interval and timeout): the probe loop starts the next check only once
        // the previous one has ended, so two never run at once on one backend. Unset, the
        // timeout is 1 s or the interval when that is shorter, so a short interval written
        // alone keeps its pace against a backend that hangs.
        let timeout = self.duration(
            check.timeout.as_ref(),
            &format!("{path}.timeout"),
            DEFAULT_CHECK_TIMEOUT.min(interval),
        )?;
        let unhealthy_interval = self.duration(
            check.unhealthy_interval.as_ref(),
            &format!("{path}.unhealthy_interval"),
            interval,
        )?;
        let count = |value: &Option<Spanned<u32>>, name: &str, default: u32| match value {
            None => Ok(default),
            Some(v) if (1..=100).contains(&v.value) => Ok(v.value),
            Some(v) => Err(self.error_at(
                v.referenced,
                format!("{path}.{name}"),
                format!("must be between 1 and 100, got {}", v.value),
            )),
        };
        let rise = count(&check.rise, "rise", 2)?;
        let fall = count(&check.fall, "fall", 3)?;
        let http_wanted = match check.kind {
            Some(kind) => kind == CheckType::Http,
            None => check.path.is_some(),
        };
        if check.kind != Some(CheckType::Grpc)
            && let Some(service) = &check.service
        {
            return Err(self.error_at(
                service.referenced,
                format!("{path}.service"),
                "only `type: grpc` checks have a service".into(),
            ));
        }
        let kind = if check.kind == Some(CheckType::Grpc) {
            let http_only = [
                (check.path.is_some(), "path"),
                (check.method.is_some(), "method"),
                (check.expect_status.is_some(), "expect_status"),
                (check.body_contains.is_some(), "body_contains"),
            ];
            if let Some((_, field)) = http_only.iter().find(|(given, _)| *given) {
                return Err(self.error_at(
                    raw.referenced,
                    format!("{path}.{field}"),
                    format!(
                        "a gRPC check asks grpc.health.v1.Health/Check and passes on SERVING: {field} applies to type: http"
                    ),
                ));
            }
            CheckKind::Grpc(GrpcCheck {
                service: check
                    .service
                    .as_ref()
                    .map_or_else(String::new, |s| s.value.trim().to_owned()),
                host: check.host.as_ref().map(|h| h.value.clone()),
            })
        } else if http_wanted {
            CheckKind::Http(self.http_check(path, check)?)
        } else {
            if let Some(text) = &check.path {
                return Err(self.error_at(
                    text.referenced,
                    format!("{path}.path"),
                    "only `type: http` checks have a path".into(),
                ));
            }
            CheckKind::Tcp
        };
        Ok(ActiveCheck {
            kind,
            interval,
            unhealthy_interval,
            timeout,
            rise,
            fall,
            start_healthy: check.initial != Some(InitialState::Unhealthy),
        })
    }

    fn http_check(&self, path: &str, check: &RawHealthCheck) -> Result<HttpCheck, ConfigError> {
        let request_path = check.path.as_ref().map_or("/", |p| p.value.as_str());
        if !request_path.starts_with('/') {
            let at = check.path.as_ref().map(|p| p.referenced);
            return Err(self.error_at(
                at.unwrap_or(serde_saphyr::Location::UNKNOWN),
                format!("{path}.path"),
                format!("must start with '/', got {request_path:?}"),
            ));
        }
        let method = check.method.as_ref().map_or("GET", |m| m.value.as_str());
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            let at = check.method.as_ref().map(|m| m.referenced);
            return Err(self.error_at(
                at.unwrap_or(serde_saphyr::Location::UNKNOWN),
                format!("{path}.method"),
                format!("invalid HTTP method {method:?}"),
            ));
        }
        let mut expect_status = Vec::new();
        for (index, entry) in check.expect_status.iter().flatten().enumerate() {
            let range = status_range(&entry.value).map_err(|message| {
                self.error_at(
                    entry.referenced,
                    format!("{path}.expect_status[{index}]"),
                    message,
                )
            })?;
            expect_status.push(range);
        }
        if expect_status.is_empty() {
            expect_status.push((200, 399));
        }
        Ok(HttpCheck {
            method: method.to_owned(),
            path: request_path.to_owned(),
            host: check.host.as_ref().map(|h| h.value.clone()),
            expect_status,
            body_contains: check.body_contains.clone(),
        })
    }

    fn outlier(&self, path: &str, raw: &RawOutlier) -> Result<OutlierPolicy, ConfigError> {
        let defaults = OutlierPolicy::default();
        // Each default yields to the other time when only that one is written: a written
        // `max_ejection_time` of 10s caps the default base (30s) instead of being raised to
        // it, and a written base of 10m raises the default cap (300s), as Envoy's does.
        let max_written = self.optional_duration(
            raw.max_ejection_time.as_ref(),
            &format!("{path}.max_ejection_time"),
        )?;
        let base_ejection_time = self.duration(
            raw.base_ejection_time.as_ref(),
            &format!("{path}.base_ejection_time"),
            max_written.map_or(defaults.base_ejection_time, |max| {
                defaults.base_ejection_time.min(max)
            }),
        )?;
        let max_ejection_time = max_written
            .unwrap_or(defaults.max_ejection_time)
            .max(base_ejection_time);
        let max_ejection_percent = match &raw.max_ejection_percent {
            None => defaults.max_ejection_percent,
            Some(value) => self.percent(value, &format!("{path}.max_ejection_percent"))?,
        };
        Ok(OutlierPolicy {
            consecutive_failures: raw
                .consecutive_failures
                .unwrap_or(defaults.consecutive_failures),
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent,
            http_5xx: raw.http_5xx.unwrap_or(defaults.http_5xx),
        })
    }

    /// A percentage 0..=100 in the file, a share 0..=1 in the domain type.
    fn percent(&self, value: &Spanned<f64>, path: &str) -> Result<f64, ConfigError> {
        if (0.0..=100.0).contains(&value.value) {
            Ok(value.value / 100.0)
        } else {
            Err(self.error_at(
                value.referenced,
                path.to_owned(),
                format!(
                    "must be a percentage between 0 and 100, got {}",
                    value.value
                ),
            ))
        }
    }
}

fn status_range(raw: &RawStatus) -> Result<(u16, u16), String> {
    let valid = |code: u16| (100..=599).contains(&code);
    let (low, high) = match raw {
        RawStatus::Code(code) => (*code, *code),
        RawStatus::Range(text) => {
            let parse = |part: &str| part.trim().parse::<u16>().ok();
            match text.split_once('-') {
                Some((low, high)) => match (parse(low), parse(high)) {
                    (Some(low), Some(high)) => (low, high),
                    _ => return Err(format!("invalid status range {text:?}; write e.g. 200-399")),
                },
                None => match parse(text) {
                    Some(code) => (code, code),
                    None => {
                        return Err(format!(
                            "invalid status {text:?}; write e.g. 200 or 200-399"
                        ));
                    }
                },
            }
        }
    };
    if valid(low) && valid(high) && low <= high {
        Ok((low, high))
    } else {
        Err(format!(
            "status range {low}-{high} must lie within 100-599, low first"
        ))
    }
}
