//! A running sluice, wired together: the control plane (`crate::control`, the owner of the
//! config, the snapshot and the listeners) and the triggers around it, which ask it for
//! changes through its narrow interface: the admin API (`crate::admin`), the file watch
//! (`crate::reload`), discovery (`crate::discovery`), and signals (`signals.rs`: SIGTERM and
//! SIGINT drain, SIGHUP reloads, SIGUSR1 reopens logs, SIGUSR2 upgrades the binary).
//!
//! The top of the layering: imports the control plane and every trigger; nothing imports it
//! but `lib.rs` and `main.rs`. The triggers and the control plane never import it, nor each
//! other but through `ControlPlane`.

mod signals;

use crate::config::diff::ReloadPlan;
use crate::config::{BindAddr, Config};
use crate::control::{Control, ControlPlane, Hooks, ReloadReport};
use crate::discovery::{Discovery, SourceStatus};
use crate::error::Error;
use crate::state::SharedSnapshot;
use crate::upgrade::Inherited;
use signals::Signals;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A running sluice.
pub struct Server {
    control: Arc<Control>,
    discovery: Arc<Discovery>,
    /// Stops the discovery sources and the task that hands their sets to the control plane.
    discovery_stop: CancellationToken,
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
        crate::metrics::install();
        let signals = Signals::install()?;
        // Started by a binary upgrade: take over the old process's sockets where they match.
        let mut inherited = Inherited::receive()?;
        let watch = config.watch;
        let discovery = Arc::new(Discovery::default());
        let discovery_stop = CancellationToken::new();
        let control = Control::start(
            config,
            config_text,
            config_path,
            &mut inherited,
            hooks(&discovery, &discovery_stop),
        )?;
        spawn_discovery_applier(&discovery, Arc::downgrade(&control), &discovery_stop);
        if let Some(path) = control.config_path()
            && watch
        {
            let handle: Arc<dyn ControlPlane> = control.clone();
            crate::reload::watch_file(Arc::downgrade(&handle), path)?;
        }
        crate::systemd::notify_ready("serving");
        inherited.confirm_serving();
        Ok(Server {
            control,
            discovery,
            discovery_stop,
            signals: tokio::sync::Mutex::new(Some(signals)),
        })
    }

    /// The address a listener actually bound (useful with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.control.local_addr(listener)
    }

    /// Where a listener is bound, TCP or unix.
    pub fn local_bind(&self, listener: &str) -> Option<BindAddr> {
        self.control.local_bind(listener)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.control.admin_addr()
    }

    pub fn snapshot(&self) -> &SharedSnapshot {
        self.control.snapshot()
    }

    /// The control plane (tests and embedding).
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Open client connections per worker thread (empty without worker threads).
    pub fn worker_connections(&self) -> Vec<usize> {
        self.control.worker_connections()
    }

    /// Every discovery source's status, by pool.
    pub fn discovery_status(&self) -> BTreeMap<String, Vec<SourceStatus>> {
        self.discovery.status()
    }

    /// Applies a new config as one transaction and returns the plan. On error nothing changed.
    pub async fn reload(&self, config: Config) -> Result<ReloadPlan, Error> {
        self.control.apply_config(config).await
    }

    /// Re-reads the config file and applies it, as SIGHUP does.
    pub async fn reload_file(&self, trigger: &'static str) -> ReloadReport {
        self.control.reload_file(trigger).await
    }

    /// Stops accepting, lets open connections finish (HTTP keep-alive connections close
    /// after their current response), and waits at most `deadline`.
    pub async fn shutdown(&self, deadline: Duration) -> DrainOutcome {
        self.discovery_stop.cancel();
        match self.control.shutdown(deadline).await {
            true => DrainOutcome::Complete,
            false => DrainOutcome::TimedOut,
        }
    }
}

/// What the control plane needs of the modules above it: the admin API's accept loop, and
/// discovery following the config file.
fn hooks(discovery: &Arc<Discovery>, stop: &CancellationToken) -> Hooks {
    let for_admin = Arc::clone(discovery);
    let for_sources = Arc::clone(discovery);
    let stop = stop.clone();
    Hooks {
        admin: Box::new(move |socket, control, until, tracker| {
            let admin = crate::admin::Admin {
                control,
                discovery: Arc::clone(&for_admin),
            };
            crate::admin::spawn(socket, admin, until, tracker);
        }),
        config_committed: Box::new(move |config| for_sources.sync(config, &stop)),
    }
}

/// Hands every discovered set to the control plane each time a source published a change.
/// Bursts coalesce: one change reads every set published so far.
fn spawn_discovery_applier(
    discovery: &Arc<Discovery>,
    control: Weak<Control>,
    stop: &CancellationToken,
) {
    let discovery = Arc::clone(discovery);
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = discovery.changed() => {}
                () = stop.cancelled() => return,
            }
            let Some(control) = control.upgrade() else {
                return;
            };
            control.discovered(discovery.sets()).await;
        }
    });
}
