//! The immutable snapshot every connection and request routes by, and its builder.
//!
//! `Snapshot::build(config, previous)` is the one place a config becomes runtime objects. It
//! looks each backend up by identity `(pool, address)` in the previous snapshot and reuses its
//! `Arc<BackendState>`, so in-flight counts (and later health and ejection) survive a reload.
//! The `ArcSwap` holding the current snapshot has a single writer (the control plane's commit); the data
//! path only `load()`s it.

use crate::backend::{Backend, BackendId, BackendState, SlotQueue};
use crate::balance::Balancer;
use crate::config::{BackendAddress, Config, ListenerConfig, PoolConfig, RouteAction};
use crate::resilience::budget::RetryBudget;
use crate::route::{Route, Router};
use crate::upstream::{UpstreamClient, client_reusable};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How far back the retry budget looks (tower and Envoy use 10 s).
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub pools: HashMap<String, Arc<Pool>>,
    /// One compiled route table per listener (TCP listeners: only the default pool).
    pub routers: HashMap<String, Router<Target>>,
    /// Each listener's edge state (rate-limit buckets, connections per client, refusals),
    /// carried from the previous snapshot by listener and rule (`crate::edge`).
    pub edge: HashMap<String, Arc<crate::edge::EdgeState>>,
}

/// Where a route sends its requests, resolved to this snapshot's pools.
#[derive(Debug)]
pub struct Target {
    /// With their split weights; one entry for a plain `pool:`, none for a redirect or a
    /// direct answer (the route's `action` says which).
    pub pools: Vec<(Arc<Pool>, u32)>,
    /// The shadow pool of `mirror:`.
    pub mirror: Option<Arc<Pool>>,
}

impl Target {
    fn one(pool: Arc<Pool>) -> Target {
        Target {
            pools: vec![(pool, 1)],
            mirror: None,
        }
    }
}

#[derive(Debug)]
pub struct Pool {
    pub config: PoolConfig,
    /// The pool's name, shared cheaply with per-request work (metric labels).
    pub name: Arc<str>,
    /// Set while too few backends are healthy (`panic_threshold`); shared by every backend's
    /// health cell and carried across reloads like the backends themselves.
    pub panic: Arc<AtomicBool>,
    /// Requests waiting for a backend slot (`limits.max_pending`).
    pub queue: Arc<SlotQueue>,
    /// Mirrored copies in flight to this pool (as a route's shadow); carried across reloads
    /// so a reload does not reset the bound on them.
    pub mirrors_in_flight: Arc<AtomicUsize>,
    /// Recent requests and retries; kept across reloads while the retry policy is unchanged.
    pub budget: Arc<Mutex<RetryBudget>>,
    pub backends: Vec<Backend>,
    pub balancer: Balancer,
    pub client: UpstreamClient,
}

impl Snapshot {
    pub fn build(config: Arc<Config>, previous: Option<&Snapshot>) -> Snapshot {
        let pools = config
            .pools
            .values()
            .map(|pool_config| {
                let old_pool = previous.and_then(|p| p.pools.get(&pool_config.name));
                // An unchanged pool is the same pool: its backends (state carried by
                // identity), balancer and upstream client are all a function of its config,
                // so a reload costs what changed, not the whole config (10,000 backends).
                let pool = match old_pool {
                    Some(old) if old.config == *pool_config => Arc::clone(old),
                    _ => Arc::new(Pool::build(pool_config, old_pool.map(Arc::as_ref))),
                };
                (pool_config.name.clone(), pool)
            })
            .collect();
        let routers = config
            .listeners
            .values()
            .map(|listener| (listener.name.clone(), compile_routes(listener, &pools)))
            .collect();
        let edge = config
            .listeners
            .values()
            .map(|listener| {
                let old = previous.and_then(|p| {
                    Some((p.listener(&listener.name)?, &**p.edge.get(&listener.name)?))
                });
                let state = crate::edge::EdgeState::build(listener, old);
                (listener.name.clone(), Arc::new(state))
            })
            .collect();
        Snapshot {
            config,
            pools,
            routers,
            edge,
        }
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.config.listeners.get(name)
    }

