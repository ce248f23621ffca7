//! Service discovery: one task per pool source (`dns.rs`, `file.rs`, `etcd.rs`,
//! `zookeeper.rs`, `consul/`) publishes the backends it currently sees into the registry
//! here (and, for Consul, the entries it left out and why). The registry keeps each source's set and status and wakes whoever waits on `changed`; the
//! server's wiring then hands every set (`sets`) to the control plane, which keeps them as a
//! layer of its state and rebuilds the snapshot through its one publish path: backend state is
//! kept by `(pool, address)`, removed backends drain, open connections stay. The etcd source
//! and `sluice register --etcd` (`register/`) talk to etcd through `etcd_gateway/`; the
//! Consul source and `sluice register --consul` through `consul/client.rs`.
//!
//! The tasks never touch the snapshot. `sync` starts and stops them to follow the config file
//! (the control plane calls it at each commit of a new file); a set counts only while the
//! running config has its source with the same settings, so a removed or changed source's
//! backends leave in the same snapshot as the source.
//!
//! Every source is advisory: a failure (unreachable registry, DNS error, broken file) keeps the
//! last good set and is reported in `/status` and `sluice_discovery_updates_total`.
//! Imports `config`, `metrics`, `watch` and `upstream::tls` (the Consul client's TLS); never
//! the control plane, the server or the proxy.

pub mod consul;
pub mod dns;
pub mod entry;
pub mod etcd;
pub mod etcd_gateway;
pub mod file;
pub mod register;
pub mod zookeeper;

use crate::config::discovery::{DiscoveredSet, DiscoverySource, SourceKind};
use crate::config::{BackendAddress, BackendConfig, Config};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

type SourceKey = (String, SourceKind);

/// The registry of discovered backends and the tasks that feed it.
#[derive(Default)]
pub struct Discovery {
    inner: Mutex<Inner>,
    /// Woken by every publish that changed a set; `notify_one` keeps a permit, so a change
    /// published while the applier is busy is not lost.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    sources: BTreeMap<SourceKey, Running>,
}

struct Running {
    /// Publishes from a task that was stopped (its settings changed) carry an old id and are
    /// ignored, so a late answer of a removed source cannot come back.
    id: u64,
    config: DiscoverySource,
    stop: CancellationToken,
    backends: Vec<BackendConfig>,
    status: SourceStatus,
}

/// One source's state, as `/status` shows it under each pool.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub source: &'static str,
    pub target: String,
    /// Backends this source contributes now.
    pub backends: usize,
    /// Unix seconds of the last successful read (`null`: none yet).
    pub last_update: Option<f64>,
    /// The last failure, kept until the next success.
    pub last_error: Option<String>,
    pub last_error_at: Option<f64>,
    /// Successful reads and failures since the source started.
    pub updates: u64,
    pub failures: u64,
    /// Entries the registry lists but that are not in the pool, each with why (a Consul
    /// instance in maintenance or with a critical check). Empty for the other sources.
    pub excluded: Vec<Excluded>,
}

/// An entry a source saw and left out of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    /// `IP:PORT`, or what the registry gave when that is not an address.
    pub address: String,
    pub reason: String,
}

/// Where a backend came from: `config` (the file) or a discovery source, and when it was
/// last seen there (Unix seconds).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Origin {
    pub source: &'static str,
    pub last_seen: Option<f64>,
}

impl SourceStatus {
    /// A source that has not read anything yet.
    pub fn new(source: &'static str, target: String) -> SourceStatus {
        SourceStatus {
            source,
            target,
            backends: 0,
            last_update: None,
            last_error: None,
            last_error_at: None,
            updates: 0,
            failures: 0,
            excluded: Vec::new(),
        }
    }
}

/// What a source task holds to report to the registry.
#[derive(Clone)]
pub struct Publisher {
    discovery: Weak<Discovery>,
    pool: String,
    kind: SourceKind,
    id: u64,
}

impl Publisher {
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// A successful read: `backends` is the source's complete current set.
    pub fn publish(&self, backends: Vec<BackendConfig>) {
        self.publish_with_excluded(backends, Vec::new());
    }

    /// A successful read that also left entries out (shown in `/status` with the reason).
    pub fn publish_with_excluded(
        &self,
        mut backends: Vec<BackendConfig>,
        mut excluded: Vec<Excluded>,
    ) {
        excluded.sort_by(|a, b| a.address.cmp(&b.address));
        backends.sort_by(|a, b| a.address.cmp(&b.address));
        backends.dedup_by(|a, b| a.address == b.address);
        self.metric("success");
        self.update(|running| {
            running.status.last_update = Some(crate::clock::unix_seconds());
            running.status.last_error = None;
            running.status.updates += 1;
            running.status.backends = backends.len();
            running.status.excluded = excluded;
            let changed = running.backends != backends;
            running.backends = backends;
            changed
        });
    }

    /// A failed read: the last good set stays.
    pub fn fail(&self, error: &str) {
        self.metric("failure");
        self.update(|running| {
            if running.status.last_error.as_deref() != Some(error) {
                warn!(pool = %self.pool, source = self.kind.as_str(), %error,
                    "discovery failed; keeping the last known backends");
            }
            running.status.last_error = Some(error.to_owned());
            running.status.last_error_at = Some(crate::clock::unix_seconds());
            running.status.failures += 1;
            false
        });
    }

