//! etcd discovery against a real etcd (Debian `etcd-server`) with a temporary data dir on free
//! loopback ports: puts, deletes and lease expiry are followed; an etcd outage keeps the last
//! set, and changes made after etcd comes back are picked up; two sluice instances on one
//! etcd both route to a newly registered backend.

mod common;

use common::*;
use etcd_client::{Client, PutOptions};
use sluice::Server;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

const ETCD: &str = "etcd";
const DEADLINE: Duration = Duration::from_secs(10);
const PREFIX: &str = "/services/app/";

/// etcd on its own ports and data dir; killed on drop.
struct Etcd {
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Child,
}

impl Etcd {
    async fn start(dir: &Path) -> Etcd {
        let (client_port, peer_port) = (free_port(), free_port());
        Etcd::start_on(dir, client_port, peer_port).await
    }

    async fn start_on(dir: &Path, client_port: u16, peer_port: u16) -> Etcd {
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = Command::new(ETCD)
            .args(["--name", "lbtest", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("lbtest={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {ETCD}: {e}; install Debian package etcd-server (.ci/run does)"
                )
            });
        let etcd = Etcd {
            client_port,
            peer_port,
            dir: dir.to_path_buf(),
            child,
        };
        let health: SocketAddr = ([127, 0, 0, 1], client_port).into();
        let healthy = wait_until_async(DEADLINE, || async move {
            match tokio::net::TcpStream::connect(health).await {
                Ok(_) => body_text(&get(health, "/health").await).contains("\"true\""),
                Err(_) => false,
            }
        })
        .await;
        let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
        assert!(healthy, "etcd not healthy within {DEADLINE:?}; log:\n{log}");
        etcd
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    async fn client(&self) -> Client {
        Client::connect([self.endpoint()], None).await.unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn restart(&mut self) {
        self.kill();
        let dir = self.dir.clone();
        *self = Etcd::start_on(&dir, self.client_port, self.peer_port).await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback TCP port below the ephemeral range (32768+), so no outgoing connection of
/// a parallel test can take it while etcd restarts on it.
fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `wait_until` for a condition that needs I/O.
async fn wait_until_async<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

async fn start(etcd: &Etcd) -> Server {
    start_sluice(&format!(
        "admin: {{bind: 127.0.0.1:0}}\nlisteners:\n  web: {{bind: 127.0.0.1:0, pool: app}}\n\
         pools:\n  app:\n    discovery:\n      etcd: {{endpoints: ['{}'], prefix: {PREFIX}}}\n",
        etcd.endpoint()
    ))
    .await
}

fn key(backend: SocketAddr) -> String {
    format!("{PREFIX}{backend}")
}

/// Sends requests until one is answered by `name`; returns how long that took.
async fn until_routed_to(web: SocketAddr, name: &str) -> Duration {
    let started = Instant::now();
    let want = format!("backend {name}");
    let routed = wait_until_async(DEADLINE, || {
        let want = want.clone();
        async move { body_text(&get(web, "/").await) == want }
    })
    .await;
    assert!(routed, "no request reached {name}");
    started.elapsed()
}

#[tokio::test]
async fn puts_deletes_and_lease_expiry_are_followed() {
    if require_program(&[ETCD], "etcd-server").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let mut client = etcd.client().await;
    let a = spawn_backend("a").await;
    let sluice = start(&etcd).await;
    let web = sluice.local_addr("web").unwrap();

    let put_at = Instant::now();
    client.put(key(a.addr), "", None).await.unwrap();
    until_routed_to(web, "a").await;
    let put_to_routed = put_at.elapsed();
    eprintln!("etcd put -> first routed request: {put_to_routed:?}");
    assert!(put_to_routed < Duration::from_secs(1), "{put_to_routed:?}");

    client
        .put(key(a.addr), r#"{"weight": 4}"#, None)
        .await
        .unwrap();
    let reweighted = wait_until(DEADLINE, || {
        sluice.snapshot().load().pools["app"].backends[0].weight == 4
    })
    .await;
    assert!(reweighted);

    client.delete(key(a.addr), None).await.unwrap();
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    let before = a.requests();
    assert_eq!(
        get(web, "/").await.status(),
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(a.requests(), before, "no new traffic after delete");

    // A lease that nobody keeps alive: the backend goes when it expires.
    let lease = client.lease_grant(2, None).await.unwrap().id();
    let leased_at = Instant::now();
    client
        .put(key(a.addr), "", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    wait_for_backends(&sluice, "app", &[a.addr], DEADLINE).await;
    wait_for_backends(&sluice, "app", &[], DEADLINE).await;
    eprintln!(
        "lease TTL 2s -> backend removed after {:?}",
        leased_at.elapsed()
    );
}

#[tokio::test]
async fn an_etcd_outage_keeps_the_set_and_changes_after_restart_are_picked_up() {
    if require_program(&[ETCD], "etcd-server").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path()).await;
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    etcd.client()
        .await
        .put(key(a.addr), "", None)
        .await
        .unwrap();
    let sluice = start(&etcd).await;
    let web = sluice.local_addr("web").unwrap();
    wait_for_backends(&sluice, "app", &[a.addr], DEADLINE).await;

    etcd.kill();
    let reported = wait_until(DEADLINE, || {
        sluice.shared().discovery.status()["app"][0]
            .last_error
            .is_some()
    })
    .await;
    assert!(reported, "the outage shows in /status");
    assert_eq!(
        backend_addresses(&sluice, "app"),
        BTreeSet::from([a.addr]),
        "set kept"
    );
    assert_eq!(body_text(&get(web, "/").await), "backend a");

    etcd.restart().await;
    let restarted_at = Instant::now();
    etcd.client()
        .await
        .put(key(b.addr), "", None)
        .await
        .unwrap();
    wait_for_backends(&sluice, "app", &[a.addr, b.addr], DEADLINE).await;
    eprintln!(
        "etcd restarted -> change picked up after {:?}",
        restarted_at.elapsed()
    );
    until_routed_to(web, "b").await;
}

#[tokio::test]
async fn two_instances_on_one_etcd_both_route_to_a_new_backend() {
    if require_program(&[ETCD], "etcd-server").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let a = spawn_backend("a").await;
    let first = start(&etcd).await;
    let second = start(&etcd).await;
    // Both watchers are established once an initial (empty) listing is reported.
    for sluice in [&first, &second] {
        let listed = wait_until(DEADLINE, || {
            sluice.shared().discovery.status()["app"][0].updates > 0
        })
        .await;
        assert!(listed);
    }
    etcd.client()
        .await
        .put(key(a.addr), "", None)
        .await
        .unwrap();
    for sluice in [&first, &second] {
        let took = until_routed_to(sluice.local_addr("web").unwrap(), "a").await;
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}
