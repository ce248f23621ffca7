//! The set of live listeners, and the transaction's work on it: `acquire` (prepare) gets
//! every socket a change needs, `commit` starts the new accept loops and then stops the old
//! ones, and cannot fail. Also what others read: the addresses listeners bound, their open
//! connections, duplicates of their sockets for a binary upgrade.
//!
//! Only the transaction (`transaction.rs`) adds or removes entries; everything else reads.
//! Binding, taking over and registering sockets is in `sockets.rs`; the accept loops in
//! `accept.rs`.

use super::ControlPlane;
use super::accept::AcceptLoop;
use super::sockets::{
    bind_admin, bind_named, bind_shards, bound_from, duplicate, ready, socket_addr,
};
use crate::config::diff::ReloadPlan;
use crate::config::{BindAddr, Config, ListenerConfig};
use crate::error::Error;
use crate::listener;
use crate::listener::Bound;
use crate::state::SharedSnapshot;
use crate::upgrade::Inherited;
use crate::workers::Workers;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub(super) struct RunningListener {
    /// Where the config asked it to be bound (port 0 stays 0 here).
    pub(super) bind: BindAddr,
    pub(super) local_addr: BindAddr,
    /// A unix listener's socket file, removed when the listener stops.
    pub(super) socket_file: Option<listener::SocketFile>,
    /// A duplicate of the listening socket, passed to the next process on upgrade (and to a
    /// listener that takes this one's address over on a rename).
    pub(super) fd: OwnedFd,
    /// Duplicates of the listener's further sockets in its SO_REUSEPORT group
    /// (`accept: reuseport`), passed on upgrade too.
    pub(super) shard_fds: Vec<OwnedFd>,
    /// Cancelling it stops this listener's accept loop and asks its connections to finish.
    pub(super) stop: CancellationToken,
    /// Open connections (for `max_connections` and the active-connections gauge).
    pub(super) slots: Arc<listener::ConnectionSlots>,
}

impl RunningListener {
    /// Whether this listener's socket is one `wanted` may take: configured alike, or bound
    /// right there. A wanted port 0 ("any port") takes the port this one has, as an upgrade
    /// does with an inherited socket.
    fn serves(&self, wanted: &BindAddr) -> bool {
        match (wanted, &self.local_addr) {
            (BindAddr::Tcp(wanted), BindAddr::Tcp(actual)) if wanted.port() == 0 => {
                wanted.ip() == actual.ip()
            }
            _ => self.bind == *wanted || self.local_addr == *wanted,
        }
    }
}

/// The live listeners, by name, and the admin listener.
#[derive(Default)]
pub(super) struct Listeners {
    running: BTreeMap<String, RunningListener>,
    admin: Option<RunningListener>,
}

/// What acquiring and starting sockets needs from the control plane; set at start.
pub(super) struct Context<'a> {
    pub(super) workers: Option<&'a Workers>,
    pub(super) shards: usize,
    pub(super) shutdown: &'a CancellationToken,
    pub(super) tracker: &'a TaskTracker,
    pub(super) snapshot: &'a SharedSnapshot,
}

/// A listener whose sockets are bound, duplicated and registered: starting it cannot fail.
pub(super) struct Ready {
    pub(super) name: String,
    pub(super) running: RunningListener,
    pub(super) accept: AcceptLoop,
    /// Each socket to accept on, with the worker whose event loop it is registered with
    /// (`None`: the runtime that runs the transaction).
    pub(super) sockets: Vec<(Option<usize>, Bound)>,
    /// The stopping listener whose socket this one took over (same address, other name).
    pub(super) took_over: Option<String>,
}

/// Everything a change's commit starts.
#[derive(Default)]
pub(super) struct Acquired {
    listeners: Vec<Ready>,
    admin: Option<(TcpListener, RunningListener)>,
}

impl Listeners {
    /// Prepare's socket work for `plan`: every listener to bind gets its sockets, and the admin
    /// listener if it moved. Dropping the result (prepare failed) closes what was opened here
    /// and leaves the running listeners as they were.
    pub(super) fn acquire(
        &self,
        plan: &ReloadPlan,
        config: &Config,
        mut inherited: Option<&mut Inherited>,
        context: &Context<'_>,
    ) -> Result<Acquired, Error> {
        let stopping: Vec<&String> = plan.listeners_to_stop().collect();
        let mut taken = HashSet::new();
        let mut acquired = Acquired::default();
        for name in plan.listeners_to_bind() {
            let wanted = &config.listeners[name];
            let (socket, shards, took_over) = self.sockets_for(
                wanted,
                &stopping,
                &mut taken,
                inherited.as_deref_mut(),
                context.shards,
            )?;
            acquired
                .listeners
                .push(ready(wanted, socket, shards, took_over, context)?);
        }
        if let (Some(admin), true) = (&config.admin, plan.admin_rebound) {
            let inherited = inherited.and_then(|i| i.take("admin", &BindAddr::Tcp(admin.bind)));
            let socket = match inherited {
                Some(Bound::Tcp(socket)) => socket,
                _ => bind_admin(admin.bind)?,
            };
            let local_addr = socket_addr(&socket, "admin")?;
            let running = RunningListener {
                bind: BindAddr::Tcp(admin.bind),
                local_addr: BindAddr::Tcp(local_addr),
                socket_file: None,
                fd: duplicate(&socket, "admin")?,
                shard_fds: Vec::new(),
                stop: context.shutdown.child_token(),
                slots: Arc::default(),
            };
            acquired.admin = Some((socket, running));
        }
        Ok(acquired)
    }

