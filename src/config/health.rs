//! Validated health settings of a pool: active checks, passive outlier ejection, panic
//! threshold and slow start. Pure data with documented defaults; the state machine that uses
//! them is `health::machine`.

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
