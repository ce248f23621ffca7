//! Wires a validated config into a running daemon: binds every listener (all or nothing),
//! publishes the first snapshot, starts the worker threads (`crate::workers`), runs each
//! listener's accept loops (one per worker, or one), applies reloads as one transaction, and
//! drains on shutdown.
//!
//! The reload transaction (`Shared::apply`): diff -> bind every new socket -> build the new
//! snapshot reusing backend state -> swap -> start the new accept loops -> stop the removed
//! ones. Any failure before the swap leaves everything as it was. Unchanged listeners keep
//! their socket and accept loop; a listener's protocol, pool and timeouts are read from the
//! snapshot at accept time, so such changes apply to new connections only.
//!
//! This file: start-up, the shared state, the reload transaction and drain. The set of live
//! listeners (binding, accept loops, their addresses) is in `listeners.rs`; signal handling
//! (SIGTERM/SIGINT, SIGHUP, SIGUSR1, SIGUSR2 binary upgrade) in `signals.rs`.

mod listeners;
mod signals;

use crate::config::diff::{ReloadPlan, diff};
use crate::config::{BindAddr, Config};
use crate::error::Error;
use crate::listener::Bound;
use crate::reload::Reloads;
use crate::state::{SharedSnapshot, Snapshot};
use crate::upgrade::Inherited;
use arc_swap::ArcSwap;
use listeners::{RunningListener, bind_admin, bind_named, bind_shards};
use signals::Signals;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// A running sluice. Cheap to share: everything lives in `Shared`.
pub struct Server {
    shared: Arc<Shared>,
    /// Installed before any socket is bound: SIGHUP's default action kills the process, so a
    /// `systemctl reload` right after start must already find our handler.
    signals: tokio::sync::Mutex<Option<Signals>>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every connection finished before the deadline.
    Complete,
    /// The deadline passed (or a second signal came) with connections still open.
    TimedOut,
}

/// State shared by the accept loops, the admin API and the reload coordinator.
pub struct Shared {
    pub snapshot: SharedSnapshot,
    /// The admin bearer token (from `admin.token_file`), read at start and on each reload.
    admin_token: Mutex<Option<String>>,
    /// The text of the config file in force, for `GET /config`.
    config_text: Mutex<Option<String>>,
    /// Weights set through the admin API, by `(pool, address)`.
    weight_overrides: Mutex<HashMap<(String, crate::config::BackendAddress), u32>>,
    /// Serialises snapshot swaps (reloads and runtime weight changes).
    swap: Mutex<()>,
    probes: crate::probe::Probes,
    pub reloads: Reloads,
    /// Discovered backends, merged into every snapshot built (`crate::discovery`).
    pub discovery: Arc<crate::discovery::Discovery>,
    pub config_path: Option<PathBuf>,
    pub started: std::time::Instant,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Written only by `apply` (serialised by `Reloads`) and read for addresses.
    listeners: Mutex<BTreeMap<String, RunningListener>>,
    admin: Mutex<Option<RunningListener>>,
    /// The worker threads that accept and serve connections (`runtime.scheduler:
    /// per_thread` with more than one thread); `None`: the runtime that started the server
    /// serves them.
    workers: Option<crate::workers::Workers>,
    /// Sockets beyond the first that each TCP listener gets (`accept: reuseport`), set at
    /// start like the workers: a reload binds new listeners the same way.
    shards: usize,
}

impl Server {
    /// Starts from an already validated config (tests, demo). Reloads need `start_from_file`.
    pub async fn start(config: Config) -> Result<Server, Error> {
        Server::start_inner(config, None, None).await
    }

    /// Loads `path`, starts, and remembers the path for SIGHUP, file watching and `POST /reload`.
    pub async fn start_from_file(path: &Path) -> Result<Server, Error> {
        let (config, text) = Config::load_with_text(path)?;
        Server::start_loaded(config, path, text).await
    }

