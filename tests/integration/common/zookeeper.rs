//! A real standalone ZooKeeper (Debian package `zookeeper`, run straight from its jar) with a
//! temporary data dir on a free loopback port; killed on drop. Readiness is the `srvr`
//! four-letter command answering `Mode: standalone`, which ZooKeeper only says once it
//! serves requests.

use super::etcd::free_port;
use super::{Running, require_program, wait_until_async};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zookeeper_client as zk;

/// The jar Debian installs; its manifest's Class-Path names every dependency.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// JVM start plus snapshot load: about 0.5 s here; bounded generously for a loaded machine.
const STARTUP: Duration = Duration::from_secs(30);

pub struct ZooKeeper {
    pub port: u16,
    dir: PathBuf,
    child: Running,
}

impl ZooKeeper {
    /// Whether java and the ZooKeeper jar are installed; under CI a missing one fails the
    /// test, elsewhere the test is skipped with a message (`require_program`'s rule).
    pub fn available() -> bool {
        if require_program(&["java"], "zookeeper").is_none() {
            return false;
        }
        if Path::new(ZOOKEEPER_JAR).exists() {
            return true;
        }
        if std::env::var_os("CI").is_some() {
            panic!("{ZOOKEEPER_JAR} not found: .ci/run installs the Debian package zookeeper");
        }
        eprintln!(
            "SKIPPED: {ZOOKEEPER_JAR} missing (apt-get install zookeeper); CI runs this test"
        );
        false
    }

    pub async fn start(dir: &Path) -> ZooKeeper {
        ZooKeeper::start_on(dir, free_port()).await
    }

    /// Starts on `port` with `dir/data`: a restart keeps the znodes and the sessions.
    pub async fn start_on(dir: &Path, port: u16) -> ZooKeeper {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        // Short ticks so sessions may be short; no fsync and small preallocation since the
        // data is thrown away.
        let config = format!(
            "tickTime=500\nminSessionTimeout=1000\nmaxSessionTimeout=30000\n\
             dataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n\
             preAllocSize=1024\nforceSync=no\n",
            data.display()
        );
        let config_path = dir.join("zoo.cfg");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("zookeeper.log")).unwrap();
        let child = Command::new("java")
            .args(["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .args(["-cp", ZOOKEEPER_JAR])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start java: {e}"));
        let mut server = ZooKeeper {
            port,
            dir: dir.to_path_buf(),
            child: Running(child),
        };
        let ready = wait_until_async(STARTUP, || async move {
            four_letter(port, "srvr").await.contains("Mode: standalone")
        })
        .await;
        if !ready {
            let exited = server.child.exited();
            let log = std::fs::read_to_string(dir.join("zookeeper.log")).unwrap_or_default();
            server.kill();
            panic!("ZooKeeper not serving within {STARTUP:?} (exit: {exited:?}); log:\n{log}");
        }
        server
    }

    /// The `hosts:` entry for sluice's config.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client session of its own (a registrant). Dropping the last clone closes it.
    pub async fn client(&self) -> zk::Client {
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(20))
            .connect(&self.host())
            .await
            .unwrap()
    }

    pub fn kill(&mut self) {
        self.child.stop();
    }

    pub async fn restart(&mut self) {
        self.kill();
        let dir = self.dir.clone();
        *self = ZooKeeper::start_on(&dir, self.port).await;
    }
}

/// Sends a four-letter command; the answer, or "" if the server is not reachable yet.
async fn four_letter(port: u16, command: &str) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(command.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(2), exchange).await {
        Ok(Ok(answer)) => answer,
        _ => String::new(),
    }
}

/// Creates `path` and its missing parents as persistent znodes.
pub async fn create_path(client: &zk::Client, path: &str) {
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    match client.mkdir(path, &options).await {
        Ok(()) | Err(zk::Error::NodeExists) => {}
        Err(error) => panic!("mkdir {path}: {error}"),
    }
}

/// Registers `name` under `path` as an ephemeral znode of `client`'s session.
pub async fn register(client: &zk::Client, path: &str, name: &str, data: &str) {
    let options = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    client
        .create(&format!("{path}/{name}"), data.as_bytes(), &options)
        .await
        .unwrap();
}
