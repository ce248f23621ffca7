//! The owner of the control state (`Control`): its layers, the snapshot it alone writes,
//! the live listeners and the admin token, and the lock that runs one change at a time.
//! Start-up, `apply` (the one publish path) and the reads; the two halves of a change are in
//! `transaction.rs`.

use super::listeners::Listeners;
use super::reloads::{self, Reloads};
use super::{
    BackendAction, BoxFuture, ControlError, ControlPlane, Hooks, Layers, ReloadReport, View,
    sockets,
};
use crate::config::diff::ReloadPlan;
use crate::config::discovery::DiscoveredSet;
use crate::config::{BackendAddress, BindAddr, Config};
use crate::error::Error;
use crate::state::{SharedSnapshot, Snapshot};
use crate::upgrade::Inherited;
use crate::workers::Workers;
use arc_swap::ArcSwap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The owner of the control state.
pub struct Control {
    /// Itself, for the admin listener it starts (which holds it as a `dyn ControlPlane`).
    pub(super) me: std::sync::Weak<Control>,
    pub(super) snapshot: SharedSnapshot,
    /// Serialises changes: one transaction at a time, from prepare to commit.
    pub(super) run: tokio::sync::Mutex<()>,
    /// Written only by commit (under `run`); read briefly by everyone else.
    pub(super) live: Mutex<Live>,
    pub(super) reloads: Reloads,
    pub(super) env: Env,
}

/// The state a commit replaces.
pub(super) struct Live {
    pub(super) layers: Layers,
    pub(super) admin_token: Option<String>,
    pub(super) listeners: Listeners,
}

/// Set at start, never changed.
pub(super) struct Env {
    pub(super) config_path: Option<PathBuf>,
    pub(super) started: tokio::time::Instant,
    pub(super) shutdown: CancellationToken,
    pub(super) tracker: TaskTracker,
    /// The worker threads that accept and serve (`runtime.scheduler: per_thread` with more
    /// than one thread); `None`: the runtime that started sluice serves.
    pub(super) workers: Option<Workers>,
    /// Sockets beyond the first each TCP listener gets (`accept: reuseport`).
    pub(super) shards: usize,
    pub(super) probes: crate::probe::Probes,
    pub(super) hooks: Hooks,
    #[cfg(test)]
    pub(super) fail_prepare: std::sync::atomic::AtomicBool,
}

/// One change to the layers, as a trigger asks for it.
pub(super) enum Proposal {
    /// A new config file layer, with its text when read from the file.
    File(Box<Config>, Option<String>),
    Discovered(Vec<DiscoveredSet>),
    Weight(String, BackendAddress, u32),
}

impl Control {
    /// Starts from `config`: the first transaction, from an empty config, with the sockets
    /// inherited from a binary upgrade.
    pub fn start(
        config: Config,
        text: Option<String>,
        config_path: Option<PathBuf>,
        inherited: &mut Inherited,
        hooks: Hooks,
    ) -> Result<Arc<Control>, Error> {
        let workers = sockets::start_workers(&config)?;
        let shards = sockets::shards_per_listener(&config, workers.as_ref());
        let empty = Layers::empty(&config);
        let snapshot = Snapshot::build(Arc::new(empty.effective()), None);
        let control = Arc::new_cyclic(|me| Control {
            me: me.clone(),
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            run: tokio::sync::Mutex::new(()),
            live: Mutex::new(Live {
                layers: empty,
                admin_token: None,
                listeners: Listeners::default(),
            }),
            reloads: Reloads::default(),
            env: Env {
                config_path,
                started: tokio::time::Instant::now(),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                workers,
                shards,
                probes: Default::default(),
                hooks,
                #[cfg(test)]
                fail_prepare: Default::default(),
            },
        });
        let proposal = Proposal::File(Box::new(config), text);
        control.apply(proposal, Some(inherited))?;
        crate::probe::spawn_ticker(control.snapshot.clone(), control.env.shutdown.clone());
        if let Some(path) = &control.env.config_path {
            control.reloads.started_from(path);
        }
        Ok(control)
    }

    /// The one publish path: prepare (everything that can fail), then commit (cannot fail).
    /// Callers hold `run`, except start-up, which nothing else can reach yet.
    pub(super) fn apply(
        &self,
        proposal: Proposal,
        inherited: Option<&mut Inherited>,
    ) -> Result<ReloadPlan, Error> {
        let prepared = {
            let live = lock(&self.live);
            let current = self.snapshot.load_full();
            self.prepare(&live, &current, proposal, inherited)
        };
        match prepared {
            Ok(prepared) => Ok(self.commit(prepared)),
            Err(error) => {
                // Building the discarded snapshot recomputed the pools' shared panic flags
                // from its backends: recompute them from the running ones.
                for pool in self.snapshot.load().pools.values() {
                    pool.update_panic();
                }
                Err(error)
            }
        }
    }

    /// Applies an already parsed config (tests, embedding): the same transaction and report.
    pub async fn apply_config(&self, config: Config) -> Result<ReloadPlan, Error> {
        let _running = self.run.lock().await;
        self.reloads.notify_reloading();
        let result = self.apply(Proposal::File(Box::new(config), None), None);
        self.reloads.finish_api(&result);
        result
    }

