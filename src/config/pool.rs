//! Validation of `pools:`: each pool's name, algorithm, stickiness, health checks,
//! resilience, discovery sources, upstream protocol and TLS, timeouts and PROXY header; and
//! the static backend list (also used for the backends of a discovery file).

use super::file::{self, RawPool};
use super::resilience::RetryPolicy;
use super::{
    BackendAddress, BackendConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_RESPONSE_TIMEOUT, MAX_WEIGHT, PoolConfig, PoolTimeouts, UpstreamProtocol, Validator,
    check_name, make_error,
};
use crate::error::ConfigError;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashSet};

impl Validator<'_> {
    /// Every pool under `pools:` (at least one), by name.
    pub(super) fn pools(
        &self,
        raw: Option<Spanned<BTreeMap<String, RawPool>>>,
    ) -> Result<BTreeMap<String, PoolConfig>, ConfigError> {
        let Some(raw_pools) = raw else {
            return Err(make_error(
                self.text,
                self.file,
                None,
                "pools".into(),
                "missing: at least one pool is needed".into(),
            ));
        };
        let mut pools = BTreeMap::new();
        for (name, pool) in raw_pools.value {
            let validated = self.pool(&name, pool)?;
            pools.insert(name, validated);
        }
        Ok(pools)
    }

    fn pool(&self, name: &str, raw: RawPool) -> Result<PoolConfig, ConfigError> {
        let path = format!("pools.{name}");
        let located = raw.backends.as_ref().map(|b| b.referenced);
        let located = located.or(raw.discovery.as_ref().map(|d| d.referenced));
        check_name(name).map_err(|message| match located {
            Some(at) => self.error_at(at, path.clone(), message),
            None => make_error(self.text, self.file, None, path.clone(), message),
        })?;
        let algorithm = self.algorithm(&path, &raw)?;
        let sticky = self.sticky(&path, raw.sticky.as_ref())?;
        let health = self.health(&path, &raw)?;
        let retry = self.retry(&path, raw.retry.as_ref())?;
        let timeouts = self.pool_timeouts(&path, raw.timeouts.as_ref(), &retry)?;
        let resilience = self.resilience(&path, &raw, retry, timeouts.response)?;
        let discovery = match &raw.discovery {
            None => Vec::new(),
            Some(discovery) => self.discovery(&path, discovery)?,
        };
        let backends = match &raw.backends {
            None if discovery.is_empty() => {
                return Err(make_error(
                    self.text,
                    self.file,
                    None,
                    path,
                    "needs backends, discovery, or both".into(),
                ));
            }
            None => Vec::new(),
            // With discovery, an empty static list is fine: the sources fill the pool.
            Some(list) if list.value.is_empty() && discovery.is_empty() => {
                return Err(self.error_at(
                    list.referenced,
                    format!("{path}.backends"),
                    "empty pool: list at least one backend (or add discovery)".into(),
                ));
            }
            Some(list) => self.backends(
                &format!("{path}.backends"),
                &list.value,
                resilience.limits.max_requests_per_backend,
            )?,
        };
        let protocol = self.upstream_protocol(&path, raw.protocol.as_ref())?;
        if protocol != UpstreamProtocol::H2
            && let (Some(check), Some(raw_check)) = (&health.active, &raw.health_check)
            && matches!(check.kind, super::health::CheckKind::Grpc(_))
        {
            return Err(self.error_at(
                raw_check.referenced,
                format!("{path}.health_check.type"),
                "gRPC health checks need protocol: h2 on the pool (gRPC runs over HTTP/2)".into(),
            ));
        }
        let tls = self.upstream_tls(&path, raw.tls.as_ref())?;
        if let (Some(tls), Some(list)) = (&tls, &raw.backends)
            && tls.verify
            && tls.sni.is_none()
            && backends.iter().any(|b| b.address.is_unix())
        {
            // A socket path names no host a certificate could be checked against.
            return Err(self.error_at(
                list.referenced,
                format!("{path}.tls.sni"),
                "unix socket backends over verified TLS need tls.sni (the name to check the certificate against)".into(),
            ));
        }
        Ok(PoolConfig {
            name: name.to_owned(),
            protocol,
            tls,
            algorithm,
            sticky,
            health,
            backends,
            discovery,
            timeouts,
            resilience,
            send_proxy: self.send_proxy(&path, raw.send_proxy.as_ref())?,
        })
    }

    /// `timeouts:` of a pool. Unset, `response` leaves room for every try a written
    /// `retry.per_try_timeout` allows: a per-try timeout of 90s under the 60s default would
    /// otherwise be cut short by a value the operator never wrote.
    fn pool_timeouts(
        &self,
        path: &str,
        raw: Option<&file::RawPoolTimeouts>,
        retry: &RetryPolicy,
    ) -> Result<PoolTimeouts, ConfigError> {
        let response_default = retry
            .time_for_all_tries()
            .map_or(DEFAULT_RESPONSE_TIMEOUT, |all| {
                DEFAULT_RESPONSE_TIMEOUT.max(all)
            });
        Ok(PoolTimeouts {
            connect: self.duration(
                raw.and_then(|t| t.connect.as_ref()),
                &format!("{path}.timeouts.connect"),
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            response: self.duration(
                raw.and_then(|t| t.response.as_ref()),
                &format!("{path}.timeouts.response"),
                response_default,
            )?,
            idle: self.duration(
                raw.and_then(|t| t.idle.as_ref()),
                &format!("{path}.timeouts.idle"),
                DEFAULT_IDLE_TIMEOUT,
            )?,
            total: self.optional_duration(
                raw.and_then(|t| t.total.as_ref()),
                &format!("{path}.timeouts.total"),
            )?,
        })
    }

    /// Validates a backend list (`pools.X.backends`, or a discovery file when `path` is
    /// empty). `default_max` is the pool's `limits.max_requests_per_backend`.
    pub(super) fn backends(
        &self,
        path: &str,
        entries: &[Spanned<file::RawBackend>],
        default_max: Option<u32>,
    ) -> Result<Vec<BackendConfig>, ConfigError> {
        let mut backends = Vec::with_capacity(entries.len());
        let mut seen = HashSet::new();
        for (index, entry) in entries.iter().enumerate() {
            let entry_path = format!("{path}[{index}]");
            let address: BackendAddress = entry.value.address.parse().map_err(|message| {
                self.error_at(entry.referenced, format!("{entry_path}.address"), message)
            })?;
            let weight = entry.value.weight.unwrap_or(1);
            if weight > MAX_WEIGHT {
                return Err(self.error_at(
                    entry.referenced,
                    format!("{entry_path}.weight"),
                    format!("must be between 0 and {MAX_WEIGHT}, got {weight}"),
                ));
            }
            if !seen.insert(address.clone()) {
                return Err(self.error_at(
                    entry.referenced,
                    format!("{entry_path}.address"),
                    format!("{address} is listed twice in this pool"),
                ));
            }
            let max_connections = entry.value.max_connections;
            if max_connections == Some(0) {
                return Err(self.error_at(
                    entry.referenced,
                    format!("{entry_path}.max_connections"),
                    "must be at least 1 (to stop sending traffic, use weight: 0)".into(),
                ));
            }
            backends.push(BackendConfig {
                address,
                weight,
                // `limits.max_requests_per_backend` is the pool-wide default.
                max_connections: max_connections.or(default_max),
            });
        }
        Ok(backends)
    }
}
