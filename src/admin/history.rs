//! The last minutes of traffic, for `/status` and the charts of the status page: every
//! `TICK` the admin listener copies each listener's and backend's counters into rings here,
//! and `/status` reads rates (over the last tick), latency quantiles (over the last minute)
//! and each pool's chart points (requests/s, p99, errors/s; the last five minutes) from them.
//!
//! Sampling at a fixed tick rather than at each `/status` read keeps the numbers independent
//! of who polls and how often, and lets a page that was just opened draw minutes it did not
//! watch. Pure: the time of each tick is passed in.
//!
//! Memory is bounded: a ring per backend of `WINDOW_TICKS + 1` readings (the latency
//! histogram kept sparse: only its non-empty buckets), a ring per pool of `CHART_POINTS`
//! points, two readings per listener; entities gone from the config leave at the next tick.

use crate::latency::Counts;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How often counters are read.
pub const TICK: Duration = Duration::from_secs(5);
/// Latency quantiles cover this many ticks (one minute).
const WINDOW_TICKS: usize = 12;
/// Chart points kept per pool (five minutes).
const CHART_POINTS: usize = 60;

/// One backend's counters at a tick.
pub struct BackendReading {
    pub pool: String,
    pub address: String,
    pub responses: [u64; 5],
    pub failures: u64,
    pub latency: Counts,
}

/// Everything read at one tick.
#[derive(Default)]
pub struct Reading {
    /// Listener name and its responses by status class.
    pub listeners: Vec<(String, [u64; 5])>,
    pub backends: Vec<BackendReading>,
}

/// A point of a pool's chart: the rates over the tick that ended `at`.
#[derive(Debug, Clone, Serialize)]
pub struct ChartPoint {
    #[serde(skip)]
    pub at: Instant,
    /// Seconds before the `/status` answer (filled in when it is read).
    pub age_seconds: f64,
    pub requests_per_second: f64,
    /// `null` when no response arrived during the tick.
    pub latency_p99_ms: Option<f64>,
    /// 5xx responses and attempts without a response, per second.
    pub errors_per_second: f64,
}

/// Rates of one backend (`None` before two ticks were read).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BackendRates {
    pub requests_per_second: Option<f64>,
    pub errors_per_second: Option<f64>,
    /// Over the last minute; `null` without responses in it.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// Rates of one listener over the last tick.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ListenerRates {
    pub requests_per_second: Option<f64>,
    /// Responses per second by status class (`1xx`..`5xx`).
    pub responses_per_second: Option<[f64; 5]>,
}

struct Kept {
    at: Instant,
    responses: [u64; 5],
    failures: u64,
    latency: Vec<(u16, u64)>,
}

#[derive(Default)]
struct Inner {
    backends: HashMap<(String, String), VecDeque<Kept>>,
    listeners: HashMap<String, VecDeque<(Instant, [u64; 5])>>,
    pools: HashMap<String, VecDeque<ChartPoint>>,
}

#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

fn sparse(counts: &Counts) -> Vec<(u16, u64)> {
    (counts.0.iter().enumerate())
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| (i as u16, *n))
        .collect()
}

fn dense(sparse: &[(u16, u64)]) -> Counts {
    let mut counts = Counts::default();
    for &(i, n) in sparse {
        if let Some(slot) = counts.0.get_mut(usize::from(i)) {
            *slot = n;
        }
    }
    counts
}

fn per_second(delta: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        delta as f64 / seconds
    } else {
        0.0
    }
}

fn ms(micros: Option<f64>) -> Option<f64> {
    micros.map(|us| (us / 1000.0 * 1000.0).round() / 1000.0)
}

