//! `sluice register --consul` and `--zookeeper` (the built binary), each followed by an
//! in-process sluice whose pool discovers from the same registry: registering brings
//! traffic, the entry is kept alive past its TTL, SIGTERM removes it at once, and SIGKILL
//! leaves it to the registry's TTL (Consul: the check turns critical; ZooKeeper: the session
//! expires). Consul is the test agent (`common/consul.rs`), ZooKeeper the real server.

use crate::common::consul::FakeConsul;
use crate::common::zookeeper::ZooKeeper;
use crate::common::*;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const DEADLINE: Duration = Duration::from_secs(10);

fn spawn(args: &[String]) -> Child {
    Command::new(BIN)
        .arg("register")
        .args(args)
        .env("SLUICE_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn terminated(mut child: Child) {
    signal(&child, "-TERM");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("register exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

fn consul_args(consul: &FakeConsul, backend: SocketAddr, ttl: &str) -> Vec<String> {
    [
        "--consul",
        &consul.url(),
        "--service",
        "web",
        "--address",
        &backend.to_string(),
        "--weight",
        "2",
        "--ttl",
        ttl,
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test]
async fn consul_registration_passes_its_ttl_check_and_goes_on_sigterm() {
    let consul = FakeConsul::start().await;
    let a = spawn_backend("a").await;
    let sluice = start_sluice(&format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n\
         pools:\n  app:\n    discovery:\n      consul: {{address: '{}', service: web}}\n",
        consul.url()
    ))
    .await;
    let web = sluice.local_addr("web").unwrap();
    let id = format!("web-{}-{}", a.addr.ip(), a.addr.port());

    let started = Instant::now();
    let registrant = spawn(&consul_args(&consul, a.addr, "2s"));
    until_routed_to(web, "a").await;
    eprintln!(
        "consul register -> first routed request: {:?}",
        started.elapsed()
    );
    assert_eq!(sluice.snapshot().load().pools["app"].backends[0].weight, 2);
    assert_eq!(
        consul.deregister_after(&id),
        Some(Duration::from_secs(60)),
        "removed a minute after turning critical by default"
    );
    // Three TTLs later the check is still passing: the registrant refreshes it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(consul.check_status(&id).as_deref(), Some("passing"));
    assert_eq!(body_text(&get(web, "/").await), "backend a");

    let terminated_at = Instant::now();
    terminated(registrant).await;
    assert!(!consul.has_service(&id), "deregistered on SIGTERM");
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    eprintln!(
        "SIGTERM -> backend removed after {:?}",
        terminated_at.elapsed()
    );

    // Killed outright: the TTL check turns critical and the pool drops it, saying why.
    let mut registrant = spawn(&consul_args(&consul, a.addr, "2s"));
    until_routed_to(web, "a").await;
    let killed_at = Instant::now();
    signal(&registrant, "-KILL");
    registrant.wait().await.unwrap();
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    let expired = killed_at.elapsed();
    eprintln!("SIGKILL with TTL 2s -> backend removed after {expired:?}");
    assert!(
        expired >= Duration::from_millis(1300),
        "{expired:?}: before the TTL"
    );
    assert!(
        consul.has_service(&id),
        "listed as critical until DeregisterCriticalServiceAfter"
    );
    let status = sluice.discovery_status();
    let reason = &status["app"][0].excluded[0].reason;
    assert!(reason.contains("critical: TTL expired"), "{reason}");
}

#[tokio::test]
async fn consul_deregistration_of_a_critical_instance_waits_as_long_as_asked() {
    let consul = FakeConsul::start().await;
    let backend: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let id = format!("web-{}-{}", backend.ip(), backend.port());
    let mut args = consul_args(&consul, backend, "10s");
    args.extend(["--deregister-critical-after".into(), "90m".into()]);
    let registrant = spawn(&args);
    let registered = wait_until(DEADLINE, || consul.has_service(&id)).await;
    assert!(registered, "registered");
    assert_eq!(
        consul.deregister_after(&id),
        Some(Duration::from_secs(90 * 60))
    );
    terminated(registrant).await;

    // Less than Consul's minimum is refused up front (usage, not a silent 1m).
    let output = Command::new(BIN)
        .arg("register")
        .args(consul_args(&consul, backend, "10s"))
        .args(["--deregister-critical-after", "10s"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--deregister-critical-after"), "{stderr}");
    assert!(!consul.has_service(&id));
}

#[tokio::test]
async fn zookeeper_registration_is_an_ephemeral_znode_gone_on_sigterm() {
    if !ZooKeeper::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let zookeeper = ZooKeeper::start(dir.path()).await;
    let a = spawn_backend("a").await;
    let sluice = start_sluice(&format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n\
         pools:\n  app:\n    discovery:\n      \
         zookeeper: {{hosts: ['{}'], path: /services/app, session_timeout: 2s}}\n",
        zookeeper.host()
    ))
    .await;
    let web = sluice.local_addr("web").unwrap();
    let args = |ttl: &str| {
        [
            "--zookeeper",
            &zookeeper.host(),
            "--path",
            "/services/app",
            "--address",
            &a.addr.to_string(),
            "--weight",
            "3",
            "--ttl",
            ttl,
        ]
        .map(str::to_owned)
        .to_vec()
    };

    let started = Instant::now();
    let registrant = spawn(&args("4s"));
    until_routed_to(web, "a").await;
    eprintln!(
        "zookeeper register -> first routed request: {:?}",
        started.elapsed()
    );
    assert_eq!(sluice.snapshot().load().pools["app"].backends[0].weight, 3);
    // Past the session timeout the znode is still there: the session is kept alive.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(backend_addresses(&sluice, "app").len(), 1);

    let terminated_at = Instant::now();
    terminated(registrant).await;
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    let removed = terminated_at.elapsed();
    eprintln!("SIGTERM -> backend removed after {removed:?}");
    assert!(
        removed < Duration::from_secs(2),
        "{removed:?}: deleted, not expired"
    );

    // Killed outright: the server removes the znode when the session times out.
    let mut registrant = spawn(&args("2s"));
    until_routed_to(web, "a").await;
    let killed_at = Instant::now();
    signal(&registrant, "-KILL");
    registrant.wait().await.unwrap();
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    eprintln!(
        "SIGKILL with session timeout 2s -> backend removed after {:?}",
        killed_at.elapsed()
    );
    assert!(killed_at.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn consul_registration_over_https_trusts_the_given_ca() {
    use crate::common::upstream::{TestCa, server_tls};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "consul-ca");
    let consul = FakeConsul::start_with_tls(Some(server_tls(ca.leaf(&["127.0.0.1"]), &[]))).await;
    let a = spawn_backend("a").await;
    let sluice = start_sluice(&format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n\
         pools:\n  app:\n    discovery:\n      \
         consul: {{address: '{}', service: web, tls: {{ca: '{}'}}}}\n",
        consul.url(),
        ca.pem_path.display()
    ))
    .await;
    let mut args = consul_args(&consul, a.addr, "10s");
    args.extend(["--ca".to_owned(), ca.pem_path.display().to_string()]);
    let registrant = spawn(&args);
    until_routed_to(sluice.local_addr("web").unwrap(), "a").await;
    terminated(registrant).await;
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;

    // Without --ca the agent's certificate is not trusted: register fails and says why.
    let output = Command::new(BIN)
        .arg("register")
        .args(consul_args(&consul, a.addr, "10s"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("consul service register") && stderr.contains("TLS"),
        "{stderr}"
    );
}