    /// The latest sets of every discovery source: a new discovered layer.
    pub async fn discovered(&self, sets: Vec<DiscoveredSet>) {
        let _running = self.run.lock().await;
        match self.apply(Proposal::Discovered(sets), None) {
            Ok(plan) if !plan.is_empty() => {
                let summary = reloads::describe(&plan);
                tracing::info!("discovery: {}", summary.trim_end().replace('\n', "; "));
            }
            Ok(_) => {}
            // Nothing in such a change can fail (no sockets, no files); say so if it did.
            Err(error) => tracing::error!("discovery: cannot apply the new backend sets: {error}"),
        }
    }

    pub fn snapshot(&self) -> &SharedSnapshot {
        &self.snapshot
    }

    /// The TCP address a listener bound (`None` for a unix listener).
    pub fn local_addr(&self, listener: &str) -> Option<std::net::SocketAddr> {
        self.local_bind(listener).and_then(|b| b.tcp())
    }

    /// Where a listener is bound, TCP or unix.
    pub fn local_bind(&self, listener: &str) -> Option<BindAddr> {
        lock(&self.live).listeners.local_bind(listener)
    }

    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        lock(&self.live).listeners.admin_addr()
    }

    /// Open client connections per worker thread (empty without worker threads).
    pub fn worker_connections(&self) -> Vec<usize> {
        self.env
            .workers
            .as_ref()
            .map_or_else(Vec::new, |workers| workers.open_connections())
    }

    pub fn config_path(&self) -> Option<&PathBuf> {
        self.env.config_path.as_ref()
    }

    /// Duplicates of every listening socket, named as `Inherited::take` expects them.
    pub fn sockets_for_upgrade(&self) -> Vec<(String, OwnedFd)> {
        lock(&self.live).listeners.sockets_for_upgrade()
    }

    /// A new process accepts on our unix sockets now: leave their files when we stop.
    pub fn keep_socket_files(&self) {
        lock(&self.live).listeners.keep_socket_files();
    }

    /// Stops accepting, lets open connections finish, and waits at most `deadline`; true
    /// when every connection finished.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.env.shutdown.cancel();
        // Close our duplicates of the listening sockets too, or the kernel would keep
        // queueing connections that nobody accepts while we drain.
        lock(&self.live).listeners.clear();
        self.env.tracker.close();
        tokio::time::timeout(deadline, self.env.tracker.wait())
            .await
            .is_ok()
    }

    /// Test hook: the next prepare fails at its very end, after every socket is bound,
    /// duplicated and registered and the snapshot is built.
    #[cfg(test)]
    pub(super) fn fail_next_prepare(&self) {
        self.env
            .fail_prepare
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl ControlPlane for Control {
    fn reload(&self, trigger: &'static str) -> BoxFuture<'_, ReloadReport> {
        Box::pin(async move { self.reload_file(trigger).await })
    }

    fn file_changed(&self) -> BoxFuture<'_, Option<ReloadReport>> {
        Box::pin(async move { Reloads::file_changed(self).await })
    }

    fn backend(
        &self,
        pool: &str,
        address: &BackendAddress,
        action: BackendAction,
    ) -> BoxFuture<'_, Result<(), ControlError>> {
        let (pool, address) = (pool.to_owned(), address.clone());
        Box::pin(async move { self.backend_action(pool, address, action).await })
    }

    fn view(&self) -> View {
        let live = lock(&self.live);
        View {
            snapshot: self.snapshot.load_full(),
            admin_token: live.admin_token.clone(),
            config_text: live.layers.text.clone(),
            config_path: self.env.config_path.clone(),
            started: self.env.started,
            last_reload: self.reloads.last_report(),
            reload_history: self.reloads.history(),
            file_config: Arc::clone(&live.layers.file),
            listeners: live.listeners.summary(),
            worker_connections: self.worker_connections(),
            weights: live.layers.weights.clone(),
        }
    }
}

impl Control {
    /// Re-reads the config file and applies it, coalescing concurrent triggers.
    pub async fn reload_file(&self, trigger: &'static str) -> ReloadReport {
        Reloads::reload_file(self, trigger).await
    }

    async fn backend_action(
        &self,
        pool: String,
        address: BackendAddress,
        action: BackendAction,
    ) -> Result<(), ControlError> {
        let _running = self.run.lock().await;
        let snapshot = self.snapshot.load_full();
        let missing = || ControlError::NoSuchBackend {
            pool: pool.clone(),
            address: address.clone(),
        };
        let found = snapshot.pools.get(&pool).and_then(|p| {
            let backend = p.backends.iter().find(|b| b.address == address)?;
            Some((p, backend))
        });
        let Some((pool_state, backend)) = found else {
            return Err(missing());
        };
        // A drain is runtime state of the backend (its health cell), carried by identity
        // like health itself; a weight is a layer of the config, so it goes through `apply`.
        let now = tokio::time::Instant::now();
        let change = match action {
            BackendAction::Weight(weight) => {
                let proposal = Proposal::Weight(pool.clone(), address.clone(), weight);
                if let Err(error) = self.apply(proposal, None) {
                    tracing::error!(%pool, backend = %address, "cannot set the weight: {error}");
                    return Err(missing());
                }
                return Ok(());
            }
            BackendAction::Drain { by } => backend.state.health.update(|m| m.drain(now, &by)),
            BackendAction::Enable { by } => backend.state.health.update(|m| m.enable(now, &by)),
        };
        if let Some(change) = &change {
            crate::probe::announce(pool_state, backend, change);
        }
        Ok(())
    }
}

/// A poisoned lock only means another thread panicked mid-update of a plain map; the map
/// itself is still consistent, so keep serving rather than cascade the panic.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
