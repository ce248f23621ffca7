//! A real etcd (Debian `etcd-server`) with a temporary data dir on free loopback ports below
//! the ephemeral range; killed on drop. Also the free-port picker the other fixtures use.

use super::{Running, try_get, wait_until_async};
use sluice::discovery::etcd_gateway::Client;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const ETCD: &str = "etcd";
pub const DEADLINE: Duration = Duration::from_secs(10);

/// etcd on its own ports and data dir; killed on drop.
pub struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Running,
}

impl Etcd {
    pub async fn start(dir: &Path) -> Etcd {
        let (client_port, peer_port) = (free_port(), free_port());
        Etcd::start_on(dir, client_port, peer_port).await
    }

    pub async fn start_on(dir: &Path, client_port: u16, peer_port: u16) -> Etcd {
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
            child: Running(child),
        };
        let health: SocketAddr = ([127, 0, 0, 1], client_port).into();
        let healthy = wait_until_async(DEADLINE, || async move {
            // While etcd starts, a connection may be accepted and then reset: not ready yet.
            try_get(health, "/health")
                .await
                .is_some_and(|body| body.contains("\"true\""))
        })
        .await;
        let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
        assert!(healthy, "etcd not healthy within {DEADLINE:?}; log:\n{log}");
        etcd
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A client for the test's own puts and reads (sluice's etcd gateway client).
    pub async fn client(&self) -> Client {
        Client::new(&[self.endpoint()], DEADLINE).unwrap()
    }

    pub fn kill(&mut self) {
        self.child.stop();
    }

    pub async fn restart(&mut self) {
        self.kill();
        let dir = self.dir.clone();
        *self = Etcd::start_on(&dir, self.client_port, self.peer_port).await;
    }
}

/// A free loopback TCP port below the ephemeral range (32768+), so no outgoing connection of
/// a parallel test can take it while etcd restarts on it.
pub fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
