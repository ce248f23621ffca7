//! Consul discovery against the test agent (`common/consul.rs`: a Consul-compatible server
//! written for these tests, no real Consul can be installed here): weights, critical,
//! warning and maintenance followed with their reason in `/status`; blocking queries that
//! survive an index going backwards and never spin against a server that ignores them; the
//! token; an unreachable agent keeps the last set.

use crate::common::consul::FakeConsul;
use crate::common::*;
use sluice::Server;
use sluice::discovery::consul::client::Agent;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(10);

async fn start(consul: &FakeConsul, extra: &str) -> Server {
    start_sluice(&format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n\
         pools:\n  app:\n    discovery:\n      consul: {{address: '{}', service: web{extra}}}\n",
        consul.url()
    ))
    .await
}

/// The pool's backends and weights, sorted by address.
fn weights(sluice: &Server) -> Vec<(SocketAddr, u32)> {
    let snapshot = sluice.snapshot().load();
    let mut weights: Vec<_> = (snapshot.pools["app"].backends.iter())
        .filter_map(|b| Some((b.address.inet()?, b.weight)))
        .collect();
    weights.sort();
    weights
}

fn sorted<const N: usize>(mut list: [(SocketAddr, u32); N]) -> Vec<(SocketAddr, u32)> {
    list.sort();
    list.to_vec()
}

fn excluded(sluice: &Server) -> Vec<(String, String)> {
    let status = sluice.discovery_status();
    (status["app"][0].excluded.iter())
        .map(|e| (e.address.clone(), e.reason.clone()))
        .collect()
}

async fn agent_put(consul: &FakeConsul, path: &str) {
    let agent = Agent::new(
        &consul.url(),
        &consul.addr.to_string(),
        None,
        DEADLINE,
        None,
    )
    .unwrap();
    agent.put(path, None).await.unwrap();
}

#[tokio::test]
async fn weights_critical_warning_and_maintenance_are_followed_with_their_reason() {
    let consul = FakeConsul::start().await;
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    consul.add("web-a", "web", a.addr, (3, 1), "passing");
    consul.add("web-b", "web", b.addr, (1, 1), "passing");
    consul.add("other", "db", b.addr, (1, 1), "passing");
    let sluice = start(&consul, "").await;
    let web = sluice.local_addr("web").unwrap();
    let both = wait_until(DEADLINE, || {
        weights(&sluice) == sorted([(a.addr, 3), (b.addr, 1)])
    })
    .await;
    assert!(both, "{:?}", weights(&sluice));

    // A failing check: out at once (the blocking query returns with the change).
    let changed_at = Instant::now();
    consul.set_check("web-b", "critical", "HTTP GET http://b/health: 503");
    wait_for_backends(&sluice, "app", &[a.addr], DEADLINE).await;
    eprintln!(
        "check critical -> backend out after {:?}",
        changed_at.elapsed()
    );
    let out = excluded(&sluice);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, b.addr.to_string());
    assert!(
        out[0].1.contains("critical: HTTP GET http://b/health: 503"),
        "{out:?}"
    );
    let before = b.requests();
    for _ in 0..5 {
        assert_eq!(body_text(&get(web, "/").await), "backend a");
    }
    assert_eq!(b.requests(), before);

    // Warning: out under passing_only (the default).
    consul.set_check("web-b", "warning", "load high");
    let warned = wait_until(DEADLINE, || {
        excluded(&sluice)
            .iter()
            .any(|(_, r)| r.contains("warning (passing_only)"))
    })
    .await;
    assert!(warned, "{:?}", excluded(&sluice));
    assert_eq!(weights(&sluice), [(a.addr, 3)]);

    // Service maintenance, through the agent API, with the operator's reason.
    consul.set_check("web-b", "passing", "");
    wait_for_backends(&sluice, "app", &[a.addr, b.addr], DEADLINE).await;
    agent_put(
        &consul,
        "/v1/agent/service/maintenance/web-a?enable=true&reason=deploy+42",
    )
    .await;
    wait_for_backends(&sluice, "app", &[b.addr], DEADLINE).await;
    assert_eq!(
        excluded(&sluice),
        [(
            a.addr.to_string(),
            "service web-a in maintenance: deploy 42".to_owned()
        )]
    );
    // /status shows it too.
    let admin = sluice.admin_addr().unwrap();
    let status = body_text(&get(admin, "/status").await);
    assert!(
        status.contains("service web-a in maintenance: deploy 42"),
        "{status}"
    );
    // And `sluice status` (the binary, asking this sluice's admin listener): the instance
    // left out under its source, the one in the pool with where it comes from.
    let output = tokio::process::Command::new(BIN)
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    assert!(
        table.contains(&format!(
            "  left out: {} (service web-a in maintenance: deploy 42)",
            a.addr
        )),
        "{table}"
    );
    let row = (table.lines())
        .find(|l| l.contains(&b.addr.to_string()))
        .unwrap_or_default();
    assert!(row.contains(" consul "), "{table}");

    // Node maintenance takes every instance of the node out.
    agent_put(&consul, "/v1/agent/maintenance?enable=true&reason=kernel").await;
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    assert!(
        excluded(&sluice)
            .iter()
            .all(|(_, r)| r.starts_with("node test-node in maintenance")),
        "{:?}",
        excluded(&sluice)
    );
    agent_put(&consul, "/v1/agent/maintenance?enable=false").await;
    agent_put(&consul, "/v1/agent/service/maintenance/web-a?enable=false").await;
    wait_for_backends(&sluice, "app", &[a.addr, b.addr], DEADLINE).await;

    // A weight change keeps the backend (and its state) and changes its share.
    consul.set_weights("web-b", (5, 1));
    let reweighted = wait_until(DEADLINE, || {
        weights(&sluice) == sorted([(a.addr, 3), (b.addr, 5)])
    })
    .await;
    assert!(reweighted, "{:?}", weights(&sluice));
    consul.remove("web-a");
    wait_for_backends(&sluice, "app", &[b.addr], DEADLINE).await;
    assert!(excluded(&sluice).is_empty());
}

