//! The registry of running probe tasks: one per backend with an active check, started and
//! stopped as reloads change pools (`Probes::sync`, after every snapshot swap). The probes
//! themselves are `probe_loop` in the parent module.

use super::probe_loop;
use crate::config::BackendAddress;
use crate::config::health::ActiveCheck;
use crate::state::{Pool, SharedSnapshot};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The running probe tasks, one per backend with an active check, keyed by identity: pool,
/// then address.
#[derive(Default)]
pub struct Probes {
    tasks: Mutex<Tasks>,
}

#[derive(Default)]
struct Tasks {
    by_pool: HashMap<String, HashMap<BackendAddress, (ActiveCheck, CancellationToken)>>,
    /// The pools the tasks were last synced with. A reload keeps an unchanged pool's
    /// `Arc<Pool>` (`Snapshot::build`), and the same `Arc` means the same backends and check:
    /// such a pool is skipped, so a reload that changes one backend of 10,000 costs one pool's
    /// work here, not a map of every backend (holding the `Arc`s means an address seen here
    /// cannot be a new pool's).
    synced: HashMap<String, Arc<Pool>>,
}

impl Probes {
    /// Starts probes for backends that gained a check (or whose check changed) and stops
    /// those of backends that left the config. Called after every snapshot swap.
    pub fn sync(&self, snapshot: &SharedSnapshot, shutdown: &CancellationToken) {
        let current = snapshot.load_full();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let Tasks { by_pool, synced } = &mut *tasks;
        by_pool.retain(|name, running| {
            let keep = current.pools.contains_key(name);
            if !keep {
                running.values().for_each(|(_, stop)| stop.cancel());
            }
            keep
        });
        for (name, pool) in &current.pools {
            if synced.get(name).is_some_and(|old| Arc::ptr_eq(old, pool)) {
                continue;
            }
            let running = by_pool.entry(name.clone()).or_default();
            sync_pool(name, pool, running, snapshot, shutdown);
            if running.is_empty() {
                by_pool.remove(name);
            }
        }
        *synced = current
            .pools
            .iter()
            .map(|(name, pool)| (name.clone(), Arc::clone(pool)))
            .collect();
    }
}

/// One pool's probes to its backends and check.
fn sync_pool(
    name: &str,
    pool: &Pool,
    running: &mut HashMap<BackendAddress, (ActiveCheck, CancellationToken)>,
    snapshot: &SharedSnapshot,
    shutdown: &CancellationToken,
) {
    let check = pool.config.health.active.as_ref();
    let wanted: HashMap<&BackendAddress, &ActiveCheck> = check
        .map(|check| pool.backends.iter().map(|b| (&b.address, check)).collect())
        .unwrap_or_default();
    running.retain(|address, (check, stop)| {
        let keep = wanted.get(address) == Some(&&*check);
        if !keep {
            stop.cancel();
        }
        keep
    });
    for (address, check) in wanted {
        if running.contains_key(address) {
            continue;
        }
        let stop = shutdown.child_token();
        tokio::spawn(probe_loop(
            name.to_owned(),
            address.clone(),
            snapshot.clone(),
            stop.clone(),
        ));
        running.insert(address.clone(), (check.clone(), stop));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::state::Snapshot;
    use arc_swap::ArcSwap;

    /// Pools `a` and `b` as `pools` says (YAML lines under `pools:`).
    fn config(pools: &str) -> Arc<Config> {
        let yaml = format!("listeners:\n  web: {{bind: 127.0.0.1:0, pool: a}}\npools:\n{pools}");
        Arc::new(Config::parse(&yaml, "t.yaml").unwrap())
    }

    fn tokens(probes: &Probes) -> HashMap<(String, String), CancellationToken> {
        let tasks = probes.tasks.lock().unwrap();
        let mut out = HashMap::new();
        for (pool, running) in &tasks.by_pool {
            for (address, (_, stop)) in running {
                out.insert((pool.clone(), address.to_string()), stop.clone());
            }
        }
        out
    }

    fn key(pool: &str, address: &str) -> (String, String) {
        (pool.to_owned(), address.to_owned())
    }

    /// A reload touches the probes of the pools it changed: a moved backend's probe stops
    /// and its new address gets one, a removed pool's probes stop, a pool without a check
    /// any more loses its probes; the probes of unchanged pools run on, untouched.
    #[tokio::test(start_paused = true)]
    async fn a_reload_starts_and_stops_the_probes_of_what_changed() {
        let check = "health_check: {path: /h, interval: 1h}";
        let first = config(&format!(
            "  a: {{backends: ['127.0.0.1:9', '127.0.0.2:9'], {check}}}\n  \
             b: {{backends: ['127.0.0.3:9'], {check}}}\n"
        ));
        let snapshot: SharedSnapshot =
            Arc::new(ArcSwap::from_pointee(Snapshot::build(first, None)));
        let shutdown = CancellationToken::new();
        let probes = Probes::default();
        probes.sync(&snapshot, &shutdown);
        let before = tokens(&probes);
        assert_eq!(before.len(), 3);

        let swap = |pools: &str| {
            let next = Snapshot::build(config(pools), Some(&snapshot.load()));
            snapshot.store(Arc::new(next));
            probes.sync(&snapshot, &shutdown);
            tokens(&probes)
        };
        let moved = swap(&format!(
            "  a: {{backends: ['127.0.0.1:9', '127.0.0.4:9'], {check}}}\n  \
             b: {{backends: ['127.0.0.3:9'], {check}}}\n"
        ));
        assert!(before[&key("a", "127.0.0.2:9")].is_cancelled());
        assert!(!before[&key("a", "127.0.0.1:9")].is_cancelled());
        assert!(!before[&key("b", "127.0.0.3:9")].is_cancelled());
        assert!(moved.contains_key(&key("a", "127.0.0.4:9")));
        assert_eq!(moved.len(), 3);

        let without_b = swap(&format!(
            "  a: {{backends: ['127.0.0.1:9', '127.0.0.4:9'], {check}}}\n"
        ));
        assert!(before[&key("b", "127.0.0.3:9")].is_cancelled());
        assert!(!moved[&key("a", "127.0.0.4:9")].is_cancelled());
        assert_eq!(without_b.len(), 2);

        let unchecked = swap("  a: {backends: ['127.0.0.1:9', '127.0.0.4:9']}\n");
        assert!(unchecked.is_empty());
        assert!(without_b.values().all(CancellationToken::is_cancelled));
        assert!(probes.tasks.lock().unwrap().by_pool.is_empty());
        shutdown.cancel();
    }
}