    /// The default pool of a listener in this snapshot (the one TCP connections go to).
    pub fn pool_for_listener(&self, listener: &str) -> Option<&Arc<Pool>> {
        self.routers
            .get(listener)?
            .default_target()
            .and_then(|t| t.pools.first())
            .map(|(pool, _)| pool)
    }

    /// A listener's edge state (every listener of the snapshot has one).
    pub fn edge(&self, listener: &str) -> Option<&Arc<crate::edge::EdgeState>> {
        self.edge.get(listener)
    }

    pub fn router(&self, listener: &str) -> Option<&Router<Target>> {
        self.routers.get(listener)
    }
}

/// Resolves route and default pool names to the snapshot's pools once, so a request never
/// looks a pool up by name. Validation guarantees every name exists.
fn compile_routes(listener: &ListenerConfig, pools: &HashMap<String, Arc<Pool>>) -> Router<Target> {
    let routes = listener
        .routes
        .iter()
        .map(|route| {
            let target = match &route.action {
                RouteAction::Forward(forward) => Target {
                    pools: forward
                        .pools
                        .iter()
                        .filter_map(|w| Some((Arc::clone(pools.get(&w.pool)?), w.weight)))
                        .collect(),
                    mirror: forward
                        .mirror
                        .as_ref()
                        .and_then(|m| pools.get(&m.pool))
                        .cloned(),
                },
                RouteAction::Redirect(_) | RouteAction::Respond(_) => Target {
                    pools: Vec::new(),
                    mirror: None,
                },
            };
            Route {
                config: route.clone(),
                target,
            }
        })
        .collect();
    let default = listener
        .pool
        .as_ref()
        .and_then(|name| pools.get(name))
        .cloned()
        .map(Target::one);
    Router::new(routes, default)
}

impl Pool {
    fn build(config: &PoolConfig, previous: Option<&Pool>) -> Pool {
        let panic = previous.map_or_else(Arc::default, |p| Arc::clone(&p.panic));
        let queue = previous.map_or_else(Arc::default, |p| Arc::clone(&p.queue));
        let mirrors_in_flight =
            previous.map_or_else(Arc::default, |p| Arc::clone(&p.mirrors_in_flight));
        let retry = &config.resilience.retry;
        let budget = match previous {
            Some(old) if old.config.resilience.retry == *retry => Arc::clone(&old.budget),
            _ => Arc::new(Mutex::new(RetryBudget::new(
                retry.budget_ratio,
                retry.budget_min_per_second,
                BUDGET_WINDOW,
            ))),
        };
        let now = tokio::time::Instant::now();
        let breaker = config.resilience.breaker.clone().map(Arc::new);
        // By address, hashed: a pool may hold thousands of (discovered) backends.
        let old_states: HashMap<&BackendAddress, &Arc<BackendState>> = previous
            .map(|p| p.backends.iter().map(|b| (&b.address, &b.state)).collect())
            .unwrap_or_default();
        let backends: Vec<Backend> = config
            .backends
            .iter()
            .map(|backend| {
                let reused = old_states
                    .get(&backend.address)
                    .map(|state| Arc::clone(state));
                let state = reused.unwrap_or_else(|| {
                    let id = BackendId {
                        pool: config.name.clone(),
                        address: backend.address.clone(),
                    };
                    BackendState::with_health(
                        id,
                        &config.health,
                        now,
                        Arc::clone(&panic),
                        Arc::clone(&queue),
                    )
                });
                Backend {
                    address: backend.address.clone(),
                    weight: backend.weight,
                    max_connections: backend.max_connections,
                    breaker: breaker.clone(),
                    state,
                }
            })
            .collect();
        let client = match previous {
            Some(old) if client_reusable(&old.config, config) => {
                // Kept connections to backends this snapshot no longer has are closed now,
                // not left open until traffic on the pool sweeps them.
                let kept: HashSet<&BackendAddress> = backends.iter().map(|b| &b.address).collect();
                old.client
                    .retain_backends(&|address| kept.contains(address));
                old.client.clone()
            }
            _ => UpstreamClient::new(config),
        };
        let pool = Pool {
            name: Arc::from(config.name.as_str()),
            panic,
            queue,
            mirrors_in_flight,
            budget,
            balancer: Balancer::new(&config.algorithm, &backends),
            config: config.clone(),
            backends,
            client,
        };
        pool.update_panic();
        pool
    }

