//! `sluice register --zookeeper`: creates `{path}/{IP:PORT}` as an ephemeral znode of this
//! process's session (the format the zookeeper source reads, `entry.rs`), creating the
//! missing parents as persistent znodes. The client keeps the session alive with its own
//! pings; the znode lives exactly as long as the session.
//!
//! - Deregistering deletes the znode (watchers see it go at once) and closes the session.
//! - Killed outright: the server deletes the znode when the session times out (`--ttl`, the
//!   requested session timeout, which the server may clamp to its own bounds).
//! - Session expired (the servers were unreachable for longer than the timeout): a new
//!   session is opened with a backoff and the znode created again.
//! - A znode left by an earlier session of the same backend (a registrant restarted before its
//!   old session timed out) is replaced rather than refused.

use super::super::entry::entry_value;
use super::{BACKOFF_MAX, RegisterError, check_common};
use crate::config::zookeeper::{check_znode_path, parse_host_port};
use crate::error::Chain;
use std::net::SocketAddr;
use std::time::Duration;
use tracing::{info, warn};
use zookeeper_client as zk;

#[derive(Debug, Clone)]
pub struct ZooKeeperOptions {
    hosts: Vec<String>,
    path: String,
    znode: String,
    value: String,
    session_timeout: Duration,
}

impl ZooKeeperOptions {
    pub fn new(
        hosts: &[String],
        path: &str,
        backend: SocketAddr,
        weight: u32,
        session_timeout: Duration,
    ) -> Result<ZooKeeperOptions, RegisterError> {
        let invalid = |flag, message: String| RegisterError::Invalid { flag, message };
        if hosts.is_empty() {
            return Err(invalid("--zookeeper", "give at least one HOST:PORT".into()));
        }
        let hosts = (hosts.iter())
            .map(|host| parse_host_port(host))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| invalid("--zookeeper", message))?;
        let path = path.trim_end_matches('/');
        check_znode_path(path).map_err(|message| invalid("--path", message))?;
        check_common(weight, session_timeout)?;
        Ok(ZooKeeperOptions {
            hosts,
            znode: format!("{path}/{backend}"),
            path: path.to_owned(),
            value: entry_value(weight),
            session_timeout,
        })
    }

    pub fn znode(&self) -> &str {
        &self.znode
    }
}

pub struct Registration {
    options: ZooKeeperOptions,
    client: zk::Client,
}

impl Registration {
    pub async fn register(options: ZooKeeperOptions) -> Result<Registration, RegisterError> {
        let client = create(&options).await?;
        Ok(Registration { options, client })
    }

    /// Waits on the session; when it ends (expired, closed), opens a new one and creates the
    /// znode again, with a backoff while that fails.
    pub async fn keep_alive(&mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut state = self.client.state_watcher();
            loop {
                match state.changed().await {
                    zk::SessionState::Disconnected => {
                        warn!(
                            "connection to ZooKeeper lost; the client reconnects within the session"
                        );
                    }
                    zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                        info!("connected to ZooKeeper again");
                    }
                    terminal => {
                        warn!(state = ?terminal, "ZooKeeper session ended; registering again");
                        break;
                    }
                }
            }
            loop {
                match create(&self.options).await {
                    Ok(client) => {
                        self.client = client;
                        backoff = Duration::from_millis(100);
                        break;
                    }
                    Err(error) => {
                        warn!(error = %Chain(&error), "cannot register again; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// Deletes the znode, then closes the session (dropping the last client handle).
    pub async fn deregister(self) -> Result<(), RegisterError> {
        let deleted = self.client.delete(&self.options.znode, None).await;
        match deleted {
            Ok(()) | Err(zk::Error::NoNode) => {}
            Err(source) => {
                return Err(RegisterError::ZooKeeper {
                    action: format!("delete {}", self.options.znode),
                    source,
                });
            }
        }
        info!(znode = %self.options.znode, "deregistered from ZooKeeper");
        Ok(())
    }
}

/// A new session with the znode created in it.
async fn create(options: &ZooKeeperOptions) -> Result<zk::Client, RegisterError> {
    let failed = |action: String| move |source| RegisterError::ZooKeeper { action, source };
    let hosts = options.hosts.join(",");
    let connect = zk::Client::connector()
        .with_session_timeout(options.session_timeout)
        .with_fail_eagerly()
        .connect(&hosts);
    let client = match tokio::time::timeout(options.session_timeout, connect).await {
        Ok(connected) => connected.map_err(failed(format!("connect {hosts}")))?,
        Err(_) => {
            return Err(RegisterError::Session(format!(
                "not established with {hosts} within {:?}",
                options.session_timeout
            )));
        }
    };
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    client
        .mkdir(&options.path, &persistent)
        .await
        .map_err(failed(format!("mkdir {}", options.path)))?;
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    let value = options.value.as_bytes();
    loop {
        match client.create(&options.znode, value, &ephemeral).await {
            Ok(_) => break,
            Err(zk::Error::NodeExists) => {
                // Left by an earlier session of this backend (or a concurrent registrant):
                // ours replaces it, so the entry follows the live process.
                match client.delete(&options.znode, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => continue,
                    Err(source) => {
                        return Err(RegisterError::ZooKeeper {
                            action: format!("replace {}", options.znode),
                            source,
                        });
                    }
                }
            }
            Err(source) => {
                return Err(RegisterError::ZooKeeper {
                    action: format!("create {}", options.znode),
                    source,
                });
            }
        }
    }
    info!(znode = %options.znode, session_timeout = ?client.session_timeout(),
        "registered in ZooKeeper");
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_znode_is_the_path_and_the_address() {
        let options = ZooKeeperOptions::new(
            &["127.0.0.1:2181".into()],
            "/services/app/",
            "10.0.0.7:8080".parse().unwrap(),
            2,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(options.znode(), "/services/app/10.0.0.7:8080");
        assert_eq!(options.value, "{\"weight\":2}");
        let flag = |hosts: &[String], path: &str| match ZooKeeperOptions::new(
            hosts,
            path,
            "10.0.0.7:1".parse().unwrap(),
            1,
            Duration::from_secs(10),
        ) {
            Err(RegisterError::Invalid { flag, .. }) => flag,
            other => panic!("{other:?}"),
        };
        assert_eq!(flag(&["zk1".into()], "/a"), "--zookeeper");
        assert_eq!(flag(&["zk1:2181".into()], "a/b"), "--path");
    }
}
