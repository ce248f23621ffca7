//! Wires a validated config into a running daemon: binds every listener (all or nothing),
//! publishes the first snapshot, runs the accept loops, and drains on shutdown.
//!
//! Connections are tracked so shutdown can stop accepting, let in-flight requests and TCP
//! sessions finish, and give up only at the drain deadline.

use crate::admin;
use crate::config::{Config, Protocol};
use crate::error::Error;
use crate::listener;
use crate::proxy;
use crate::state::{SharedSnapshot, Snapshot};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub struct Server {
    snapshot: SharedSnapshot,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    local_addrs: BTreeMap<String, SocketAddr>,
    admin_addr: Option<SocketAddr>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every connection finished before the deadline.
    Complete,
    /// The deadline passed with connections still open; they are dropped.
    TimedOut,
}

impl Server {
    /// Binds every listener first and fails without serving anything if any bind fails.
    pub async fn start(config: Config) -> Result<Server, Error> {
        let mut bound: Vec<(String, Protocol, TcpListener)> = Vec::new();
        for listener_config in config.listeners.values() {
            let socket = listener::bind(listener_config.bind).map_err(|source| Error::Bind {
                name: listener_config.name.clone(),
                addr: listener_config.bind,
                source,
            })?;
            bound.push((
                listener_config.name.clone(),
                listener_config.protocol,
                socket,
            ));
        }
        let admin_socket = match &config.admin {
            Some(admin) => Some(listener::bind(admin.bind).map_err(|source| Error::Bind {
                name: "admin".into(),
                addr: admin.bind,
                source,
            })?),
            None => None,
        };

        let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(Snapshot::build(
            Arc::new(config),
            None,
        )));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut local_addrs = BTreeMap::new();
        for (name, protocol, socket) in bound {
            let addr = local_addr(&socket, &name)?;
            info!(listener = %name, %addr, ?protocol, "listening");
            local_addrs.insert(name.clone(), addr);
            spawn_accept_loop(name, protocol, socket, &snapshot, &shutdown, &tracker);
        }
        let admin_addr = match admin_socket {
            Some(socket) => {
                let addr = local_addr(&socket, "admin")?;
                info!(%addr, "admin listening");
                admin::spawn(socket, snapshot.clone(), shutdown.clone(), &tracker);
                Some(addr)
            }
            None => None,
        };
        Ok(Server {
            snapshot,
            shutdown,
            tracker,
            local_addrs,
            admin_addr,
        })
    }

    /// The address a listener actually bound (useful with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.local_addrs.get(listener).copied()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn snapshot(&self) -> &SharedSnapshot {
        &self.snapshot
    }

    /// Re-reads the config file and swaps in a new snapshot for pools and routing. Listener
    /// sockets are not changed here: a reload that adds, removes or re-binds a listener is
    /// refused and the running config stays in force.
    pub fn reload_from(&self, path: &Path) -> Result<(), Error> {
        let config = Config::load(path)?;
        self.reload(config)
    }

    pub fn reload(&self, config: Config) -> Result<(), Error> {
        let current = self.snapshot.load_full();
        let old_binds: BTreeMap<&str, (SocketAddr, Protocol)> = current
            .config
            .listeners
            .values()
            .map(|l| (l.name.as_str(), (l.bind, l.protocol)))
            .collect();
        let new_binds: BTreeMap<&str, (SocketAddr, Protocol)> = config
            .listeners
            .values()
            .map(|l| (l.name.as_str(), (l.bind, l.protocol)))
            .collect();
        if old_binds != new_binds {
            return Err(Error::Io {
                context: "reload refused".into(),
                source: io::Error::other(
                    "listeners were added, removed, re-bound or changed protocol; \
                     this version applies such changes only on restart",
                ),
            });
        }
        let next = Snapshot::build(Arc::new(config), Some(&current));
        self.snapshot.store(Arc::new(next));
        Ok(())
    }

    /// Stops accepting, lets open connections finish (HTTP keep-alive connections close
    /// after their current response), and waits at most `deadline`.
    pub async fn shutdown(&self, deadline: Duration) -> DrainOutcome {
        self.shutdown.cancel();
        self.tracker.close();
        match tokio::time::timeout(deadline, self.tracker.wait()).await {
            Ok(()) => DrainOutcome::Complete,
            Err(_) => DrainOutcome::TimedOut,
        }
    }

    /// Runs until SIGTERM or SIGINT, reloading `config_path` on SIGHUP, then drains with the
    /// configured deadline. A second SIGTERM/SIGINT during the drain exits at once.
    pub async fn run_until_signal(
        &self,
        config_path: Option<&Path>,
    ) -> Result<DrainOutcome, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let signal_error = |source| Error::Io {
            context: "cannot install signal handler".into(),
            source,
        };
        let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
        let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
        loop {
            tokio::select! {
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
                _ = hangup.recv() => match config_path {
                    Some(path) => match self.reload_from(path) {
                        Ok(()) => info!(path = %path.display(), "configuration reloaded"),
                        Err(error) => error!("reload failed, keeping the running configuration: {error}"),
                    },
                    None => warn!("SIGHUP ignored: no config file to reload (demo mode)"),
                },
            }
        }
        let deadline = self.snapshot.load().config.runtime.drain_timeout;
        info!(
            ?deadline,
            "shutting down: no new connections, draining open ones"
        );
        let outcome = tokio::select! {
            outcome = self.shutdown(deadline) => outcome,
            _ = terminate.recv() => DrainOutcome::TimedOut,
            _ = interrupt.recv() => DrainOutcome::TimedOut,
        };
        match outcome {
            DrainOutcome::Complete => info!("drained; exiting"),
            DrainOutcome::TimedOut => {
                warn!("drain deadline reached or second signal; closing remaining connections")
            }
        }
        Ok(outcome)
    }
}

fn local_addr(socket: &TcpListener, name: &str) -> Result<SocketAddr, Error> {
    socket.local_addr().map_err(|source| Error::Io {
        context: format!("cannot read address of listener {name}"),
        source,
    })
}

fn spawn_accept_loop(
    name: String,
    protocol: Protocol,
    socket: TcpListener,
    snapshot: &SharedSnapshot,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    let name: Arc<str> = Arc::from(name);
    let snapshot = snapshot.clone();
    let shutdown = shutdown.clone();
    let connections = tracker.clone();
    tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = socket.accept() => accepted,
                () = shutdown.cancelled() => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE/ENFILE and friends: back off briefly instead of spinning; the
                    // pending connections wait in the kernel backlog meanwhile.
                    warn!(listener = %name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let listener = Arc::clone(&name);
            let snapshot = snapshot.clone();
            match protocol {
                Protocol::Http => {
                    let shutdown = shutdown.clone();
                    connections.spawn(proxy::http::serve_connection(
                        stream, peer, listener, snapshot, shutdown,
                    ));
                }
                Protocol::Tcp => {
                    connections.spawn(proxy::tcp::serve_connection(
                        stream, peer, listener, snapshot,
                    ));
                }
            }
        }
        // Dropping the socket here closes it: the kernel refuses new connections at once.
        drop(socket);
    });
}
