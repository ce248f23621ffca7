//! The control plane: the one owner of the control state and the one writer of the snapshot.
//!
//! The state comes in layers (`layers.rs`): the config file as loaded, the backend sets the
//! discovery sources see, and runtime weight overrides. `Layers::effective` is the one place
//! they are combined; `Control::apply` is the one path that publishes the result. Every
//! change goes through it, whatever triggered it: start-up, SIGHUP, the file watch and
//! `POST /reload` (`reloads.rs`), admin actions on a backend, and discovery.
//!
//! A change is a transaction in two halves (`transaction.rs`). Prepare does everything that
//! can fail: read and parse the file, validate, read the admin token and certificates, bind,
//! take over or inherit sockets, duplicate them and register them with the workers, build the
//! snapshot. Commit swaps the snapshot, starts the new accept loops and stops the old ones,
//! and cannot fail. A failed prepare leaves everything running as it was, and the report says
//! it failed. Start-up is the same transaction from an empty config, with the sockets of a
//! binary upgrade as one more input of prepare.
//!
//! Triggers see the narrow interface `ControlPlane` (four methods), never `Control` itself.
//! This module must not import `admin`, `reload`, `discovery` or `server`: they sit above it.
//! What it needs of them (serving the admin listener, following the config with discovery
//! tasks) is handed in as `Hooks` by the wiring (`server`).

mod accept;
mod layers;
mod listeners;
mod owner;
mod reloads;
mod sockets;
mod transaction;

pub use layers::{Layers, Weights};
pub use owner::Control;
pub use reloads::ReloadReport;
pub use transaction::read_token_file;

use owner::{Live, Proposal, lock};

use crate::config::{BackendAddress, BindAddr, Config};
use crate::state::Snapshot;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What triggers (the admin API, the file watch, signals) may ask of the control plane.
pub trait ControlPlane: Send + Sync {
    /// Re-reads the config file and applies it; the report of the reload that covered this
    /// trigger (possibly one another trigger started).
    fn reload(&self, trigger: &'static str) -> BoxFuture<'_, ReloadReport>;
    /// The file watch saw a change: reloads when the file holds content no reload has read
    /// yet. `None` when there was nothing to report.
    fn file_changed(&self) -> BoxFuture<'_, Option<ReloadReport>>;
    /// A runtime change to one backend: a weight, a drain, an enable.
    fn backend(
        &self,
        pool: &str,
        address: &BackendAddress,
        action: BackendAction,
    ) -> BoxFuture<'_, Result<(), ControlError>>;
    /// What the admin API shows.
    fn view(&self) -> View;
}

/// An admin action on one backend; `by` says who asked (for the log and `/status`).
#[derive(Debug, Clone)]
pub enum BackendAction {
    Weight(u32),
    Drain { by: String },
    Enable { by: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no backend {address} in pool {pool}")]
    NoSuchBackend {
        pool: String,
        address: BackendAddress,
    },
}

/// A consistent read of the control state for the admin API.
pub struct View {
    pub snapshot: Arc<Snapshot>,
    pub admin_token: Option<String>,
    pub config_text: Option<String>,
    pub config_path: Option<PathBuf>,
    pub started: tokio::time::Instant,
    pub last_reload: Option<ReloadReport>,
    /// The last reload reports, oldest first (bounded).
    pub reload_history: Vec<ReloadReport>,
    /// The config file's layer (before discovery and runtime overrides): which backends the
    /// file itself lists.
    pub file_config: Arc<crate::config::Config>,
    /// Every listener: name, where it is bound, open connections.
    pub listeners: Vec<(String, BindAddr, usize)>,
    /// Open connections per worker thread (empty without worker threads).
    pub worker_connections: Vec<usize>,
    pub weights: Weights,
}

/// Serves the admin API on a listening socket until the token is cancelled.
pub type AdminHook =
    Box<dyn Fn(TcpListener, Arc<dyn ControlPlane>, CancellationToken, &TaskTracker) + Send + Sync>;

/// Told the config file layer at every commit that changed it. Must not fail or block.
pub type CommitHook = Box<dyn Fn(&Arc<Config>) + Send + Sync>;

/// What the control plane needs of the modules above it, handed in at start.
pub struct Hooks {
    pub admin: AdminHook,
    /// Discovery starts and stops its sources to follow the config file.
    pub config_committed: CommitHook,
}

#[cfg(test)]
mod tests;