impl History {
    /// Folds one tick's reading in.
    pub fn record(&self, now: Instant, reading: Reading) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner {
            backends,
            listeners,
            pools,
        } = &mut *inner;
        // Pool chart point: the sum of its backends' deltas since their previous reading.
        struct Sum {
            requests: u64,
            errors: u64,
            latency: Counts,
            seconds: f64,
        }
        let mut sums: HashMap<String, Sum> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for backend in reading.backends {
            let key = (backend.pool.clone(), backend.address);
            let ring = backends.entry(key.clone()).or_default();
            let sum = sums.entry(backend.pool).or_insert_with(|| Sum {
                requests: 0,
                errors: 0,
                latency: Counts::default(),
                seconds: 0.0,
            });
            if let Some(last) = ring.back() {
                let delta = |i: usize| backend.responses[i].saturating_sub(last.responses[i]);
                let failures = backend.failures.saturating_sub(last.failures);
                sum.requests += (0..5).map(delta).sum::<u64>() + failures;
                sum.errors += delta(4) + failures;
                sum.latency
                    .add(&backend.latency.since(&dense(&last.latency)));
                sum.seconds = sum
                    .seconds
                    .max(now.saturating_duration_since(last.at).as_secs_f64());
            }
            ring.push_back(Kept {
                at: now,
                responses: backend.responses,
                failures: backend.failures,
                latency: sparse(&backend.latency),
            });
            while ring.len() > WINDOW_TICKS + 1 {
                ring.pop_front();
            }
            seen.insert(key);
        }
        backends.retain(|key, _| seen.contains(key));
        pools.retain(|pool, _| sums.contains_key(pool));
        for (pool, sum) in sums {
            let points = pools.entry(pool).or_default();
            if sum.seconds > 0.0 {
                points.push_back(ChartPoint {
                    at: now,
                    age_seconds: 0.0,
                    requests_per_second: per_second(sum.requests, sum.seconds),
                    latency_p99_ms: ms(sum.latency.quantile(0.99)),
                    errors_per_second: per_second(sum.errors, sum.seconds),
                });
            }
            while points.len() > CHART_POINTS {
                points.pop_front();
            }
        }
        let names: std::collections::HashSet<&String> =
            reading.listeners.iter().map(|(n, _)| n).collect();
        listeners.retain(|name, _| names.contains(name));
        for (name, responses) in reading.listeners {
            let ring = listeners.entry(name).or_default();
            ring.push_back((now, responses));
            while ring.len() > 2 {
                ring.pop_front();
            }
        }
    }

    pub fn backend(&self, pool: &str, address: &str) -> BackendRates {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ring) = inner.backends.get(&(pool.to_owned(), address.to_owned())) else {
            return BackendRates::default();
        };
        let (Some(first), Some(last)) = (ring.front(), ring.back()) else {
            return BackendRates::default();
        };
        let window = dense(&last.latency).since(&dense(&first.latency));
        let mut rates = BackendRates {
            latency_p50_ms: ms(window.quantile(0.5)),
            latency_p99_ms: ms(window.quantile(0.99)),
            ..BackendRates::default()
        };
        if let Some(before) = ring.len().checked_sub(2).and_then(|i| ring.get(i)) {
            let seconds = last.at.saturating_duration_since(before.at).as_secs_f64();
            let delta = |i: usize| last.responses[i].saturating_sub(before.responses[i]);
            let failures = last.failures.saturating_sub(before.failures);
            let requests = (0..5).map(delta).sum::<u64>() + failures;
            rates.requests_per_second = Some(per_second(requests, seconds));
            rates.errors_per_second = Some(per_second(delta(4) + failures, seconds));
        }
        rates
    }

    pub fn listener(&self, name: &str) -> ListenerRates {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.listeners.get(name).map(|r| (r.front(), r.back())) {
            Some((Some(before), Some(last))) if before.0 != last.0 => {
                let seconds = last.0.saturating_duration_since(before.0).as_secs_f64();
                let classes: [f64; 5] = std::array::from_fn(|i| {
                    per_second(last.1[i].saturating_sub(before.1[i]), seconds)
                });
                ListenerRates {
                    requests_per_second: Some(classes.iter().sum()),
                    responses_per_second: Some(classes),
                }
            }
            _ => ListenerRates::default(),
        }
    }

    /// The pool's chart, oldest point first, with ages counted from `now`.
    pub fn chart(&self, pool: &str, now: Instant) -> Vec<ChartPoint> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.pools.get(pool).into_iter().flatten())
            .map(|point| ChartPoint {
                age_seconds: now.saturating_duration_since(point.at).as_secs_f64(),
                ..point.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::Histogram;

    fn reading(responses: [u64; 5], failures: u64, latency: &Histogram) -> Reading {
        Reading {
            listeners: vec![("web".into(), responses)],
            backends: vec![BackendReading {
                pool: "app".into(),
                address: "10.0.0.1:80".into(),
                responses,
                failures,
                latency: latency.counts(),
            }],
        }
    }

    #[test]
    fn rates_and_quantiles_come_from_the_ticks() {
        let history = History::default();
        let latency = Histogram::default();
        let start = Instant::now();
        history.record(start, reading([0; 5], 0, &latency));
        assert_eq!(
            history.backend("app", "10.0.0.1:80").requests_per_second,
            None
        );
        assert!(history.chart("app", start).is_empty());
        for _ in 0..50 {
            latency.record(2_000);
        }
        // 50 responses (10 of them 5xx) and 5 failures in 5 s.
        history.record(start + TICK, reading([0, 40, 0, 0, 10], 5, &latency));
        let rates = history.backend("app", "10.0.0.1:80");
        assert_eq!(rates.requests_per_second, Some(11.0));
        assert_eq!(rates.errors_per_second, Some(3.0));
        let p99 = rates.latency_p99_ms.expect("a p99");
        assert!((1.75..2.5).contains(&p99), "{p99}");
        let chart = history.chart("app", start + TICK * 2);
        assert_eq!(chart.len(), 1);
        assert_eq!(chart[0].requests_per_second, 11.0);
        assert_eq!(chart[0].age_seconds, TICK.as_secs_f64());
        let listener = history.listener("web");
        assert_eq!(listener.requests_per_second, Some(10.0));
        assert_eq!(listener.responses_per_second.map(|c| c[4]), Some(2.0));
    }

    #[test]
    fn quantiles_forget_what_is_older_than_the_window() {
        let history = History::default();
        let latency = Histogram::default();
        let start = Instant::now();
        for _ in 0..1000 {
            latency.record(500_000);
        }
        history.record(start, reading([0, 1000, 0, 0, 0], 0, &latency));
        for tick in 1..=WINDOW_TICKS as u32 + 1 {
            latency.record(1_000);
            history.record(
                start + TICK * tick,
                reading([0, 1000 + u64::from(tick), 0, 0, 0], 0, &latency),
            );
        }
        let p99 = history
            .backend("app", "10.0.0.1:80")
            .latency_p99_ms
            .unwrap();
        assert!(p99 < 2.0, "the slow minute has passed: {p99}");
    }

    #[test]
    fn rings_are_bounded_and_gone_entities_leave() {
        let history = History::default();
        let latency = Histogram::default();
        let start = Instant::now();
        for tick in 0..200u32 {
            history.record(
                start + TICK * tick,
                reading([u64::from(tick); 5], 0, &latency),
            );
        }
        assert_eq!(history.chart("app", start).len(), CHART_POINTS);
        history.record(start + TICK * 201, Reading::default());
        assert!(history.chart("app", start).is_empty());
        assert_eq!(
            history.backend("app", "10.0.0.1:80"),
            BackendRates::default()
        );
        assert_eq!(history.listener("web"), ListenerRates::default());
    }
}
