//! Health end to end: active checks take a failing backend out and bring it back, passive
//! ejection sheds a crashed backend with a bounded number of errors, everything failing gives
//! fast answers, and operators can drain. Real backends, real sluice.

use crate::common::*;
use http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

fn pool_with(backends: &[&Backend], pool_options: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends: [{}]\n{pool_options}",
        list.join(", ")
    )
}

async fn backend_state(
    sluice: &sluice::Server,
    address: std::net::SocketAddr,
) -> serde_json::Value {
    let status = get(sluice.admin_addr().unwrap(), "/status").await;
    let status: serde_json::Value = serde_json::from_slice(status.body()).unwrap();
    status["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == address.to_string())
        .cloned()
        .unwrap()
}

fn state_of(sluice: &sluice::Server, address: std::net::SocketAddr) -> (bool, bool) {
    let snapshot = sluice.snapshot().load();
    let backend = snapshot.pools["app"]
        .backends
        .iter()
        .find(|b| b.address.inet() == Some(address))
        .unwrap();
    (
        backend.state.health.is_healthy(),
        backend.state.health.is_ejected(),
    )
}

const CHECKS: &str = "    health_check: {type: http, path: /health, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}\n";

/// Under a paused clock (sluice's probes run on the test's runtime): the time to mark the
/// backend down is the probes' own cadence, whatever the load of the machine.
#[tokio::test(start_paused = true)]
async fn failing_health_check_takes_a_backend_out_and_rise_brings_it_back() {
    let controls = Controls::default();
    let flaky = spawn_controlled_backend("flaky", Duration::ZERO, controls.clone()).await;
    let steady = spawn_backend("steady").await;
    let sluice = start_sluice(&pool_with(&[&flaky, &steady], CHECKS)).await;
    let addr = sluice.local_addr("web").unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || flaky.requests() > 0
            || state_of(&sluice, flaky.addr).0)
        .await
    );

    controls.failing_health.store(true, Ordering::SeqCst);
    let flipped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || !state_of(&sluice, flaky.addr).0).await,
        "marked down"
    );
    // At most fall (2) checks, an interval (100 ms, +10% jitter) apart, after the flip; one
    // interval more of slack. Paused clock: no slack for a loaded machine is needed.
    let took = flipped.elapsed();
    eprintln!("health check: marked down {took:?} after /health turned 500");
    assert!(took <= Duration::from_millis(330), "took {took:?}");
    let status = backend_state(&sluice, flaky.addr).await;
    assert_eq!(status["state"], "down");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("2 consecutive checks failed (fall=2)") && reason.contains("HTTP 500"),
        "{reason}"
    );

    let before = flaky.requests();
    for _ in 0..20 {
        assert_eq!(body_text(&get(addr, "/").await), "backend steady");
    }
    assert_eq!(flaky.requests(), before, "no traffic to a down backend");

    controls.failing_health.store(false, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(3), || state_of(&sluice, flaky.addr).0).await,
        "back after rise"
    );
    let answers: Vec<String> = futures_join(addr, 6).await;
    assert!(answers.iter().any(|a| a == "backend flaky"), "{answers:?}");
}

async fn futures_join(addr: std::net::SocketAddr, count: usize) -> Vec<String> {
    let mut answers = Vec::new();
    for _ in 0..count {
        answers.push(body_text(&get(addr, "/").await));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_backend_is_ejected_passively_with_a_bounded_number_of_errors() {
    let controls = Controls::default();
    let doomed = spawn_controlled_backend("doomed", Duration::ZERO, controls.clone()).await;
    let steady = spawn_backend("steady").await;
    let options = "    outlier: {consecutive_failures: 3, base_ejection_time: 30s}\n";
    let sluice = start_sluice(&pool_with(&[&doomed, &steady], options)).await;
    let addr = sluice.local_addr("web").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(load_client(addr, true, stop.clone(), tally.clone())))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || doomed.requests() > 50).await);

    controls.kill.cancel();
    assert!(
        wait_until(Duration::from_secs(5), || state_of(&sluice, doomed.addr).1).await,
        "ejected"
    );
    let errors_at_ejection = tally.failed.load(Ordering::Relaxed);
    let served_at_ejection = tally.ok.load(Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(5), || tally.ok.load(Ordering::Relaxed)
            > served_at_ejection + 300)
        .await
    );
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    // Bound: consecutive_failures (3) plus one request in flight per concurrent client (4).
    assert!(
        errors_at_ejection <= 7,
        "{errors_at_ejection} errors before ejection"
    );
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        errors_at_ejection,
        "zero errors after ejection"
    );
    let status = backend_state(&sluice, doomed.addr).await;
    assert_eq!(status["state"], "ejected");
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("3 consecutive failures"),
        "{status}"
    );
    eprintln!("crash under load: {errors_at_ejection} errors before ejection, then 0");
}

