//! The pure reload plan: what changes between the running config and a new one.
//!
//! The control plane's transaction (`control::transaction`) follows it: bind (or take over)
//! the listeners in `bind`, build the new snapshot, swap, then stop the listeners in `stop`.
//! `sluice check --diff OLD` prints it, so an operator can see what a reload will do before
//! sending SIGHUP.

use super::{BackendAddress, BackendConfig};
use super::{Config, ListenerConfig, PoolConfig, RuntimeConfig};
use std::collections::{HashMap, HashSet};
use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    pub listeners_added: Vec<String>,
    pub listeners_removed: Vec<String>,
    /// Same name, new address: a new socket is bound, the old one stops accepting.
    pub listeners_rebound: Vec<String>,
    /// Same socket, other settings (protocol, pool, routes, PROXY protocol, timeouts): new
    /// connections (HTTP: new requests) use them.
    pub listeners_changed: Vec<String>,
    /// For changed listeners: which HTTP edge settings changed (redirects, direct answers,
    /// traffic splits, mirrors, error pages, compression).
    pub listener_edge_changes: Vec<(String, Vec<&'static str>)>,
    pub admin_rebound: bool,
    /// `runtime.worker_threads`, `scheduler` or `accept` changed: read at start only, so the
    /// change waits for a restart or a binary upgrade (SIGUSR2).
    pub runtime_needs_restart: bool,
    pub pools_added: Vec<String>,
    pub pools_removed: Vec<String>,
    pub pools_changed: Vec<PoolChange>,
    /// Edge rules added, removed or changed, one line each (`edge::edge_changes`).
    pub edge_changes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolChange {
    pub pool: String,
    pub backends_added: Vec<BackendAddress>,
    pub backends_removed: Vec<BackendAddress>,
    /// (address, old weight, new weight)
    pub backends_reweighted: Vec<(BackendAddress, u32, u32)>,
    /// Algorithm or timeouts changed.
    pub settings_changed: bool,
    /// Discovery sources added, removed or changed: their tasks restart.
    pub discovery_changed: bool,
}

impl ReloadPlan {
    pub fn is_empty(&self) -> bool {
        *self == ReloadPlan::default()
    }

    /// Listeners that need a new socket bound before the swap.
    pub fn listeners_to_bind(&self) -> impl Iterator<Item = &String> {
        self.listeners_added.iter().chain(&self.listeners_rebound)
    }

    /// Listeners whose old socket stops accepting after the swap.
    pub fn listeners_to_stop(&self) -> impl Iterator<Item = &String> {
        self.listeners_removed.iter().chain(&self.listeners_rebound)
    }
}

/// Whether the thread settings differ. A new file without `worker_threads` keeps the running
/// count: the binary fills in its one-per-CPU default at start, so the running config has a
/// number where the file has none.
fn threads_changed(old: &RuntimeConfig, new: &RuntimeConfig) -> bool {
    let threads = new
        .worker_threads
        .is_some_and(|threads| Some(threads) != old.worker_threads);
    threads || old.scheduler != new.scheduler || old.accept != new.accept
}

pub fn diff(old: &Config, new: &Config) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    for (name, listener) in &new.listeners {
        match old.listeners.get(name) {
            None => plan.listeners_added.push(name.clone()),
            Some(before) if before.bind != listener.bind => {
                plan.listeners_rebound.push(name.clone())
            }
            Some(before) if !same_listener_settings(before, listener) => {
                plan.listeners_changed.push(name.clone());
                let edge = super::diff_edge::edge_changes(before, listener);
                if !edge.is_empty() {
                    plan.listener_edge_changes.push((name.clone(), edge));
                }
            }
            Some(_) => {}
        }
        if let Some(before) = old.listeners.get(name) {
            plan.edge_changes
                .extend(super::edge::edge_changes(name, before, listener));
        }
    }
    plan.listeners_removed = names_missing(old.listeners.keys(), |n| new.listeners.contains_key(n));
    plan.admin_rebound = old.admin.as_ref().map(|a| a.bind) != new.admin.as_ref().map(|a| a.bind);
    plan.runtime_needs_restart = threads_changed(&old.runtime, &new.runtime);

    for (name, pool) in &new.pools {
        match old.pools.get(name) {
            None => plan.pools_added.push(name.clone()),
            Some(before) => {
                let change = pool_change(before, pool);
                if change
                    != (PoolChange {
                        pool: name.clone(),
                        ..PoolChange::default()
                    })
                {
                    plan.pools_changed.push(change);
                }
            }
        }
    }
    plan.pools_removed = names_missing(old.pools.keys(), |n| new.pools.contains_key(n));
    plan
}