    /// A listener's first socket and its SO_REUSEPORT group. In order: the socket of a
    /// listener that stops in this change and is bound where this one wants to be (a rename
    /// keeps its socket: binding the address again would fail, it is in use); the socket a
    /// binary upgrade passed under this name; a new one.
    fn sockets_for(
        &self,
        wanted: &ListenerConfig,
        stopping: &[&String],
        taken: &mut HashSet<String>,
        inherited: Option<&mut Inherited>,
        shards: usize,
    ) -> Result<(Bound, Vec<std::net::TcpListener>, Option<String>), Error> {
        let name = &wanted.name;
        let io_error = |source| Error::Io {
            context: format!("cannot take over the socket of listener {name}"),
            source,
        };
        let same_place = stopping.iter().find(|old| {
            !taken.contains(old.as_str())
                && (self.running.get(old.as_str())).is_some_and(|l| l.serves(&wanted.bind))
        });
        let (socket, mut kept, took_over) = if let Some(&old_name) = same_place {
            let old = &self.running[old_name];
            taken.insert(old_name.clone());
            let socket = bound_from(old.fd.try_clone().map_err(io_error)?, &old.local_addr)
                .map_err(io_error)?;
            let kept = (old.shard_fds.iter())
                .map(|fd| fd.try_clone().map(std::net::TcpListener::from))
                .collect::<Result<Vec<_>, _>>()
                .map_err(io_error)?;
            (socket, kept, Some(old_name.clone()))
        } else {
            let key = format!("listener:{name}");
            match inherited.and_then(|i| i.take(&key, &wanted.bind).map(|s| (i, s))) {
                // Every socket of the old process's SO_REUSEPORT group is taken over: one
                // left out would be closed with the connections queued on it.
                Some((inherited, socket)) => {
                    let kept = inherited.take_shards(&key, &socket);
                    (socket, kept, None)
                }
                None => {
                    let socket = bind_named(name, &wanted.bind, wanted.unix_mode, shards > 0)?;
                    (socket, Vec::new(), None)
                }
            }
        };
        kept.extend(bind_shards(
            name,
            &socket,
            shards.saturating_sub(kept.len()),
        )?);
        Ok((socket, kept, took_over))
    }

    /// Commit's half: starts the new accept loops, then stops the old ones. Cannot fail.
    pub(super) fn commit(
        &mut self,
        acquired: Acquired,
        plan: &ReloadPlan,
        context: &Context<'_>,
        serve_admin: &super::AdminHook,
        handle: &Arc<dyn ControlPlane>,
    ) {
        let mut started = Vec::new();
        for ready in acquired.listeners {
            let Ready {
                name,
                running,
                accept,
                sockets,
                took_over,
            } = ready;
            info!(listener = %name, addr = %running.local_addr, sockets = sockets.len(), "listening");
            for (worker, socket) in sockets {
                let run = accept.clone().run(socket);
                match (worker, context.workers) {
                    (Some(index), Some(workers)) => {
                        context.tracker.spawn_on(run, &workers.handles()[index]);
                    }
                    _ => {
                        context.tracker.spawn(run);
                    }
                }
            }
            // The new listener accepts on that socket now: its file stays when the old stops.
            if let Some(old) = took_over.and_then(|old| self.running.get(&old))
                && let Some(file) = &old.socket_file
            {
                file.keep();
            }
            started.push((name, running));
        }
        for name in plan.listeners_to_stop() {
            if let Some(old) = self.running.remove(name) {
                info!(listener = %name, addr = %old.local_addr, "listener stops accepting; open connections finish");
                old.stop.cancel();
            }
        }
        self.running.extend(started);
        if plan.admin_rebound {
            if let Some(old) = self.admin.take() {
                old.stop.cancel();
            }
            if let Some((socket, running)) = acquired.admin {
                info!(addr = %running.local_addr, "admin listening");
                serve_admin(
                    socket,
                    Arc::clone(handle),
                    running.stop.clone(),
                    context.tracker,
                );
                self.admin = Some(running);
            }
        }
    }

    /// Duplicates of every listening socket, named as `Inherited::take` expects them.
    pub(super) fn sockets_for_upgrade(&self) -> Vec<(String, OwnedFd)> {
        self.running
            .iter()
            .flat_map(|(name, l)| {
                let key = format!("listener:{name}");
                let shards: Vec<_> = (l.shard_fds.iter().enumerate())
                    .map(|(i, fd)| (crate::upgrade::shard_key(&key, i), fd))
                    .collect();
                std::iter::once((key, &l.fd)).chain(shards)
            })
            .chain(self.admin.iter().map(|l| ("admin".to_owned(), &l.fd)))
            .filter_map(|(name, fd)| fd.try_clone().ok().map(|fd| (name, fd)))
            .collect()
    }

    /// A new process accepts on our unix sockets now: their files stay when we stop.
    pub(super) fn keep_socket_files(&self) {
        for running in self.running.values() {
            if let Some(file) = &running.socket_file {
                file.keep();
            }
        }
    }

    /// Where a listener is bound, TCP or unix.
    pub(super) fn local_bind(&self, listener: &str) -> Option<BindAddr> {
        self.running.get(listener).map(|l| l.local_addr.clone())
    }

    pub(super) fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr.tcp())
    }

    /// Every listener: name, where it is bound, open connections.
    pub(super) fn summary(&self) -> Vec<(String, BindAddr, usize)> {
        (self.running.iter())
            .map(|(name, l)| (name.clone(), l.local_addr.clone(), l.slots.open()))
            .collect()
    }

    /// Drops every listener (shutdown): closes our duplicates of their sockets.
    pub(super) fn clear(&mut self) {
        self.running.clear();
        self.admin = None;
    }
}