#[tokio::test]
async fn passing_only_false_keeps_warning_instances_at_their_warning_weight() {
    let consul = FakeConsul::start().await;
    let a = spawn_backend("a").await;
    consul.add("web-a", "web", a.addr, (4, 2), "warning");
    let sluice = start(&consul, ", passing_only: false").await;
    let kept = wait_until(DEADLINE, || weights(&sluice) == [(a.addr, 2)]).await;
    assert!(kept, "{:?}", weights(&sluice));
    consul.set_check("web-a", "passing", "");
    let passing = wait_until(DEADLINE, || weights(&sluice) == [(a.addr, 4)]).await;
    assert!(passing, "{:?}", weights(&sluice));
}

#[tokio::test]
async fn the_index_going_backwards_resets_and_a_server_ignoring_it_is_not_spun_on() {
    let consul = FakeConsul::start().await;
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    consul.add("web-a", "web", a.addr, (1, 1), "passing");
    let sluice = start(&consul, "").await;
    wait_for_backends(&sluice, "app", &[a.addr], DEADLINE).await;

    // Index restored to a lower value (a snapshot restore): the client resets to 0 and
    // still follows the next change.
    consul.move_index_back();
    consul.add("web-b", "web", b.addr, (1, 1), "passing");
    wait_for_backends(&sluice, "app", &[a.addr, b.addr], DEADLINE).await;

    // A server that answers every blocking query at once with the same index: sluice paces
    // itself to one query a second (EARLY_GAP) instead of looping.
    let settled = consul.health_queries();
    consul.ignore_index(true);
    let window = Duration::from_secs(3);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let queries = consul.health_queries() - settled;
    eprintln!(
        "server ignoring index: {queries} queries in {:?}",
        started.elapsed()
    );
    // One may be in flight when the flag flips (it returns when its wait ends or now),
    // then one a second: 3 s allow at most 5.
    assert!(queries <= 5, "{queries} queries in {window:?}: a spin");
    assert!(queries >= 2, "{queries}: still polling");
    consul.ignore_index(false);
    // Blocking again: no more than the one in flight over a second.
    let settled = consul.health_queries();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(consul.health_queries() - settled <= 2);
}

