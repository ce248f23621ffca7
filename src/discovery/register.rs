//! `sluice register`: puts one backend into etcd under a lease and keeps the lease alive, so
//! the key lives exactly as long as the registrant (what the etcd source follows). SIGTERM or
//! SIGINT revokes the lease, which deletes the key at once; a registrant killed outright
//! stops refreshing and etcd deletes the key when the TTL runs out.
//!
//! With a command, the registration also ends when the child exits (and the exit status is
//! the child's); a signal deregisters first and then passes SIGTERM on to the child, so no
//! new traffic is sent to a backend that is shutting down.
//! Imports `config` (the weight limit), `entry` (the value format) and `etcd_gateway` (the
//! etcd calls); nothing of the running daemon.

use super::entry::entry_value;
use super::etcd_gateway::{Client, EtcdError};
use crate::config::MAX_WEIGHT;
use crate::error::Chain;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

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
    #[error("cannot run {command}")]
    Command {
        command: String,
        source: std::io::Error,
    },
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
}

/// What to register; built and checked by `RegisterOptions::new`.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    endpoints: Vec<String>,
    key: String,
    value: String,
    ttl: Duration,
}

impl RegisterOptions {
    pub fn new(
        endpoints: Vec<String>,
        prefix: &str,
        address: SocketAddr,
        weight: u32,
        ttl: Duration,
    ) -> Result<RegisterOptions, RegisterError> {
        let invalid = |flag, message: String| RegisterError::Invalid { flag, message };
        if endpoints.is_empty() {
            return Err(invalid("--etcd", "give at least one endpoint".into()));
        }
        for endpoint in &endpoints {
            // Same rule as the etcd source: plain HTTP to the JSON gateway, no TLS.
            let host = endpoint.strip_prefix("http://").unwrap_or_default();
            if host.is_empty() || host.contains('/') {
                return Err(invalid(
                    "--etcd",
                    format!("{endpoint:?}: expected http://HOST:PORT"),
                ));
            }
        }
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix == "/" {
            return Err(invalid(
                "--prefix",
                format!("{prefix:?}: write a key directory such as /services/app/"),
            ));
        }
        if weight == 0 || weight > MAX_WEIGHT {
            return Err(invalid(
                "--weight",
                format!("{weight}: must be between 1 and {MAX_WEIGHT}"),
            ));
        }
        // etcd leases count whole seconds; under 2 s a single slow refresh loses the key.
        if ttl < Duration::from_secs(2) {
            return Err(invalid("--ttl", "must be at least 2s".into()));
        }
        Ok(RegisterOptions {
            endpoints,
            key: format!("{prefix}{address}"),
            value: entry_value(weight),
            ttl,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// How often the lease is refreshed: three chances before it runs out.
    fn refresh_interval(&self) -> Duration {
        self.ttl / 3
    }
}

/// A live registration: the key is in etcd under `lease`.
pub struct Registration {
    options: RegisterOptions,
    client: Client,
    lease: i64,
}

impl Registration {
    /// Grants a lease and puts the key under it.
    pub async fn register(options: RegisterOptions) -> Result<Registration, RegisterError> {
        // Connects per call, each connection attempt and answer within TIMEOUT.
        let client = Client::new(&options.endpoints, TIMEOUT).map_err(etcd("connect"))?;
        let mut registration = Registration {
            options,
            client,
            lease: 0,
        };
        registration.put().await?;
        Ok(registration)
    }

    async fn put(&mut self) -> Result<(), RegisterError> {
        let ttl = i64::try_from(self.options.ttl.as_secs()).unwrap_or(i64::MAX);
        let grant = self.client.lease_grant(ttl).await;
        self.lease = grant.map_err(etcd("lease grant"))?.id;
        let put = self
            .client
            .put(&self.options.key, &self.options.value, Some(self.lease));
        put.await
            .map_err(etcd(&format!("put {}", self.options.key)))?;
        info!(key = %self.options.key, lease = self.lease, ttl = ?self.options.ttl, "registered");
        Ok(())
    }

    /// Refreshes the lease until cancelled (never returns otherwise). A failure is retried
    /// with a backoff; a lease that expired meanwhile (etcd unreachable for longer than the
    /// TTL) is replaced and the key put again, so the backend comes back by itself.
    pub async fn keep_alive(&mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = match self.refresh().await {
                Err(RegisterError::LeaseExpired) => match self.put().await {
                    Ok(()) => continue,
                    Err(error) => error,
                },
                Err(error) => error,
                Ok(never) => match never {},
            };
            warn!(error = %Chain(&error), "registration not refreshed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn refresh(&mut self) -> Result<std::convert::Infallible, RegisterError> {
        loop {
            let ttl = self.client.lease_keep_alive(self.lease).await;
            if ttl.map_err(etcd("lease keep-alive"))? <= 0 {
                return Err(RegisterError::LeaseExpired);
            }
            tokio::time::sleep(self.options.refresh_interval()).await;
        }
    }

    /// Revokes the lease: etcd deletes the key, and every watcher sees it go now.
    pub async fn deregister(self) -> Result<(), RegisterError> {
        let revoke = self.client.lease_revoke(self.lease).await;
        revoke.map_err(etcd("lease revoke"))?;
        info!(key = %self.options.key, "deregistered");
        Ok(())
    }
}

/// Names the etcd call that failed.
fn etcd(action: &str) -> impl FnOnce(EtcdError) -> RegisterError {
    let action = action.to_owned();
    move |source| RegisterError::Etcd { action, source }
}

/// Registers, keeps the registration while running, and deregisters on SIGTERM/SIGINT or
/// when `command`'s child exits. Returns the exit code: 0 after a signal without a command,
/// else the child's (128 + signal number if a signal ended it).
pub async fn run(options: RegisterOptions, command: &[String]) -> Result<u8, RegisterError> {
    // Handlers first: a SIGTERM that arrives while etcd is being asked must not kill us
    // with the key left behind for a whole TTL.
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
        // The lease still runs out after the TTL.
        warn!(error = %Chain(&error), "cannot deregister; the key goes when its lease expires");
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

    fn options(prefix: &str, weight: u32, ttl: u64) -> Result<RegisterOptions, RegisterError> {
        RegisterOptions::new(
            vec!["http://127.0.0.1:2379".into()],
            prefix,
            "10.0.0.7:8080".parse().unwrap(),
            weight,
            Duration::from_secs(ttl),
        )
    }

    #[test]
    fn the_key_and_value_follow_the_etcd_source_format() {
        let plain = options("/services/app/", 1, 10).unwrap();
        assert_eq!(plain.key(), "/services/app/10.0.0.7:8080");
        assert_eq!(plain.value, "");
        assert_eq!(plain.refresh_interval().as_millis(), 3333);
        let weighted = options("/services/app/", 2, 10).unwrap();
        let parsed =
            super::super::entry::parse_entry("k", "10.0.0.7:8080", weighted.value.as_bytes());
        assert_eq!(parsed.unwrap().weight, 2);
    }

    #[test]
    fn bad_flags_are_named() {
        let flag = |result: Result<RegisterOptions, RegisterError>| match result {
            Err(RegisterError::Invalid { flag, .. }) => flag,
            other => panic!("{other:?}"),
        };
        assert_eq!(flag(options("/services/app", 1, 10)), "--prefix");
        assert_eq!(flag(options("/services/app/", 0, 10)), "--weight");
        assert_eq!(flag(options("/services/app/", 1, 1)), "--ttl");
        let https = RegisterOptions::new(
            vec!["https://e:2379".into()],
            "/a/",
            "10.0.0.7:1".parse().unwrap(),
            1,
            Duration::from_secs(10),
        );
        assert_eq!(flag(https), "--etcd");
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(Ok(ExitStatus::from_raw(3 << 8))), 3);
        assert_eq!(exit_code(Ok(ExitStatus::from_raw(15))), 143);
    }
}