    /// Recomputes panic mode from the backends' health; returns the new value when it changed.
    pub fn update_panic(&self) -> Option<bool> {
        // Drained backends are out by the operator's choice, not failing: they count neither
        // as healthy nor towards the total.
        let total = self
            .backends
            .iter()
            .filter(|b| b.weight > 0 && !b.state.health.is_drained())
            .count();
        let healthy = self
            .backends
            .iter()
            .filter(|b| b.weight > 0 && b.state.health.is_healthy())
            .count();
        let panic =
            crate::health::machine::in_panic(healthy, total, self.config.health.panic_threshold);
        let before = self.panic.swap(panic, Ordering::Relaxed);
        (before != panic).then_some(panic)
    }

    /// How many of the pool's backends passive detection has ejected right now.
    pub fn ejected_count(&self) -> usize {
        self.backends
            .iter()
            .filter(|b| b.state.health.is_ejected())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "listeners:\n  web: {bind: '127.0.0.1:0', pool: app}\npools:\n  app:\n    backends: [127.0.0.1:9001, 127.0.0.1:9002]\n";

    fn snapshot(text: &str, previous: Option<&Snapshot>) -> Snapshot {
        let config = Config::parse(text, "t.yaml").expect("valid");
        Snapshot::build(Arc::new(config), previous)
    }

    #[tokio::test]
    async fn rebuild_keeps_backend_state_by_identity_even_when_reweighted() {
        let first = snapshot(CONFIG, None);
        let guard = first.pools["app"].backends[1].state.acquire();
        let reweighted = CONFIG.replace(
            "127.0.0.1:9002]",
            "{address: 127.0.0.1:9002, weight: 5}, 127.0.0.1:9003]",
        );
        let second = snapshot(&reweighted, Some(&first));
        let pool = &second.pools["app"];
        assert_eq!(pool.backends[1].weight, 5);
        assert!(Arc::ptr_eq(&pool.backends[1].state, guard.backend()));
        assert_eq!(pool.backends[1].state.in_flight(), 1);
        assert_eq!(
            pool.backends[2].state.in_flight(),
            0,
            "new backend, new state"
        );
        assert_eq!(
            second
                .pool_for_listener("web")
                .map(|p| p.config.name.as_str()),
            Some("app")
        );
    }

    #[tokio::test]
    async fn a_reload_rebuilds_only_the_pools_that_changed() {
        let two_pools = format!("{CONFIG}  other:\n    backends: [127.0.0.1:9005]\n");
        let first = snapshot(&two_pools, None);
        let changed = two_pools.replace("127.0.0.1:9005", "127.0.0.1:9006");
        let second = snapshot(&changed, Some(&first));
        assert!(
            Arc::ptr_eq(&first.pools["app"], &second.pools["app"]),
            "unchanged pool kept whole"
        );
        assert!(!Arc::ptr_eq(&first.pools["other"], &second.pools["other"]));
        assert_eq!(
            second.pools["other"].backends[0].address.to_string(),
            "127.0.0.1:9006"
        );
        // Routes point at the pools of the new snapshot.
        let routed = second.pool_for_listener("web").expect("default pool");
        assert!(Arc::ptr_eq(routed, &second.pools["app"]));
    }
}
