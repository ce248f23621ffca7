//! State machine tests with a fake clock: `t(s)` is `s` seconds after a fixed origin.

use super::*;
use crate::config::health::{ActiveCheck, CheckKind, OutlierPolicy};
use std::sync::OnceLock;

fn t(seconds: f64) -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now) + Duration::from_secs_f64(seconds)
}

fn policy(active: bool, start_healthy: bool) -> HealthPolicy {
    HealthPolicy {
        active: active.then(|| ActiveCheck {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(2),
            unhealthy_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            start_healthy,
        }),
        outlier: OutlierPolicy {
            consecutive_failures: 3,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_percent: 0.5,
            http_5xx: true,
        },
        panic_threshold: 0.5,
        slow_start: Some(Duration::from_secs(10)),
    }
}

#[test]
fn rise_and_fall_need_consecutive_results() {
    let policy = policy(true, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    assert_eq!(health.state(), State::Up);
    assert!(
        health
            .record_check(t(1.0), false, "refused".into(), &policy)
            .is_none()
    );
    assert!(
        health
            .record_check(t(2.0), false, "refused".into(), &policy)
            .is_none()
    );
    // A success in between resets the failure streak.
    assert!(
        health
            .record_check(t(3.0), true, "ok".into(), &policy)
            .is_none()
    );
    health.record_check(t(4.0), false, "refused".into(), &policy);
    health.record_check(t(5.0), false, "refused".into(), &policy);
    let down = health
        .record_check(t(6.0), false, "HTTP 500".into(), &policy)
        .expect("fall reached");
    assert_eq!((down.from, down.to), (State::Up, State::Down));
    assert!(
        down.reason.contains("3 consecutive checks failed (fall=3)"),
        "{}",
        down.reason
    );
    assert!(down.reason.contains("HTTP 500"));
    assert_eq!(health.state_since(), t(6.0));

    assert!(
        health
            .record_check(t(7.0), true, "ok".into(), &policy)
            .is_none()
    );
    let up = health
        .record_check(t(8.0), true, "ok".into(), &policy)
        .expect("rise reached");
    assert_eq!(up.to, State::Up);
    assert!(up.reason.contains("rise=2"));
}

#[test]
fn initial_state_is_configurable() {
    let pessimistic = policy(true, false);
    let mut health = BackendHealth::new(t(0.0), &pessimistic);
    assert_eq!(health.state(), State::Down);
    assert!(health.reason().contains("until 2 checks pass"));
    health.record_check(t(1.0), true, "ok".into(), &pessimistic);
    assert_eq!(health.state(), State::Down);
    health.record_check(t(2.0), true, "ok".into(), &pessimistic);
    assert_eq!(health.state(), State::Up);
    assert_eq!(
        BackendHealth::new(t(0.0), &policy(false, false)).state(),
        State::Up
    );
}

#[test]
fn ejection_time_grows_with_repeated_ejections_and_is_capped() {
    let policy = policy(false, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    let mut now = 0.0;
    let mut durations = Vec::new();
    for _ in 0..4 {
        for _ in 0..2 {
            assert!(
                health
                    .record_outcome(t(now), false, "reset", true, &policy)
                    .is_none()
            );
        }
        let change = health
            .record_outcome(t(now), false, "reset", true, &policy)
            .expect("ejected");
        assert_eq!(change.to, State::Ejected);
        let until = health.ejected_until().unwrap();
        durations.push(until.duration_since(t(now)).as_secs());
        assert!(
            health
                .tick(until - Duration::from_millis(1), &policy)
                .is_none()
        );
        let back = health.tick(until, &policy).expect("returns");
        assert_eq!(back.to, State::Up);
        now = until.duration_since(t(0.0)).as_secs_f64() + 1.0;
    }
    assert_eq!(
        durations,
        [10, 20, 25, 25],
        "base x ejections, capped at max"
    );
}

#[test]
fn ejections_are_forgiven_after_good_behaviour() {
    let policy = policy(false, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    for _ in 0..3 {
        health.record_outcome(t(0.0), false, "x", true, &policy);
    }
    health.tick(t(10.0), &policy);
    // 100 s later (4 x max_ejection_time): the earlier ejection no longer counts.
    for _ in 0..3 {
        health.record_outcome(t(110.0), false, "x", true, &policy);
    }
    assert_eq!(health.ejected_until(), Some(t(120.0)));
}

#[test]
fn success_resets_passive_failures_and_pool_limit_is_respected() {
    let policy = policy(false, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    health.record_outcome(t(0.0), false, "x", true, &policy);
    health.record_outcome(t(0.0), false, "x", true, &policy);
    health.record_outcome(t(0.0), true, "", true, &policy);
    assert_eq!(health.passive_failures(), 0);
    for _ in 0..5 {
        assert!(
            health
                .record_outcome(t(1.0), false, "x", false, &policy)
                .is_none()
        );
    }
    assert_eq!(health.state(), State::Up, "pool at its ejection limit");
}

#[test]
fn with_active_checks_an_ejected_backend_returns_only_after_a_passing_check() {
    let policy = policy(true, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    for _ in 0..3 {
        health.record_outcome(t(0.0), false, "x", true, &policy);
    }
    assert!(health.tick(t(10.0), &policy).is_none(), "still out");
    assert_eq!(health.state(), State::Ejected);
    assert!(health.reason().contains("waiting for an active check"));
    let back = health
        .record_check(t(11.0), true, "ok".into(), &policy)
        .unwrap();
    assert_eq!(back.to, State::Up);
}

#[test]
fn drain_wins_over_everything_and_records_who() {
    let policy = policy(true, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    let change = health.drain(t(5.0), "admin 127.0.0.1").unwrap();
    assert_eq!(change.to, State::Drained);
    assert_eq!(
        health.drained_by().map(|(by, at)| (by.as_str(), *at)),
        Some(("admin 127.0.0.1", t(5.0)))
    );
    for i in 0..5 {
        health.record_check(t(6.0 + i as f64), false, "down".into(), &policy);
    }
    assert_eq!(health.state(), State::Drained);
    let change = health.enable(t(20.0), "admin").unwrap();
    assert_eq!(change.to, State::Down, "checks kept running while drained");
}

#[test]
fn slow_start_ramps_from_ten_percent_to_full() {
    let policy = policy(true, false);
    let mut health = BackendHealth::new(t(0.0), &policy);
    health.record_check(t(1.0), true, "ok".into(), &policy);
    health.record_check(t(2.0), true, "ok".into(), &policy);
    assert_eq!(
        health.available_since(),
        t(2.0),
        "up once rise=2 checks passed"
    );
    let factor = |s| slow_start_factor(t(s) - health.available_since(), policy.slow_start);
    assert_eq!(factor(2.0), 0.1);
    assert!((factor(7.0) - 0.5).abs() < 1e-9);
    assert_eq!(factor(12.0), 1.0);
    assert_eq!(slow_start_factor(Duration::from_secs(2), None), 1.0);
    assert_eq!(
        slow_start_factor(Duration::from_secs(2), Some(Duration::ZERO)),
        1.0
    );
}

#[test]
fn pool_rules_for_ejection_share_and_panic() {
    assert!(may_eject_another(0, 2, 0.1), "one ejection always allowed");
    assert!(!may_eject_another(1, 2, 0.5));
    assert!(may_eject_another(1, 10, 0.5));
    assert!(!may_eject_another(5, 10, 0.5));
    assert!(in_panic(1, 4, 0.5));
    assert!(!in_panic(2, 4, 0.5));
    assert!(!in_panic(0, 4, 0.0), "0 disables");
}

/// Ejects `health` at `at` with `consecutive_failures` (3) failures of real traffic.
fn eject(health: &mut BackendHealth, at: f64, policy: &HealthPolicy) -> Change {
    for _ in 0..2 {
        assert!(
            health
                .record_outcome(t(at), false, "connect refused", true, policy)
                .is_none()
        );
    }
    let change = health
        .record_outcome(t(at), false, "connect refused", true, policy)
        .expect("ejected");
    assert_eq!(change.to, State::Ejected);
    change
}

#[test]
fn rise_passing_checks_end_a_first_ejection_early_and_slow_start_ramps_it_in() {
    let policy = policy(true, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    // A pass before the ejection did not see the failures: it does not count towards rise.
    health.record_check(t(0.5), true, "HTTP 200".into(), &policy);
    let out = eject(&mut health, 1.0, &policy);
    assert!(
        out.reason
            .contains("back sooner after 2 passing active checks"),
        "{}",
        out.reason
    );
    assert!(
        health
            .record_check(t(1.5), true, "HTTP 200".into(), &policy)
            .is_none(),
        "1 of rise=2"
    );
    let back = health
        .record_check(t(2.0), true, "HTTP 200".into(), &policy)
        .expect("2 of rise=2 ends the ejection");
    assert_eq!((back.from, back.to), (State::Ejected, State::Up));
    assert_eq!(back.ejection_ended, Some(EjectionEnd::ActiveCheck));
    assert!(
        back.reason
            .starts_with("active check passed 2/2 after ejection, 9.0s before"),
        "{}",
        back.reason
    );
    assert_eq!(health.reason(), back.reason, "what /status shows");
    assert_eq!(health.ejected_until(), None);
    // Slow start counts from the return, not from the start of the backend.
    assert_eq!(health.available_since(), t(2.0));
}

#[test]
fn a_killed_backend_returns_once_its_checks_pass_again_after_failing() {
    // SIGKILL: traffic ejects it, checks fail until it is marked down as well; the restart
    // makes the checks pass, and rise passes end both at once.
    let policy = policy(true, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    eject(&mut health, 3.0, &policy);
    for i in 0..4 {
        let at = 3.5 + 0.5 * f64::from(i);
        health.record_check(t(at), false, "connect failed: refused".into(), &policy);
    }
    assert_eq!(health.state(), State::Ejected, "ejection shown over down");
    assert!(
        health
            .record_check(t(6.1), true, "HTTP 200".into(), &policy)
            .is_none()
    );
    let back = health
        .record_check(t(6.6), true, "HTTP 200".into(), &policy)
        .expect("back");
    assert_eq!((back.from, back.to), (State::Ejected, State::Up));
    assert_eq!(back.ejection_ended, Some(EjectionEnd::ActiveCheck));
    assert!(back.reason.contains("after ejection"), "{}", back.reason);
}

#[test]
fn a_repeat_ejection_whose_checks_never_failed_lasts_until_one_fails() {
    // A backend that passes its checks but fails real traffic must not flap every
    // rise x interval: the second recent ejection is not ended by checks that saw nothing.
    let policy = policy(true, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    eject(&mut health, 1.0, &policy);
    health.record_check(t(1.5), true, "HTTP 200".into(), &policy);
    health.record_check(t(2.0), true, "HTTP 200".into(), &policy);
    assert_eq!(health.state(), State::Up, "the first one ends early");
    let again = eject(&mut health, 3.0, &policy);
    assert!(
        again.reason.contains("ejection #2")
            && again
                .reason
                .contains("end it early only after one has failed"),
        "{}",
        again.reason
    );
    for i in 0..6 {
        health.record_check(t(3.5 + f64::from(i)), true, "HTTP 200".into(), &policy);
    }
    assert_eq!(
        health.state(),
        State::Ejected,
        "passing checks saw no outage"
    );
    // Now the checks see it fail: their passes afterwards mean it is over.
    health.record_check(t(10.0), false, "timed out after 1s".into(), &policy);
    health.record_check(t(11.0), true, "HTTP 200".into(), &policy);
    let back = health
        .record_check(t(12.0), true, "HTTP 200".into(), &policy)
        .expect("back after a failure then rise passes");
    assert_eq!(back.ejection_ended, Some(EjectionEnd::ActiveCheck));

    // A check that was failing when the repeat ejection began saw the outage too (a hung
    // backend: its timed-out check moved the requests whose failures ejected it).
    health.record_check(t(13.0), false, "timed out after 1s".into(), &policy);
    let third = eject(&mut health, 13.1, &policy);
    assert!(third.reason.contains("ejection #3"), "{}", third.reason);
    health.record_check(t(14.0), true, "HTTP 200".into(), &policy);
    let back = health
        .record_check(t(15.0), true, "HTTP 200".into(), &policy)
        .expect("the failing check vouches for the passes after it");
    assert_eq!(back.ejection_ended, Some(EjectionEnd::ActiveCheck));
}

#[test]
fn without_active_checks_the_ejection_time_ends_it_and_says_so() {
    let policy = policy(false, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    let out = eject(&mut health, 0.0, &policy);
    assert!(!out.reason.contains("active"), "{}", out.reason);
    let back = health.tick(t(10.0), &policy).expect("time over");
    assert_eq!(back.ejection_ended, Some(EjectionEnd::Time));
    // With checks, the time running out waits for a pass, which then ends it by time.
    let policy = self::policy(true, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    eject(&mut health, 0.0, &policy);
    health.record_check(t(5.0), true, "HTTP 200".into(), &policy);
    health.record_check(t(9.0), false, "HTTP 500".into(), &policy);
    assert!(health.tick(t(10.0), &policy).is_none(), "awaits a check");
    let back = health
        .record_check(t(10.5), true, "HTTP 200".into(), &policy)
        .expect("back");
    assert_eq!(back.ejection_ended, Some(EjectionEnd::Time));
}

#[test]
fn failures_while_out_do_not_count_once_the_backend_is_back() {
    let policy = policy(true, true);
    let mut health = BackendHealth::new(t(0.0), &policy);
    eject(&mut health, 1.0, &policy);
    // Requests that were in flight, or moved off it, fail after the ejection.
    for _ in 0..20 {
        assert!(
            health
                .record_outcome(t(1.1), false, "reset", true, &policy)
                .is_none()
        );
    }
    health.record_check(t(1.5), true, "HTTP 200".into(), &policy);
    health.record_check(t(2.0), true, "HTTP 200".into(), &policy);
    assert_eq!(health.state(), State::Up);
    assert_eq!(health.passive_failures(), 0);
    assert!(
        health
            .record_outcome(t(2.1), false, "reset", true, &policy)
            .is_none(),
        "one failure after the return is one, not twenty-one"
    );
}
