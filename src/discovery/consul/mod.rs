//! The `consul` discovery source: the instances of one Consul service, from the agent's
//! health endpoint (`GET /v1/health/service/NAME`), followed with blocking queries.
//!
//! The loop: a query with `index=0` answers at once with the current state and its
//! `X-Consul-Index`; every later query sends that index and `wait`, and Consul holds it until
//! the service's health changes or `wait` passes. Each answer is the complete set: backends
//! at their `Weights`, and the entries left out with why (maintenance, critical, warning under
//! `passing_only`), which `/status` shows (`wire.rs` decides).
//!
//! Never a tight loop, whatever the server does (Consul's docs list the ways it can answer
//! early): the index follows `wire::next_index` (reset to 0 when it goes backwards, never 0
//! after an answer); two queries are at least `MIN_GAP` apart (consul-template's rate); an
//! answer that came back early with an index that did not advance (no change, yet not a
//! `wait` timeout) is followed by `EARLY_GAP` before the next query. Errors keep the last
//! good set and back off from 100 ms doubling to 5 s, each delay jittered down by up to half
//! so that a fleet of sluice instances does not hit a recovering agent in step.

pub mod client;
pub mod wire;

use super::Publisher;
use crate::config::consul::read_token;
use crate::config::discovery::ConsulSource;
use client::Agent;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The least time between the starts of two queries.
pub const MIN_GAP: Duration = Duration::from_millis(100);
/// The least time between the starts of two queries when the last one came back early
/// without a change: a server that ignores `index` costs one query a second, not a spin.
pub const EARLY_GAP: Duration = Duration::from_secs(1);

pub async fn run(source: ConsulSource, publisher: Publisher, stop: CancellationToken) {
    let mut index = 0;
    let mut backoff = BACKOFF_MIN;
    let mut agent: Option<Agent> = None;
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = query(&source, &mut agent, index) => outcome,
            () = stop.cancelled() => return,
        };
        let pause = match outcome {
            Ok((answered, body)) => match wire::parse_health(&body, source.passing_only) {
                Ok((backends, excluded)) => {
                    publisher.publish_with_excluded(backends, excluded);
                    let next = wire::next_index(index, answered);
                    let gap = pacing(index, next, started.elapsed(), source.wait);
                    index = next;
                    backoff = BACKOFF_MIN;
                    (started + gap).saturating_duration_since(Instant::now())
                }
                Err(error) => failed(&publisher, &mut agent, &mut backoff, &error),
            },
            Err(error) => failed(&publisher, &mut agent, &mut backoff, &error),
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Reports a failure (the last good set stays) and returns the jittered backoff to wait.
fn failed(
    publisher: &Publisher,
    agent: &mut Option<Agent>,
    backoff: &mut Duration,
    error: &str,
) -> Duration {
    publisher.fail(error);
    // Reconnect with the token read again: the failure may have been a rotated one.
    *agent = None;
    let pause = jittered(*backoff, fastrand::f64());
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    pause
}

/// `backoff` shortened by up to half: `fraction` in [0, 1).
fn jittered(backoff: Duration, fraction: f64) -> Duration {
    backoff.mul_f64(1.0 - fraction.clamp(0.0, 1.0) / 2.0)
}

/// How long after the start of a query the next one may start: `EARLY_GAP` when it answered
/// early without the index advancing, else `MIN_GAP`.
fn pacing(previous: u64, next: u64, took: Duration, wait: Duration) -> Duration {
    let advanced = next > previous && previous != 0 || previous == 0 && next != 0;
    if advanced || took >= wait / 2 {
        MIN_GAP
    } else {
        EARLY_GAP
    }
}

/// One health query; `(X-Consul-Index, body)`.
async fn query(
    source: &ConsulSource,
    agent: &mut Option<Agent>,
    index: u64,
) -> Result<(Option<u64>, bytes::Bytes), String> {
    if agent.is_none() {
        let token = match &source.token_file {
            None => None,
            Some(path) => Some(read_token(path)?),
        };
        *agent = Some(Agent::for_source(source, token).map_err(|e| e.to_string())?);
    }
    let Some(agent) = agent.as_ref() else {
        return Err("no agent".into());
    };
    let (path, wait) = health_path(source, index);
    let answer = agent
        .get(&path, wait)
        .await
        .map_err(|e| format!("{} {path}: {e}", agent.address()))?;
    Ok((answer.index, answer.body))
}

/// The query path, and how long the agent may hold it.
fn health_path(source: &ConsulSource, index: u64) -> (String, Duration) {
    let mut path = format!("/v1/health/service/{}", source.service);
    let mut params = Vec::new();
    if let Some(tag) = &source.tag {
        params.push(format!("tag={tag}"));
    }
    if let Some(dc) = &source.datacenter {
        params.push(format!("dc={dc}"));
    }
    let wait = if index == 0 {
        Duration::ZERO
    } else {
        params.push(format!("index={index}"));
        params.push(format!("wait={}s", source.wait.as_secs()));
        source.wait
    };
    if !params.is_empty() {
        path.push('?');
        path.push_str(&params.join("&"));
    }
    (path, wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_early_answer_without_a_change_is_paced_by_a_second() {
        let wait = Duration::from_secs(60);
        let fast = Duration::from_millis(3);
        assert_eq!(pacing(0, 7, fast, wait), MIN_GAP, "the first answer");
        assert_eq!(pacing(7, 9, fast, wait), MIN_GAP, "a change");
        assert_eq!(
            pacing(7, 7, fast, wait),
            EARLY_GAP,
            "index ignored by the server"
        );
        assert_eq!(pacing(9, 0, fast, wait), EARLY_GAP, "went backwards: reset");
        assert_eq!(pacing(0, 1, fast, wait), MIN_GAP);
        assert_eq!(
            pacing(1, 1, fast, wait),
            EARLY_GAP,
            "index 0 sanitised to 1 again"
        );
        assert_eq!(
            pacing(7, 7, wait, wait),
            MIN_GAP,
            "the wait ran out: normal"
        );
    }

    #[test]
    fn backoff_jitter_only_shortens_by_up_to_half() {
        let base = Duration::from_secs(2);
        assert_eq!(jittered(base, 0.0), base);
        assert_eq!(jittered(base, 0.5), Duration::from_millis(1500));
        assert!(jittered(base, 0.999) > Duration::from_millis(1000));
    }

    #[test]
    fn the_query_carries_index_wait_tag_and_datacenter() {
        let config = crate::config::Config::parse(
            "listeners: {web: {bind: '127.0.0.1:0', pool: app}}\n\
             pools:\n  app:\n    discovery:\n      consul: {service: web, tag: v2, datacenter: eu1, wait: 30s}\n",
            "t.yaml",
        )
        .unwrap();
        let crate::config::discovery::DiscoverySource::Consul(source) =
            &config.pools["app"].discovery[0]
        else {
            panic!("not consul");
        };
        assert_eq!(source.address, "http://127.0.0.1:8500");
        assert!(source.passing_only);
        assert_eq!(
            health_path(source, 0),
            (
                "/v1/health/service/web?tag=v2&dc=eu1".to_owned(),
                Duration::ZERO
            )
        );
        assert_eq!(
            health_path(source, 42).0,
            "/v1/health/service/web?tag=v2&dc=eu1&index=42&wait=30s"
        );
    }
}