/// Paused clock: an answer that waited on a timer (a timeout, a backoff) shows its full
/// length, and one that is fast takes no time at all.
#[tokio::test(start_paused = true)]
async fn everything_failing_gives_fast_answers_not_hangs() {
    let dead_one = dead_addr().await;
    let dead_two = dead_addr().await;
    for (panic_threshold, expected) in [
        ("0", StatusCode::SERVICE_UNAVAILABLE),
        ("50", StatusCode::BAD_GATEWAY),
    ] {
        let yaml = format!(
            "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends: [{dead_one}, {dead_two}]\n    health_check: {{type: tcp, interval: 100ms, timeout: 100ms, fall: 1}}\n    panic_threshold: {panic_threshold}\n"
        );
        let sluice = start_sluice(&yaml).await;
        assert!(
            wait_until(Duration::from_secs(3), || !state_of(&sluice, dead_one).0
                && !state_of(&sluice, dead_two).0)
            .await
        );
        let started = Instant::now();
        let response = get(sluice.local_addr("web").unwrap(), "/").await;
        assert_status(&response, expected);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "answered in {:?}",
            started.elapsed()
        );
        let status: serde_json::Value =
            serde_json::from_slice(get(sluice.admin_addr().unwrap(), "/status").await.body())
                .unwrap();
        assert_eq!(
            status["pools"][0]["panic"],
            panic_threshold != "0",
            "panic mode shown"
        );
    }
}