    /// Drops the set (DNS `max_stale` passed): the pool keeps only its other backends.
    pub fn withdraw(&self, reason: &str) {
        self.update(|running| {
            let changed = !running.backends.is_empty();
            if changed {
                warn!(pool = %self.pool, source = self.kind.as_str(), reason,
                    "discovered backends withdrawn");
            }
            running.backends.clear();
            running.status.backends = 0;
            changed
        });
    }

    fn metric(&self, result: &'static str) {
        crate::metrics::discovery_update(&self.pool, self.kind.as_str(), result);
    }

    fn update(&self, change: impl FnOnce(&mut Running) -> bool) {
        let Some(discovery) = self.discovery.upgrade() else {
            return;
        };
        let changed = {
            let mut inner = lock(&discovery.inner);
            match inner.sources.get_mut(&(self.pool.clone(), self.kind)) {
                Some(running) if running.id == self.id => change(running),
                _ => false,
            }
        };
        if changed {
            discovery.changed.notify_one();
        }
    }
}

impl Discovery {
    /// Starts, restarts and stops source tasks so they match `config`. A source whose
    /// settings are unchanged keeps running and keeps its set; a removed or changed one is
    /// stopped and its set dropped at once (the next snapshot no longer has its backends).
    pub fn sync(self: &Arc<Self>, config: &Config, shutdown: &CancellationToken) {
        let wanted: BTreeMap<SourceKey, &DiscoverySource> = config
            .pools
            .values()
            .flat_map(|pool| {
                pool.discovery
                    .iter()
                    .map(|source| ((pool.name.clone(), source.kind()), source))
            })
            .collect();
        let mut inner = lock(&self.inner);
        inner.sources.retain(|key, running| {
            let keep = wanted.get(key) == Some(&&running.config);
            if !keep {
                info!(pool = %key.0, source = key.1.as_str(), "discovery source stopped");
                running.stop.cancel();
            }
            keep
        });
        for (key, source) in wanted {
            if inner.sources.contains_key(&key) {
                continue;
            }
            inner.next_id += 1;
            let id = inner.next_id;
            let stop = shutdown.child_token();
            let publisher = Publisher {
                discovery: Arc::downgrade(self),
                pool: key.0.clone(),
                kind: key.1,
                id,
            };
            info!(pool = %key.0, source = key.1.as_str(), target = %source.target(),
                "discovery source started");
            match source {
                DiscoverySource::Dns(dns) => {
                    tokio::spawn(dns::run(dns.clone(), publisher, stop.clone()));
                }
                DiscoverySource::File(file) => {
                    tokio::spawn(file::run(file.clone(), publisher, stop.clone()));
                }
                DiscoverySource::Etcd(etcd) => {
                    tokio::spawn(etcd::run(etcd.clone(), publisher, stop.clone()));
                }
                DiscoverySource::ZooKeeper(zk) => {
                    tokio::spawn(zookeeper::run(zk.clone(), publisher, stop.clone()));
                }
                DiscoverySource::Consul(consul) => {
                    tokio::spawn(consul::run(consul.clone(), publisher, stop.clone()));
                }
            }
            let status = SourceStatus::new(key.1.as_str(), source.target());
            inner.sources.insert(
                key,
                Running {
                    id,
                    config: source.clone(),
                    stop,
                    backends: Vec::new(),
                    status,
                },
            );
        }
    }

    /// Every source's current set, in a fixed order (pool, then dns, file, etcd, zookeeper,
    /// consul).
    pub fn sets(&self) -> Vec<DiscoveredSet> {
        let inner = lock(&self.inner);
        (inner.sources.iter())
            .map(|((pool, _), running)| DiscoveredSet {
                pool: pool.clone(),
                source: running.config.clone(),
                backends: running.backends.clone(),
            })
            .collect()
    }

    /// Every source's status, by pool.
    pub fn status(&self) -> BTreeMap<String, Vec<SourceStatus>> {
        let inner = lock(&self.inner);
        let mut out: BTreeMap<String, Vec<SourceStatus>> = BTreeMap::new();
        for ((pool, _), running) in &inner.sources {
            out.entry(pool.clone())
                .or_default()
                .push(running.status.clone());
        }
        out
    }

    /// Which sources list each discovered backend now, and when each last read its set
    /// (a read returns the whole set, so that is when the backend was last seen there).
    pub fn origins(&self) -> BTreeMap<(String, BackendAddress), Vec<Origin>> {
        let inner = lock(&self.inner);
        let mut out: BTreeMap<(String, BackendAddress), Vec<Origin>> = BTreeMap::new();
        for ((pool, _), running) in &inner.sources {
            for backend in &running.backends {
                out.entry((pool.clone(), backend.address.clone()))
                    .or_default()
                    .push(Origin {
                        source: running.status.source,
                        last_seen: running.status.last_update,
                    });
            }
        }
        out
    }

    /// Resolves when a source published a changed set since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
