//! `sluice register`: puts one backend into a registry for as long as this process (or the
//! command it runs) lives, in the form the matching discovery source follows:
//! - `--etcd`: a key under a lease kept alive (`etcd.rs`);
//! - `--consul`: a service instance with a TTL check kept passing (`consul.rs`);
//! - `--zookeeper`: an ephemeral znode of this process's session (`zookeeper.rs`).
//!
//! SIGTERM or SIGINT deregisters at once; a registrant killed outright stops refreshing and
//! the registry drops the entry when the TTL (session timeout) runs out. With a command, the
//! registration also ends when the child exits (and the exit status is the child's); a signal
//! deregisters first and then passes SIGTERM on to the child, so no new traffic is sent to a
//! backend that is shutting down.
//! Imports `config` (limits and address formats), `entry`, `etcd_gateway` and `consul`
//! (the wire formats and clients); nothing of the running daemon.

pub mod consul;
pub mod etcd;
pub mod zookeeper;

pub use consul::ConsulOptions;
pub use etcd::EtcdOptions;
pub use zookeeper::ZooKeeperOptions;

use super::consul::client::ConsulError;
use super::etcd_gateway::EtcdError;
use crate::config::MAX_WEIGHT;
use crate::error::Chain;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tracing::warn;

/// Bounds each registry call.
const TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A variant with an inner error says what failed; the inner error is its `source`
/// (rendered by `crate::error::Chain`).
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("invalid {flag}: {message}")]
    Invalid { flag: &'static str, message: String },
    /// Includes no answer within `TIMEOUT` ("etcd lease grant: no answer in 5s").
    #[error("etcd {action}")]
    Etcd { action: String, source: EtcdError },
    #[error("etcd lease keep-alive: the lease expired")]
    LeaseExpired,
    #[error("consul {action}")]
    Consul { action: String, source: ConsulError },
    #[error("zookeeper {action}")]
    ZooKeeper {
        action: String,
        source: zookeeper_client::Error,
    },
    #[error("zookeeper session {0}")]
    Session(String),
    #[error("cannot run {command}")]
    Command {
        command: String,
        source: std::io::Error,
    },
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
}

/// Where and what to register.
#[derive(Debug, Clone)]
pub enum RegisterOptions {
    Etcd(EtcdOptions),
    Consul(ConsulOptions),
    ZooKeeper(ZooKeeperOptions),
}

/// The checks every registry shares: the weight's range and a TTL with room for a refresh.
fn check_common(weight: u32, ttl: Duration) -> Result<(), RegisterError> {
    if weight == 0 || weight > MAX_WEIGHT {
        return Err(RegisterError::Invalid {
            flag: "--weight",
            message: format!("{weight}: must be between 1 and {MAX_WEIGHT}"),
        });
    }
    if ttl < Duration::from_secs(2) {
        return Err(RegisterError::Invalid {
            flag: "--ttl",
            message: "must be at least 2s".into(),
        });
    }
    Ok(())
}

/// A live registration in one of the registries.
enum Registration {
    Etcd(etcd::Registration),
    Consul(consul::Registration),
    ZooKeeper(zookeeper::Registration),
}

impl Registration {
    async fn register(options: RegisterOptions) -> Result<Registration, RegisterError> {
        Ok(match options {
            RegisterOptions::Etcd(options) => {
                Registration::Etcd(etcd::Registration::register(options).await?)
            }
            RegisterOptions::Consul(options) => {
                Registration::Consul(consul::Registration::register(options).await?)
            }
            RegisterOptions::ZooKeeper(options) => {
                Registration::ZooKeeper(zookeeper::Registration::register(options).await?)
            }
        })
    }

    /// Keeps the entry alive until cancelled; never returns otherwise.
    async fn keep_alive(&mut self) {
        match self {
            Registration::Etcd(registration) => registration.keep_alive().await,
            Registration::Consul(registration) => registration.keep_alive().await,
            Registration::ZooKeeper(registration) => registration.keep_alive().await,
        }
    }

    async fn deregister(self) -> Result<(), RegisterError> {
        match self {
            Registration::Etcd(registration) => registration.deregister().await,
            Registration::Consul(registration) => registration.deregister().await,
            Registration::ZooKeeper(registration) => registration.deregister().await,
        }
    }
}

/// Registers, keeps the registration while running, and deregisters on SIGTERM/SIGINT or
/// when `command`'s child exits. Returns the exit code: 0 after a signal without a command,
/// else the child's (128 + signal number if a signal ended it).
pub async fn run(options: RegisterOptions, command: &[String]) -> Result<u8, RegisterError> {
    // Handlers first: a SIGTERM that arrives while the registry is being asked must not kill
    // us with the entry left behind for a whole TTL.
    let mut terminate = signal(SignalKind::terminate()).map_err(RegisterError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RegisterError::Signal)?;
    let mut child = match command.split_first() {
        None => None,
        Some((program, args)) => {
            Some(Command::new(program).args(args).spawn().map_err(|source| {
                RegisterError::Command {
                    command: program.clone(),
                    source,
                }
            })?)
        }
    };
    let mut registration = match Registration::register(options).await {
        Ok(registration) => registration,
        Err(error) => {
            if let Some(child) = child.as_mut() {
                // The registration failure is what gets reported; the child's status is moot.
                let _ = stop_child(child).await;
            }
            return Err(error);
        }
    };
    let exited = tokio::select! {
        () = registration.keep_alive() => None,
        _ = terminate.recv() => None,
        _ = interrupt.recv() => None,
        status = wait_child(child.as_mut()) => Some(status),
    };
    if let Err(error) = registration.deregister().await {
        // The registry still drops the entry after the TTL.
        warn!(error = %Chain(&error), "cannot deregister; the entry goes when its TTL runs out");
    }
    let status = match (exited, child.as_mut()) {
        (Some(status), _) => Some(status),
        (None, Some(child)) => Some(stop_child(child).await),
        (None, None) => None,
    };
    Ok(status.map_or(0, exit_code))
}

/// The child's exit status; pending for ever without a child (select then ignores it).
async fn wait_child(child: Option<&mut Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

/// SIGTERM to the child, then its exit status (it decides how long it drains).
async fn stop_child(child: &mut Child) -> std::io::Result<ExitStatus> {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    child.wait().await
}

fn exit_code(status: std::io::Result<ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(1),
            (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
            (None, None) => 1,
        },
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(Ok(ExitStatus::from_raw(3 << 8))), 3);
        assert_eq!(exit_code(Ok(ExitStatus::from_raw(15))), 143);
    }
}