#[tokio::test]
async fn drain_and_enable_through_the_admin_api_survive_a_reload() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let yaml = pool_with(&[&a, &b], "");
    let sluice = start_sluice(&yaml).await;
    let (addr, admin) = (
        sluice.local_addr("web").unwrap(),
        sluice.admin_addr().unwrap(),
    );
    let drained = admin_post(admin, &format!("/pools/app/backends/{}/drain", a.addr)).await;
    assert_status(&drained, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(drained.body()).unwrap();
    assert_eq!(body["state"], "drained");
    assert!(
        body["drained_by"]
            .as_str()
            .unwrap()
            .starts_with("admin API from 127.0.0.1")
    );

    sluice
        .reload(config(&yaml.replace(
            &b.addr.to_string(),
            &format!("{{address: {}, weight: 2}}", b.addr),
        )))
        .await
        .unwrap();
    let before = a.requests();
    for _ in 0..10 {
        assert_eq!(body_text(&get(addr, "/").await), "backend b");
    }
    assert_eq!(a.requests(), before, "drain kept across the reload");
    assert_eq!(backend_state(&sluice, a.addr).await["state"], "drained");

    assert_status(
        &admin_post(admin, &format!("/pools/app/backends/{}/enable", a.addr)).await,
        StatusCode::OK,
    );
    let answers = futures_join(addr, 6).await;
    assert!(answers.iter().any(|x| x == "backend a"), "{answers:?}");
    assert_status(
        &admin_post(admin, "/pools/app/backends/10.9.9.9:1/drain").await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn ejection_survives_a_reload_with_its_reason() {
    let dead = dead_addr().await;
    let steady = spawn_backend("steady").await;
    let yaml = format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\npools:\n  app:\n    backends: [{dead}, {}]\n    outlier: {{consecutive_failures: 2}}\n    algorithm: round_robin\n",
        steady.addr
    );
    let sluice = start_sluice(&yaml).await;
    let addr = sluice.local_addr("web").unwrap();
    for _ in 0..4 {
        get(addr, "/").await;
    }
    assert!(
        state_of(&sluice, dead).1,
        "ejected after 2 connect failures"
    );
    let reason = backend_state(&sluice, dead).await["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    sluice
        .reload(config(&yaml.replace("round_robin", "least_conn")))
        .await
        .unwrap();
    assert!(state_of(&sluice, dead).1, "still ejected after the reload");
    assert_eq!(
        backend_state(&sluice, dead).await["reason"],
        reason.as_str()
    );
}

#[tokio::test]
async fn weights_set_at_runtime_apply_at_once_and_survive_reloads() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let yaml = pool_with(&[&a, &b], "");
    let sluice = start_sluice(&yaml).await;
    let (addr, admin) = (
        sluice.local_addr("web").unwrap(),
        sluice.admin_addr().unwrap(),
    );
    let answer = admin_post(
        admin,
        &format!("/pools/app/backends/{}/weight?value=3", a.addr),
    )
    .await;
    assert_status(&answer, StatusCode::OK);
    let status: serde_json::Value = serde_json::from_slice(answer.body()).unwrap();
    assert_eq!(
        (
            status["weight"].as_u64(),
            status["weight_override"].as_u64()
        ),
        (Some(3), Some(3))
    );

    let count = |answers: &[String], name: &str| {
        answers
            .iter()
            .filter(|x| *x == &format!("backend {name}"))
            .count()
    };
    let answers = futures_join(addr, 8).await;
    assert_eq!(
        (count(&answers, "a"), count(&answers, "b")),
        (6, 2),
        "3:1 after the override"
    );

    sluice.reload(config(&yaml)).await.unwrap();
    assert_eq!(
        backend_state(&sluice, a.addr).await["weight"],
        3,
        "kept across a reload"
    );

    assert_status(
        &admin_post(
            admin,
            &format!("/pools/app/backends/{}/weight?value=0", a.addr),
        )
        .await,
        StatusCode::OK,
    );
    let before = a.requests();
    futures_join(addr, 6).await;
    assert_eq!(a.requests(), before, "weight 0 drains");
    assert_status(
        &admin_post(
            admin,
            &format!("/pools/app/backends/{}/weight?value=x", a.addr),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_restarted_on_its_port_is_back_within_rise_check_intervals() {
    let controls = Controls::default();
    let doomed = spawn_controlled_backend("doomed", Duration::ZERO, controls.clone()).await;
    let steady = spawn_backend("steady").await;
    // A 30 s ejection: only passing checks can bring the backend back within the test.
    let options =
        format!("{CHECKS}    outlier: {{consecutive_failures: 3, base_ejection_time: 30s}}\n");
    let sluice = start_sluice(&pool_with(&[&doomed, &steady], &options)).await;
    let (addr, admin) = (
        sluice.local_addr("web").unwrap(),
        sluice.admin_addr().unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(load_client(addr, true, stop.clone(), tally.clone())))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || doomed.requests() > 20).await);

    controls.kill.cancel();
    assert!(
        wait_until(Duration::from_secs(5), || state_of(&sluice, doomed.addr).1).await,
        "ejected"
    );
    let restarted = spawn_controlled_backend_at(
        doomed.addr,
        "restarted",
        Controls::default(),
        Duration::from_secs(2),
    )
    .await;
    let restart = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || restarted.requests() > 0).await,
        "the restarted backend serves again"
    );
    // Within rise (2) check intervals (100 ms): shown on a paused clock by
    // probe::tests::passing_checks_end_a_first_ejection_within_rise_intervals. This test runs
    // under load, which keeps a paused clock from moving, so it only asks for less than the
    // 10 s above, where the 30 s ejection would have kept the backend out.
    eprintln!(
        "restarted backend served again {:?} after its restart",
        restart.elapsed()
    );
    let status = backend_state(&sluice, doomed.addr).await;
    assert_eq!(status["state"], "up", "{status}");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("active check passed 2/2 after ejection"),
        "{reason}"
    );
    let metrics = body_text(&get(admin, "/metrics").await);
    let ended = format!(
        "sluice_backend_ejections_ended_total{{pool=\"app\",backend=\"{}\",by=\"active_check\"}} 1",
        doomed.addr
    );
    assert!(metrics.contains(&ended), "{ended} in\n{metrics}");

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        0,
        "the kill cost no client a failure: retried on the other backend"
    );
}