    /// Starts from a config already read from `path` (with its text), so a caller that needed
    /// the config first (the thread count) does not read the file twice.
    pub async fn start_loaded(config: Config, path: &Path, text: String) -> Result<Server, Error> {
        Server::start_inner(config, Some(path.to_path_buf()), Some(text)).await
    }

    async fn start_inner(
        config: Config,
        config_path: Option<PathBuf>,
        config_text: Option<String>,
    ) -> Result<Server, Error> {
        let admin_token = read_admin_token(&config)?;
        crate::metrics::install();
        let signals = Signals::install()?;
        // Started by a binary upgrade: take over the old process's sockets where they match.
        let mut inherited = Inherited::receive()?;
        let workers = start_workers(&config)?;
        let shards = shards_per_listener(&config, workers.as_ref());
        let mut sockets = Vec::new();
        for listener_config in config.listeners.values() {
            let name = &listener_config.name;
            let key = format!("listener:{name}");
            let (socket, mut kept) = match inherited.take(&key, &listener_config.bind) {
                // Every socket of the old process's SO_REUSEPORT group is taken over: one
                // left out would be closed with the connections queued on it.
                Some(socket) => {
                    let kept = inherited.take_shards(&key, &socket);
                    (socket, kept)
                }
                None => (
                    bind_named(
                        name,
                        &listener_config.bind,
                        listener_config.unix_mode,
                        shards > 0,
                    )?,
                    Vec::new(),
                ),
            };
            kept.extend(bind_shards(
                name,
                &socket,
                shards.saturating_sub(kept.len()),
            )?);
            sockets.push((name.clone(), socket, kept));
        }
        let admin_socket = match &config.admin {
            Some(admin) => Some(match inherited.take("admin", &BindAddr::Tcp(admin.bind)) {
                Some(Bound::Tcp(socket)) => socket,
                _ => bind_admin(admin.bind)?,
            }),
            None => None,
        };
        let watch = config.watch;
        let shutdown = CancellationToken::new();
        let discovery = Arc::new(crate::discovery::Discovery::default());
        discovery.sync(&config, &shutdown);
        let config = Arc::new(config);
        discovery.set_base(Arc::clone(&config));
        let shared = Arc::new(Shared {
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::build(
                Arc::new(discovery.merge(&config)),
                None,
            ))),
            reloads: Reloads::default(),
            discovery,
            probes: Default::default(),
            admin_token: Mutex::new(admin_token),
            config_text: Mutex::new(config_text),
            weight_overrides: Mutex::default(),
            swap: Mutex::new(()),
            config_path,
            started: std::time::Instant::now(),
            shutdown,
            tracker: TaskTracker::new(),
            listeners: Mutex::new(BTreeMap::new()),
            admin: Mutex::new(None),
            workers,
            shards,
        });
        shared.probes.sync(&shared.snapshot, &shared.shutdown);
        crate::probe::spawn_ticker(shared.snapshot.clone(), shared.shutdown.clone());
        crate::discovery::spawn_applier(&shared, shared.shutdown.clone());
        for (name, socket, shards) in sockets {
            shared.start_listener(name, socket, shards)?;
        }
        if let Some(socket) = admin_socket {
            shared.start_admin(socket)?;
        }
        if let Some(path) = &shared.config_path
            && watch
        {
            crate::reload::watch_file(&shared, path)?;
        }
        crate::reload::notify_ready("serving");
        inherited.confirm_serving();
        Ok(Server {
            shared,
            signals: tokio::sync::Mutex::new(Some(signals)),
        })
    }

    /// The address a listener actually bound (useful with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.shared.local_addr(listener)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        lock(&self.shared.admin)
            .as_ref()
            .and_then(|l| l.local_addr.tcp())
    }

    pub fn snapshot(&self) -> &SharedSnapshot {
        &self.shared.snapshot
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Applies a new config as one transaction (see the module header) and returns the plan.
    /// On error nothing changed.
    pub async fn reload(&self, config: Config) -> Result<ReloadPlan, Error> {
        self.shared.reloads.apply_config(&self.shared, config).await
    }

    /// Stops accepting, lets open connections finish (HTTP keep-alive connections close
    /// after their current response), and waits at most `deadline`.
    pub async fn shutdown(&self, deadline: Duration) -> DrainOutcome {
        self.shared.shutdown.cancel();
        // Close our duplicates of the listening sockets too, or the kernel would keep
        // queueing connections that nobody accepts while we drain.
        lock(&self.shared.listeners).clear();
        lock(&self.shared.admin).take();
        self.shared.tracker.close();
        match tokio::time::timeout(deadline, self.shared.tracker.wait()).await {
            Ok(()) => DrainOutcome::Complete,
            Err(_) => DrainOutcome::TimedOut,
        }
    }
}

