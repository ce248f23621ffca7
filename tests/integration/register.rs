//! `sluice register` (the built binary) against a real etcd, with an in-process sluice whose
//! pool follows the prefix: registering brings traffic; SIGTERM deletes the key at once;
//! SIGKILL leaves it until the lease TTL runs out; with a command, the child's exit ends the
//! registration and its status becomes ours.

use crate::common::etcd::*;
use crate::common::*;
use sluice::Server;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const PREFIX: &str = "/services/app/";

async fn start(etcd: &Etcd) -> Server {
    start_sluice(&format!(
        "listeners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n\
         pools:\n  app:\n    discovery:\n      etcd: {{endpoints: ['{}'], prefix: {PREFIX}}}\n",
        etcd.endpoint()
    ))
    .await
}

fn register(etcd: &Etcd, backend: SocketAddr, ttl: &str, command: &[&str]) -> Child {
    let mut register = Command::new(BIN);
    register
        .args(["register", "--etcd", &etcd.endpoint(), "--prefix", PREFIX])
        .args([
            "--address",
            &backend.to_string(),
            "--weight",
            "2",
            "--ttl",
            ttl,
        ])
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    if !command.is_empty() {
        register.arg("--").args(command);
    }
    register.spawn().unwrap()
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn key_exists(etcd: &Etcd, backend: SocketAddr) -> bool {
    let key = format!("{PREFIX}{backend}");
    !etcd.client().await.get(key).await.unwrap().kvs.is_empty()
}

#[tokio::test]
async fn sigterm_deregisters_at_once_and_sigkill_leaves_it_to_the_lease() {
    if require_program(&[ETCD], "etcd-server").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let a = spawn_backend("a").await;
    let sluice = start(&etcd).await;
    let web = sluice.local_addr("web").unwrap();

    let started = Instant::now();
    let mut registrant = register(&etcd, a.addr, "3s", &[]);
    until_routed_to(web, "a").await;
    eprintln!(
        "register started -> first routed request: {:?}",
        started.elapsed()
    );
    assert_eq!(sluice.snapshot().load().pools["app"].backends[0].weight, 2);

    let terminated_at = Instant::now();
    signal(&registrant, "-TERM");
    let status = tokio::time::timeout(DEADLINE, registrant.wait())
        .await
        .expect("register exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!key_exists(&etcd, a.addr).await, "key deleted on exit");
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    let removed = terminated_at.elapsed();
    eprintln!("SIGTERM -> backend removed after {removed:?}");
    assert!(removed < Duration::from_secs(1), "{removed:?}");
    let before = a.requests();
    assert_eq!(
        get(web, "/").await.status(),
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(a.requests(), before);

    // Killed outright: nobody revokes the lease; etcd drops the key after the TTL.
    let mut registrant = register(&etcd, a.addr, "3s", &[]);
    until_routed_to(web, "a").await;
    let killed_at = Instant::now();
    signal(&registrant, "-KILL");
    registrant.wait().await.unwrap();
    assert!(
        key_exists(&etcd, a.addr).await,
        "the key outlives a SIGKILL"
    );
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    let expired = killed_at.elapsed();
    eprintln!("SIGKILL with TTL 3s -> backend removed after {expired:?}");
    // The lease was last refreshed at most TTL/3 before the kill.
    assert!(expired >= Duration::from_secs(1), "{expired:?}");
}

#[tokio::test]
async fn the_registration_lasts_as_long_as_the_command() {
    if require_program(&[ETCD], "etcd-server").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let a = spawn_backend("a").await;
    let sluice = start(&etcd).await;
    let web = sluice.local_addr("web").unwrap();

    // The child waits for a line on its stdin (inherited from register), then exits 3.
    let mut registrant = register(&etcd, a.addr, "10s", &["sh", "-c", "read line; exit 3"]);
    until_routed_to(web, "a").await;
    let mut stdin = registrant.stdin.take().unwrap();
    stdin.write_all(b"stop\n").await.unwrap();
    let status = tokio::time::timeout(DEADLINE, registrant.wait())
        .await
        .expect("register exits with its command")
        .unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "the command's exit status is passed on"
    );
    assert!(
        !key_exists(&etcd, a.addr).await,
        "key deleted when the command ended"
    );
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;

    // A signal to register deregisters, then stops the command, whose status is passed on.
    let mut registrant = register(&etcd, a.addr, "10s", &["sleep", "60"]);
    until_routed_to(web, "a").await;
    signal(&registrant, "-TERM");
    let status = tokio::time::timeout(DEADLINE, registrant.wait())
        .await
        .expect("register exits after SIGTERM")
        .unwrap();
    assert_eq!(
        status.code(),
        Some(143),
        "sleep ended by the forwarded SIGTERM"
    );
    assert!(!key_exists(&etcd, a.addr).await);
}
