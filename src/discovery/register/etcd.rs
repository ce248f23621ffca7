//! `sluice register --etcd`: puts one backend into etcd under a lease and keeps the lease
//! alive, so the key lives exactly as long as the registrant (what the etcd source follows).
//! Deregistering revokes the lease, which deletes the key at once; a registrant killed
//! outright stops refreshing and etcd deletes the key when the TTL runs out.

use super::super::entry::entry_value;
use super::super::etcd_gateway::{Client, EtcdError};
use super::{BACKOFF_MAX, RegisterError, TIMEOUT, check_common};
use crate::error::Chain;
use std::net::SocketAddr;
use std::time::Duration;
use tracing::{info, warn};

/// What to register in etcd; built and checked by `EtcdOptions::new`.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    endpoints: Vec<String>,
    key: String,
    value: String,
    ttl: Duration,
}

impl EtcdOptions {
    pub fn new(
        endpoints: Vec<String>,
        prefix: &str,
        address: SocketAddr,
        weight: u32,
        ttl: Duration,
    ) -> Result<EtcdOptions, RegisterError> {
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
        // etcd leases count whole seconds; under 2 s a single slow refresh loses the key.
        check_common(weight, ttl)?;
        Ok(EtcdOptions {
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
    options: EtcdOptions,
    client: Client,
    lease: i64,
}

impl Registration {
    /// Grants a lease and puts the key under it.
    pub async fn register(options: EtcdOptions) -> Result<Registration, RegisterError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options(prefix: &str, weight: u32, ttl: u64) -> Result<EtcdOptions, RegisterError> {
        EtcdOptions::new(
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
            crate::discovery::entry::parse_entry("k", "10.0.0.7:8080", weighted.value.as_bytes());
        assert_eq!(parsed.unwrap().weight, 2);
    }

    #[test]
    fn bad_flags_are_named() {
        let flag = |result: Result<EtcdOptions, RegisterError>| match result {
            Err(RegisterError::Invalid { flag, .. }) => flag,
            other => panic!("{other:?}"),
        };
        assert_eq!(flag(options("/services/app", 1, 10)), "--prefix");
        assert_eq!(flag(options("/services/app/", 0, 10)), "--weight");
        assert_eq!(flag(options("/services/app/", 1, 1)), "--ttl");
        let https = EtcdOptions::new(
            vec!["https://e:2379".into()],
            "/a/",
            "10.0.0.7:1".parse().unwrap(),
            1,
            Duration::from_secs(10),
        );
        assert_eq!(flag(https), "--etcd");
    }
}