fn names_missing<'a>(
    names: impl Iterator<Item = &'a String>,
    kept: impl Fn(&String) -> bool,
) -> Vec<String> {
    names.filter(|n| !kept(n)).cloned().collect()
}

/// Every setting but the address (compared before): routes, PROXY protocol and timeouts count
/// as much as protocol and pool.
fn same_listener_settings(a: &ListenerConfig, b: &ListenerConfig) -> bool {
    a == b
}

fn pool_change(old: &PoolConfig, new: &PoolConfig) -> PoolChange {
    let mut change = PoolChange {
        pool: new.name.clone(),
        settings_changed: old.algorithm != new.algorithm || old.timeouts != new.timeouts,
        discovery_changed: old.discovery != new.discovery,
        ..PoolChange::default()
    };
    // Hashed by address: a pool may hold thousands of (discovered) backends.
    let before: HashMap<&BackendAddress, &BackendConfig> =
        old.backends.iter().map(|b| (&b.address, b)).collect();
    let after: HashSet<&BackendAddress> = new.backends.iter().map(|b| &b.address).collect();
    for backend in &new.backends {
        match before.get(&backend.address) {
            None => change.backends_added.push(backend.address.clone()),
            Some(before) if before.weight != backend.weight => change.backends_reweighted.push((
                backend.address.clone(),
                before.weight,
                backend.weight,
            )),
            Some(_) => {}
        }
    }
    for backend in &old.backends {
        if !after.contains(&backend.address) {
            change.backends_removed.push(backend.address.clone());
        }
    }
    change
}

