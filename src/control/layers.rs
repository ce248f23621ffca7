//! The layers of control state and the one function that combines them: the config file as
//! loaded, the backend sets discovery sources see, and runtime weight overrides from the admin
//! API. `Layers::effective` is the only place the config a snapshot is built from is made.
//!
//! Pure: no I/O, no locks; the owner (`Control`) keeps one `Layers` and replaces it whole at
//! each commit.

use crate::config::discovery::DiscoveredSet;
use crate::config::{BackendAddress, BackendConfig, Config};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Weights set at runtime, by `(pool, address)`.
pub type Weights = BTreeMap<(String, BackendAddress), u32>;

#[derive(Debug, Clone)]
pub struct Layers {
    /// The config file as loaded (before start-up: an empty config).
    pub file: Arc<Config>,
    /// The text of that file, for `GET /config` (`None`: not started from a file).
    pub text: Option<String>,
    /// Every source's current set, in a fixed order (pool, then dns, file, etcd, zookeeper).
    pub discovered: Vec<DiscoveredSet>,
    pub weights: Weights,
}

impl Layers {
    /// What runs before start-up: no listeners, no pools. Start-up is a change from it.
    pub fn empty(like: &Config) -> Layers {
        let file = Config {
            watch: false,
            runtime: like.runtime.clone(),
            admin: None,
            listeners: BTreeMap::new(),
            pools: BTreeMap::new(),
        };
        Layers {
            file: Arc::new(file),
            text: None,
            discovered: Vec::new(),
            weights: Weights::new(),
        }
    }

    /// The config the snapshot is built from: the file's, with every discovered backend
    /// appended to its pool, then the runtime weights applied.
    ///
    /// A static backend wins over a discovered one with the same address (its weight and limit
    /// apply); a discovered backend gets the pool's default limit. A set whose source the file
    /// no longer has (or has with other settings) is left out. A weight whose backend is not in
    /// the result is ignored here and dropped by `retain_weights`.
    pub fn effective(&self) -> Config {
        let mut config = (*self.file).clone();
        for set in &self.discovered {
            let Some(pool) = config.pools.get_mut(&set.pool) else {
                continue;
            };
            if !pool.discovery.contains(&set.source) {
                continue;
            }
            let default_max = pool.resilience.limits.max_requests_per_backend;
            let mut present: HashSet<_> = pool.backends.iter().map(|b| b.address.clone()).collect();
            for backend in &set.backends {
                if present.insert(backend.address.clone()) {
                    pool.backends.push(BackendConfig {
                        max_connections: backend.max_connections.or(default_max),
                        ..backend.clone()
                    });
                }
            }
        }
        for ((pool, address), weight) in &self.weights {
            if let Some(backend) = config
                .pools
                .get_mut(pool)
                .and_then(|p| p.backends.iter_mut().find(|b| b.address == *address))
            {
                backend.weight = *weight;
            }
        }
        config
    }

    /// Drops what no longer applies to `effective` (the config just made from these layers):
    /// the sets of sources the file stopped having, and the weights of backends that left
    /// their pool. Weights are kept across reloads while their backend stays.
    pub fn retain_for(&mut self, effective: &Config) {
        let file = Arc::clone(&self.file);
        self.discovered.retain(|set| {
            file.pools
                .get(&set.pool)
                .is_some_and(|p| p.discovery.contains(&set.source))
        });
        self.weights.retain(|(pool, address), _| {
            effective
                .pools
                .get(pool)
                .is_some_and(|p| p.backends.iter().any(|b| b.address == *address))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::discovery::{DiscoverySource, FileSource};
    use std::net::SocketAddr;

    const BASE: &str = "listeners:\n  web: {bind: '127.0.0.1:0', pool: app}\npools:\n  app:\n    backends: [127.0.0.1:9001]\n    limits: {max_requests_per_backend: 7}\n    discovery:\n      file: /nonexistent/backends.yaml\n";

    fn backend(port: u16, weight: u32) -> BackendConfig {
        BackendConfig {
            address: SocketAddr::from(([127, 0, 0, 1], port)).into(),
            weight,
            max_connections: None,
        }
    }

    fn layers(text: &str) -> Layers {
        let config = Config::parse(text, "t.yaml").expect("valid");
        Layers {
            file: Arc::new(config),
            text: None,
            discovered: Vec::new(),
            weights: Weights::new(),
        }
    }

    fn file_set(backends: Vec<BackendConfig>) -> DiscoveredSet {
        DiscoveredSet {
            pool: "app".into(),
            source: DiscoverySource::File(FileSource {
                path: "/nonexistent/backends.yaml".into(),
            }),
            backends,
        }
    }

    fn ports(config: &Config) -> Vec<(u16, u32)> {
        config.pools["app"]
            .backends
            .iter()
            .map(|b| (b.address.inet().map_or(0, |a| a.port()), b.weight))
            .collect()
    }

    #[test]
    fn discovered_backends_merge_after_static_ones_and_static_wins() {
        let mut layers = layers(BASE);
        layers.discovered = vec![file_set(vec![backend(9001, 9), backend(9002, 3)])];
        let effective = layers.effective();
        assert_eq!(
            ports(&effective),
            [(9001, 1), (9002, 3)],
            "the static entry wins"
        );
        assert_eq!(
            effective.pools["app"].backends[1].max_connections,
            Some(7),
            "pool default limit applies to discovered backends"
        );
    }

    #[test]
    fn a_set_counts_only_while_the_file_has_its_source() {
        let mut layers = layers(BASE);
        layers.discovered = vec![file_set(vec![backend(9002, 1)])];
        let without = BASE.replace(
            "    discovery:\n      file: /nonexistent/backends.yaml\n",
            "",
        );
        layers.file = Arc::new(Config::parse(&without, "t.yaml").expect("valid"));
        assert_eq!(ports(&layers.effective()), [(9001, 1)]);
        let effective = layers.effective();
        layers.retain_for(&effective);
        assert!(layers.discovered.is_empty());
    }

    #[test]
    fn weights_apply_to_static_and_discovered_backends_and_leave_with_them() {
        let mut layers = layers(BASE);
        layers.discovered = vec![file_set(vec![backend(9002, 1)])];
        for port in [9001, 9002] {
            let address = SocketAddr::from(([127, 0, 0, 1], port)).into();
            layers.weights.insert(("app".into(), address), 5);
        }
        assert_eq!(ports(&layers.effective()), [(9001, 5), (9002, 5)]);
        // The discovered backend leaves: its weight goes with it, the static one's stays.
        layers.discovered = vec![file_set(Vec::new())];
        let effective = layers.effective();
        layers.retain_for(&effective);
        assert_eq!(layers.weights.len(), 1);
        assert_eq!(ports(&layers.effective()), [(9001, 5)]);
    }
}