impl Shared {
    /// Runtime weight overrides (admin API) on top of a config: kept across reloads while the
    /// backend stays in its pool; an override whose backend left the config is dropped.
    fn with_weight_overrides(&self, mut config: Config) -> Config {
        let mut overrides = lock(&self.weight_overrides);
        overrides.retain(|(pool, address), _| {
            config
                .pools
                .get(pool)
                .is_some_and(|p| p.backends.iter().any(|b| b.address == *address))
        });
        for ((pool, address), weight) in overrides.iter() {
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

    /// Sets a backend's weight at runtime: a new snapshot with that weight (state kept by
    /// identity), marked as an override in `/status`. `None` when no such backend.
    pub fn set_weight(
        &self,
        pool: &str,
        address: &crate::config::BackendAddress,
        weight: u32,
    ) -> Option<()> {
        let _swap = lock(&self.swap);
        let current = self.snapshot.load_full();
        let exists = current
            .config
            .pools
            .get(pool)?
            .backends
            .iter()
            .any(|b| b.address == *address);
        if !exists {
            return None;
        }
        lock(&self.weight_overrides).insert((pool.to_owned(), address.clone()), weight);
        let config = self.with_weight_overrides((*current.config).clone());
        let next = Snapshot::build(Arc::new(config), Some(&current));
        self.snapshot.store(Arc::new(next));
        Some(())
    }

    pub fn weight_override(
        &self,
        pool: &str,
        address: &crate::config::BackendAddress,
    ) -> Option<u32> {
        lock(&self.weight_overrides)
            .get(&(pool.to_owned(), address.clone()))
            .copied()
    }

    pub fn admin_token(&self) -> Option<String> {
        lock(&self.admin_token).clone()
    }

    pub fn config_text(&self) -> Option<String> {
        lock(&self.config_text).clone()
    }

    /// Records the text of a config file just applied by a reload.
    pub(crate) fn set_config_text(&self, text: String) {
        *lock(&self.config_text) = Some(text);
    }

    /// The reload transaction. Callers serialise it (`Reloads` holds a lock around it).
    pub(crate) fn apply(self: &Arc<Self>, config: Config) -> Result<ReloadPlan, Error> {
        let _swap = lock(&self.swap);
        let current = self.snapshot.load_full();
        let admin_token = read_admin_token(&config)?;
        // Compare with the config as loaded: the snapshot's also holds discovered backends
        // and runtime weight overrides.
        let loaded = self.discovery.base();
        let plan = diff(loaded.as_deref().unwrap_or(&current.config), &config);

        // 1. Bind every new socket first; dropping `fresh` on error closes them again.
        let mut fresh = Vec::new();
        let shards = self.shards;
        for name in plan.listeners_to_bind() {
            let listener = &config.listeners[name];
            let socket = bind_named(name, &listener.bind, listener.unix_mode, shards > 0)?;
            let more = bind_shards(name, &socket, shards)?;
            fresh.push((name.clone(), socket, more));
        }
        let fresh_admin = match (&config.admin, plan.admin_rebound) {
            (Some(admin), true) => Some(bind_admin(admin.bind)?),
            _ => None,
        };

        // 2. Swap: from here on every new connection and request sees the new config, with
        // the discovered backends of the sources that stay merged in.
        self.discovery.sync(&config, &self.shutdown);
        let config = Arc::new(config);
        self.discovery.set_base(Arc::clone(&config));
        let effective = self.with_weight_overrides(self.discovery.merge(&config));
        let next = Snapshot::build(Arc::new(effective), Some(&current));
        self.snapshot.store(Arc::new(next));
        *lock(&self.admin_token) = admin_token;
        self.probes.sync(&self.snapshot, &self.shutdown);

        // 3. Start the new accept loops, then stop the old ones.
        for name in plan.listeners_to_stop() {
            if let Some(old) = lock(&self.listeners).remove(name) {
                info!(listener = %name, addr = %old.local_addr, "listener stops accepting; open connections finish");
                old.stop.cancel();
            }
        }
        for (name, socket, shards) in fresh {
            self.start_listener(name, socket, shards)?;
        }
        if plan.admin_rebound {
            if let Some(old) = lock(&self.admin).take() {
                old.stop.cancel();
            }
            if let Some(socket) = fresh_admin {
                self.start_admin(socket)?;
            }
        }
        Ok(plan)
    }

    /// Rebuilds the snapshot after a discovered set changed: the running config plus every
    /// discovered set, state kept by identity. Callers serialise it with reloads.
    pub(crate) fn apply_discovered(&self) {
        let _swap = lock(&self.swap);
        let current = self.snapshot.load_full();
        let Some(next_config) = self.discovery.effective() else {
            return;
        };
        let next_config = self.with_weight_overrides(next_config);
        if next_config == *current.config {
            return;
        }
        let plan = diff(&current.config, &next_config);
        info!(
            "discovery: {}",
            plan.to_string().trim_end().replace('\n', "; ")
        );
        let next = Snapshot::build(Arc::new(next_config), Some(&current));
        self.snapshot.store(Arc::new(next));
        self.probes.sync(&self.snapshot, &self.shutdown);
    }
}

/// How many sockets beyond the first each TCP listener gets: one for each further worker
/// with `accept: reuseport`.
fn shards_per_listener(config: &Config, workers: Option<&crate::workers::Workers>) -> usize {
    match (config.runtime.accept, workers) {
        (crate::config::Accept::Reuseport, Some(workers)) => workers.len().saturating_sub(1),
        _ => 0,
    }
}

/// The worker threads the config asks for: with `per_thread` and more than one thread. The
/// thread count is read at start only (like nginx's `worker_processes`, it needs a restart).
fn start_workers(config: &Config) -> Result<Option<crate::workers::Workers>, Error> {
    let runtime = &config.runtime;
    match (runtime.scheduler, runtime.worker_threads) {
        (crate::config::Scheduler::PerThread, Some(threads)) if threads > 1 => {
            let workers = crate::workers::Workers::start(threads).map_err(|source| Error::Io {
                context: format!("cannot start {threads} worker threads"),
                source,
            })?;
            info!(threads, "worker threads started, one event loop each");
            Ok(Some(workers))
        }
        _ => Ok(None),
    }
}

/// A poisoned lock only means another thread panicked mid-update of a plain map; the map
/// itself is still consistent, so keep serving rather than cascade the panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads `admin.token_file` (trimmed). A missing or empty file is an error: a configured
/// token must never silently turn into "no token".
fn read_admin_token(config: &Config) -> Result<Option<String>, Error> {
    let Some(path) = config.admin.as_ref().and_then(|a| a.token_file.as_ref()) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
        path: path.clone(),
        source,
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(Error::Io {
            context: format!("admin token file {}", path.display()),
            source: std::io::Error::other("is empty"),
        });
    }
    Ok(Some(token))
}