impl fmt::Display for ReloadPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        let lines: [(&str, &Vec<String>, &str); 6] = [
            (
                "listener added",
                &self.listeners_added,
                "binds a new socket",
            ),
            (
                "listener removed",
                &self.listeners_removed,
                "stops accepting; open connections finish",
            ),
            (
                "listener re-bound",
                &self.listeners_rebound,
                "new socket; the old one stops accepting, its connections finish",
            ),
            (
                "listener changed",
                &self.listeners_changed,
                "socket kept; new connections use the new settings",
            ),
            (
                "pool added",
                &self.pools_added,
                "new backends start with fresh state",
            ),
            ("pool removed", &self.pools_removed, "its backends drain"),
        ];
        for (what, names, effect) in lines {
            for name in names {
                writeln!(f, "{what}: {name} ({effect})")?;
            }
        }
        for (name, what) in &self.listener_edge_changes {
            writeln!(
                f,
                "listener {name}: {} changed (new requests use them)",
                what.join(", ")
            )?;
        }
        if self.admin_rebound {
            writeln!(f, "admin listener re-bound")?;
        }
        if self.runtime_needs_restart {
            writeln!(
                f,
                "runtime: worker_threads, scheduler or accept changed (kept until a restart or a binary upgrade, SIGUSR2)"
            )?;
        }
        for line in &self.edge_changes {
            writeln!(f, "{line}")?;
        }
        for change in &self.pools_changed {
            let pool = &change.pool;
            for address in &change.backends_added {
                writeln!(f, "pool {pool}: backend added: {address} (fresh state)")?;
            }
            for address in &change.backends_removed {
                writeln!(
                    f,
                    "pool {pool}: backend removed: {address} (drains: in-flight work finishes)"
                )?;
            }
            for (address, old, new) in &change.backends_reweighted {
                writeln!(
                    f,
                    "pool {pool}: backend reweighted: {address} {old} -> {new} (state kept)"
                )?;
            }
            if change.settings_changed {
                writeln!(
                    f,
                    "pool {pool}: algorithm or timeouts changed (backend state kept)"
                )?;
            }
            if change.discovery_changed {
                writeln!(
                    f,
                    "pool {pool}: discovery sources changed (their watchers restart)"
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listeners:\n  web: {bind: '127.0.0.1:8080', pool: app}\n  db: {bind: '127.0.0.1:6432', protocol: tcp, pool: app}\npools:\n  app:\n    backends: [127.0.0.1:9001, {address: 127.0.0.1:9002, weight: 2}]\n";

    fn config(text: &str) -> Config {
        Config::parse(text, "t.yaml").expect("valid")
    }

    #[test]
    fn thread_settings_are_reported_as_waiting_for_a_restart() {
        let with = |runtime: &str| config(&format!("runtime: {{{runtime}}}\n{BASE}"));
        let running = with("worker_threads: 2");
        assert!(!diff(&running, &with("worker_threads: 2")).runtime_needs_restart);
        // No count in the file: the running one (filled in at start) stays, nothing to say.
        assert!(diff(&running, &config(BASE)).is_empty());
        for changed in [
            "worker_threads: 4",
            "worker_threads: 2, scheduler: work_stealing",
            "worker_threads: 2, accept: shared",
        ] {
            let plan = diff(&running, &with(changed));
            assert!(plan.runtime_needs_restart, "{changed}");
            assert!(plan.to_string().contains("until a restart"), "{plan}");
        }
    }

    #[test]
    fn identical_configs_plan_nothing() {
        let plan = diff(&config(BASE), &config(BASE));
        assert!(plan.is_empty());
        assert_eq!(plan.to_string(), "no changes\n");
    }

    #[test]
    fn listeners_added_removed_rebound_and_changed() {
        let new = BASE
            .replace(
                "db: {bind: '127.0.0.1:6432', protocol: tcp",
                "db: {bind: '127.0.0.1:6432', protocol: http",
            )
            .replace("127.0.0.1:8080", "127.0.0.1:8081")
            + "";
        let new = new.replace(
            "pools:",
            "  extra: {bind: '127.0.0.1:9999', pool: app}\npools:",
        );
        let plan = diff(&config(BASE), &config(&new));
        assert_eq!(plan.listeners_added, ["extra"]);
        assert_eq!(plan.listeners_rebound, ["web"]);
        assert_eq!(plan.listeners_changed, ["db"]);
        assert!(plan.listeners_removed.is_empty());
        assert_eq!(plan.listeners_to_bind().count(), 2);

        let removed = diff(&config(&new), &config(BASE));
        assert_eq!(removed.listeners_removed, ["extra"]);
    }

    #[test]
    fn route_changes_are_listener_changes() {
        let routed = BASE.replace(
            "web: {bind: '127.0.0.1:8080', pool: app}",
            "web: {bind: '127.0.0.1:8080', pool: app, routes: [{match: {host: a.example}, pool: app}]}",
        );
        let plan = diff(&config(BASE), &config(&routed));
        assert_eq!(plan.listeners_changed, ["web"]);
        let other_host = routed.replace("a.example", "b.example");
        let plan = diff(&config(&routed), &config(&other_host));
        assert_eq!(plan.listeners_changed, ["web"]);
        assert!(plan.to_string().contains("listener changed: web"));
    }

    #[test]
    fn backends_added_removed_reweighted() {
        let new = BASE.replace(
            "[127.0.0.1:9001, {address: 127.0.0.1:9002, weight: 2}]",
            "[{address: 127.0.0.1:9002, weight: 5}, 127.0.0.1:9003]",
        );
        let plan = diff(&config(BASE), &config(&new));
        let change = &plan.pools_changed[0];
        assert_eq!(
            change.backends_added,
            ["127.0.0.1:9003".parse::<BackendAddress>().unwrap()]
        );
        assert_eq!(
            change.backends_removed,
            ["127.0.0.1:9001".parse::<BackendAddress>().unwrap()]
        );
        assert_eq!(
            change.backends_reweighted,
            [("127.0.0.1:9002".parse().unwrap(), 2, 5)]
        );
        assert!(!change.settings_changed);
        let text = plan.to_string();
        assert!(
            text.contains("backend reweighted: 127.0.0.1:9002 2 -> 5 (state kept)"),
            "{text}"
        );
    }
}