#[tokio::test]
async fn token_errors_and_an_unreachable_agent_keep_the_last_set() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("consul.token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let consul = FakeConsul::start().await;
    consul.set_token(Some("s3cret"));
    let a = spawn_backend("a").await;
    consul.add("web-a", "web", a.addr, (1, 1), "passing");
    let extra = format!(", token_file: '{}'", token_file.display());
    let sluice = start(&consul, &extra).await;
    let web = sluice.local_addr("web").unwrap();
    wait_for_backends(&sluice, "app", &[a.addr], DEADLINE).await;

    // The token is revoked: 403s are reported, the set stays.
    consul.set_token(Some("rotated"));
    consul.add("web-b", "web", dead_addr().await, (1, 1), "passing");
    let refused = wait_until(DEADLINE, || {
        sluice.discovery_status()["app"][0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("403"))
    })
    .await;
    assert!(
        refused,
        "{:?}",
        sluice.discovery_status()["app"][0].last_error
    );
    assert_eq!(backend_addresses(&sluice, "app"), BTreeSet::from([a.addr]));
    // The file is read again on reconnect: the rotated token is picked up.
    std::fs::write(&token_file, "rotated\n").unwrap();
    let both = wait_until(DEADLINE, || backend_addresses(&sluice, "app").len() == 2).await;
    assert!(both);

    // The agent goes away: the set stays and /status says why.
    drop(consul);
    let reported = wait_until(DEADLINE, || {
        sluice.discovery_status()["app"][0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot connect") || e.contains("connection"))
    })
    .await;
    assert!(
        reported,
        "{:?}",
        sluice.discovery_status()["app"][0].last_error
    );
    assert_eq!(backend_addresses(&sluice, "app").len(), 2, "set kept");
    until_routed_to(web, "a").await;
}

#[test]
fn bad_consul_settings_are_refused_with_their_position() {
    let cases = [
        (
            "consul: {service: 'a b'}",
            "discovery.consul.service",
            "invalid service name",
        ),
        (
            "consul: {address: 'consul:8500', service: web}",
            "discovery.consul.address",
            "expected http://",
        ),
        (
            "consul: {service: web, wait: 20m}",
            "discovery.consul.wait",
            "between 1s and 10m",
        ),
        (
            "consul: {service: web, token_file: ''}",
            "discovery.consul.token_file",
            "empty path",
        ),
        (
            "consul: {service: web, tls: {verify: false}}",
            "discovery.consul.tls",
            "https://",
        ),
    ];
    for (source, path, message) in cases {
        let yaml = format!(
            "listeners: {{web: {{bind: '127.0.0.1:0', pool: app}}}}\n\
             pools:\n  app:\n    discovery:\n      {source}\n"
        );
        let error = sluice::Config::parse(&yaml, "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("t.yaml:5:"), "{error}");
        assert!(error.contains(path) && error.contains(message), "{error}");
    }
}

#[tokio::test]
async fn https_agents_are_verified_against_the_configured_ca() {
    use crate::common::upstream::{TestCa, server_tls};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "consul-ca");
    let consul = FakeConsul::start_with_tls(Some(server_tls(ca.leaf(&["127.0.0.1"]), &[]))).await;
    assert!(consul.url().starts_with("https://"));
    let a = spawn_backend("a").await;
    consul.add("web-a", "web", a.addr, (1, 1), "passing");
    let trusting = start(
        &consul,
        &format!(", tls: {{ca: '{}'}}", ca.pem_path.display()),
    )
    .await;
    wait_for_backends(&trusting, "app", &[a.addr], DEADLINE).await;

    // Without the CA, the bundled public roots do not trust it: an error, no backends.
    let untrusting = start(&consul, "").await;
    let refused = wait_until(DEADLINE, || {
        untrusting.discovery_status()["app"][0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("TLS"))
    })
    .await;
    assert!(
        refused,
        "{:?}",
        untrusting.discovery_status()["app"][0].last_error
    );
    assert!(backend_addresses(&untrusting, "app").is_empty());
}
