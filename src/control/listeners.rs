//! The set of live listeners and the socket work of the transaction: acquiring a listener's
//! sockets (taken over from a listener that stops at the same address, inherited from a
//! binary upgrade, or bound), duplicating them and registering them with the workers, all in
//! prepare; starting and stopping accept loops in commit, which cannot fail. Also the
//! accept loops themselves, the addresses they bound, their open connections, and duplicates
//! of their sockets for a binary upgrade.
//!
//! Only the transaction (`transaction.rs`) adds or removes entries; everything else reads.

use super::ControlPlane;
use crate::config::diff::ReloadPlan;
use crate::config::{BindAddr, Config, ListenerConfig};
use crate::error::Error;
use crate::listener;
use crate::listener::{Accepted, Bound, StdBound};
use crate::proxy;
use crate::state::SharedSnapshot;
use crate::upgrade::Inherited;
use crate::workers::{Balancer, OpenConnection, Workers};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub(super) struct RunningListener {
    /// Where the config asked it to be bound (port 0 stays 0 here).
    bind: BindAddr,
    local_addr: BindAddr,
    /// A unix listener's socket file, removed when the listener stops.
    socket_file: Option<listener::SocketFile>,
    /// A duplicate of the listening socket, passed to the next process on upgrade (and to a
    /// listener that takes this one's address over on a rename).
    fd: OwnedFd,
    /// Duplicates of the listener's further sockets in its SO_REUSEPORT group
    /// (`accept: reuseport`), passed on upgrade too.
    shard_fds: Vec<OwnedFd>,
    /// Cancelling it stops this listener's accept loop and asks its connections to finish.
    stop: CancellationToken,
    /// Open connections (for `max_connections` and the active-connections gauge).
    slots: Arc<listener::ConnectionSlots>,
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
    name: String,
    running: RunningListener,
    accept: AcceptLoop,
    /// Each socket to accept on, with the worker whose event loop it is registered with
    /// (`None`: the runtime that runs the transaction).
    sockets: Vec<(Option<usize>, Bound)>,
    /// The stopping listener whose socket this one took over (same address, other name).
    took_over: Option<String>,
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

/// A listening socket from a duplicate of another's descriptor (non-blocking already: the flag
/// belongs to the socket, which both share), registered with this runtime.
fn bound_from(fd: OwnedFd, addr: &BindAddr) -> std::io::Result<Bound> {
    Ok(match addr {
        BindAddr::Tcp(_) => Bound::Tcp(TcpListener::from_std(std::net::TcpListener::from(fd))?),
        BindAddr::Unix(_) => Bound::Unix(tokio::net::UnixListener::from_std(
            std::os::unix::net::UnixListener::from(fd),
        )?),
    })
}

/// Everything that can fail before a listener's accept loops start: its address, the
/// duplicates kept for upgrades, and the sockets registered where they will be accepted on.
fn ready(
    wanted: &ListenerConfig,
    socket: Bound,
    shards: Vec<std::net::TcpListener>,
    took_over: Option<String>,
    context: &Context<'_>,
) -> Result<Ready, Error> {
    let name = &wanted.name;
    let local_addr = socket.local().map_err(|source| Error::Io {
        context: format!("cannot read address of listener {name}"),
        source,
    })?;
    let socket_file = match &local_addr {
        BindAddr::Unix(path) => Some(listener::SocketFile::new(path.clone())),
        BindAddr::Tcp(_) => None,
    };
    let fd = duplicate(&socket, name)?;
    let shard_fds = shards
        .iter()
        .map(|shard| duplicate(shard, name))
        .collect::<Result<_, _>>()?;
    let stop = context.shutdown.child_token();
    let slots = Arc::new(listener::ConnectionSlots::default());
    let mut accept = AcceptLoop::new(
        Arc::from(name.as_str()),
        &socket,
        context.snapshot.clone(),
        stop.clone(),
        Arc::clone(&slots),
        context.tracker,
    );
    let sockets = register(&mut accept, socket, shards, context.workers)?;
    Ok(Ready {
        name: name.clone(),
        running: RunningListener {
            bind: wanted.bind.clone(),
            local_addr,
            socket_file,
            fd,
            shard_fds,
            stop,
            slots,
        },
        accept,
        sockets,
        took_over,
    })
}

/// Registers a listener's sockets where they will be accepted on. Without worker threads, each
/// socket on the calling runtime. With them (`runtime.scheduler: per_thread`), each with one
/// worker's own event loop: with `accept: shared` every worker a duplicate of the one socket
/// (the kernel wakes the workers waiting in accept and one takes each connection; the balancer
/// evens out which worker keeps it); with `accept: reuseport` each worker its own socket of the
/// listener's SO_REUSEPORT group (the kernel picks one by a hash of the client's address and
/// wakes only that worker). Sockets beyond one per worker (inherited from a process with more
/// workers) go round robin: every socket of a group is accepted on.
fn register(
    accept: &mut AcceptLoop,
    socket: Bound,
    shards: Vec<std::net::TcpListener>,
    workers: Option<&Workers>,
) -> Result<Vec<(Option<usize>, Bound)>, Error> {
    let listener = Arc::clone(&accept.serve.name);
    let io_error = |source| Error::Io {
        context: format!("cannot register the sockets of listener {listener}"),
        source,
    };
    let Some(workers) = workers.filter(|w| !w.is_empty()) else {
        let mut sockets = Vec::with_capacity(shards.len() + 1);
        for shard in shards {
            sockets.push((None, StdBound::Tcp(shard).register().map_err(io_error)?));
        }
        sockets.push((None, socket));
        return Ok(sockets);
    };
    // Workers that share one socket get their connections by wake-up races, which pile
    // them up on one worker: those are balanced (see `Balancer`).
    accept.balancer = shards.is_empty().then(|| workers.balancer());
    // Out of this runtime's event loop, or it would wake for every connection as well.
    let first = socket.into_std().map_err(io_error)?;
    let sockets: Vec<StdBound> = if shards.is_empty() {
        (0..workers.len())
            .map(|_| first.try_clone())
            .collect::<Result<_, _>>()
            .map_err(io_error)?
    } else {
        std::iter::once(first)
            .chain(shards.into_iter().map(StdBound::Tcp))
            .collect()
    };
    (sockets.into_iter().enumerate())
        .map(|(index, socket)| {
            let worker = index % workers.len();
            // Registered with that worker's event loop from here, so a failure fails prepare.
            let _entered = workers.handles()[worker].enter();
            socket
                .register()
                .map(|s| (Some(worker), s))
                .map_err(io_error)
        })
        .collect()
}

/// How many sockets beyond the first each TCP listener gets: one for each further worker
/// with `accept: reuseport`.
pub(super) fn shards_per_listener(config: &Config, workers: Option<&Workers>) -> usize {
    match (config.runtime.accept, workers) {
        (crate::config::Accept::Reuseport, Some(workers)) => workers.len().saturating_sub(1),
        _ => 0,
    }
}

/// The worker threads the config asks for: with `per_thread` and more than one thread. The
/// thread count is read at start only (like nginx's `worker_processes`, it needs a restart).
pub(super) fn start_workers(config: &Config) -> Result<Option<Workers>, Error> {
    let runtime = &config.runtime;
    match (runtime.scheduler, runtime.worker_threads) {
        (crate::config::Scheduler::PerThread, Some(threads)) if threads > 1 => {
            let workers = Workers::start(threads).map_err(|source| Error::Io {
                context: format!("cannot start {threads} worker threads"),
                source,
            })?;
            info!(threads, "worker threads started, one event loop each");
            Ok(Some(workers))
        }
        _ => Ok(None),
    }
}

fn bind_named(
    name: &str,
    addr: &BindAddr,
    mode: Option<u32>,
    reuseport: bool,
) -> Result<Bound, Error> {
    listener::bind_any(addr, mode, reuseport).map_err(|source| Error::Bind {
        name: name.to_owned(),
        addr: addr.to_string(),
        source,
    })
}

/// `count` more sockets in the SO_REUSEPORT group of a TCP listener's `first` socket. None for
/// a unix listener (no such groups: its workers share its one socket), nor for a socket
/// inherited from a process that did not bind it for a group (then shared too, with a word).
fn bind_shards(
    name: &str,
    first: &Bound,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, Error> {
    let grouped = match first {
        Bound::Tcp(socket) => socket2::SockRef::from(socket).reuse_port().unwrap_or(false),
        Bound::Unix(_) => return Ok(Vec::new()),
    };
    if count == 0 {
        return Ok(Vec::new());
    }
    if !grouped {
        warn!(listener = %name, "inherited socket has no SO_REUSEPORT; its workers share it until a restart");
        return Ok(Vec::new());
    }
    (0..count)
        .map(|_| {
            listener::bind_shard(first).map_err(|source| Error::Bind {
                name: name.to_owned(),
                addr: first
                    .local()
                    .map_or_else(|_| "?".to_owned(), |a| a.to_string()),
                source,
            })
        })
        .collect()
}

fn bind_admin(addr: SocketAddr) -> Result<TcpListener, Error> {
    listener::bind(addr).map_err(|source| Error::Bind {
        name: "admin".to_owned(),
        addr: addr.to_string(),
        source,
    })
}

fn duplicate(socket: &impl AsFd, name: &str) -> Result<OwnedFd, Error> {
    socket
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| Error::Io {
            context: format!("cannot duplicate the socket of listener {name}"),
            source,
        })
}

fn socket_addr(socket: &TcpListener, name: &str) -> Result<SocketAddr, Error> {
    socket.local_addr().map_err(|source| Error::Io {
        context: format!("cannot read address of listener {name}"),
        source,
    })
}

/// What one accept loop needs; cloned for each worker's loop.
#[derive(Clone)]
struct AcceptLoop {
    serve: ServeArgs,
    slots: Arc<listener::ConnectionSlots>,
    connections: TaskTracker,
    connections_total: metrics::Counter,
    /// With workers that share one socket: moves a new connection to a clearly less loaded
    /// worker.
    balancer: Option<Balancer>,
}

/// What serving an accepted connection needs besides the connection.
#[derive(Clone)]
struct ServeArgs {
    name: Arc<str>,
    snapshot: SharedSnapshot,
    stop: CancellationToken,
    /// A listener bound to one address accepts connections only to it: each connection's
    /// local address is known without asking the kernel (a getsockname per connection).
    fixed_local: Option<SocketAddr>,
}

/// Serves an accepted connection in a task of its own on the calling runtime, holding its
/// slot (and counted on its worker) until it ends.
fn spawn_serving(
    accepted: Accepted,
    slot: listener::ConnectionSlot,
    serve: &ServeArgs,
    connections: &TaskTracker,
) {
    // The connection reads its listener's settings (protocol, PROXY header) from the
    // snapshot when it starts: a reload may have changed them.
    let serving = proxy::accept::serve(
        accepted,
        serve.fixed_local,
        Arc::clone(&serve.name),
        serve.snapshot.clone(),
        serve.stop.clone(),
    );
    match serving {
        proxy::accept::Serving::Http(path) => connections.spawn(Holding::new(path, slot)),
        proxy::accept::Serving::Other(path) => connections.spawn(Holding::new(path, slot)),
    };
}

/// Serves a TCP connection accepted here on the worker of `worker` instead: out of this
/// worker's event loop, into that one's (two epoll changes and a wake-up of that worker,
/// paid only when the balancer moves a connection). Its task runs there, counted there.
fn hand_over(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: listener::ConnectionSlot,
    serve: ServeArgs,
    connections: &TaskTracker,
    worker: &tokio::runtime::Handle,
) {
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            warn!(listener = %serve.name, %error, "cannot move a connection to another worker; closed");
            return;
        }
    };
    crate::metrics::worker_connection_moved();
    let tracker = connections.clone();
    connections.spawn_on(
        async move {
            match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => {
                    spawn_serving(Accepted::Tcp(stream, peer), slot, &serve, &tracker);
                }
                Err(error) => {
                    warn!(listener = %serve.name, %error, "cannot take a moved connection; closed");
                }
            }
        },
        worker,
    );
}

impl AcceptLoop {
    fn new(
        name: Arc<str>,
        socket: &Bound,
        snapshot: SharedSnapshot,
        stop: CancellationToken,
        slots: Arc<listener::ConnectionSlots>,
        tracker: &TaskTracker,
    ) -> AcceptLoop {
        let connections_total = crate::metrics::listener_handles(&name).connections.clone();
        let fixed_local = match socket.local() {
            Ok(BindAddr::Tcp(addr)) if !addr.ip().is_unspecified() => Some(addr),
            _ => None,
        };
        AcceptLoop {
            serve: ServeArgs {
                name,
                snapshot,
                stop,
                fixed_local,
            },
            slots,
            connections: tracker.clone(),
            connections_total,
            balancer: None,
        }
    }

    async fn run(self, socket: Bound) {
        let AcceptLoop {
            serve,
            slots,
            connections,
            connections_total,
            balancer,
        } = self;
        let ServeArgs {
            name,
            snapshot,
            stop,
            ..
        } = &serve;
        loop {
            // Read the limit each time: a reload may change it.
            let limit = snapshot
                .load()
                .listener(name)
                .and_then(|l| l.max_connections);
            if let Some(limit) = limit {
                tokio::select! {
                    () = slots.wait_below(limit as usize) => {}
                    () = stop.cancelled() => break,
                }
            }
            let accepted = tokio::select! {
                accepted = socket.accept() => accepted,
                () = stop.cancelled() => break,
            };
            let accepted = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE/ENFILE and friends: back off briefly instead of spinning; the
                    // pending connections wait in the kernel backlog meanwhile.
                    warn!(listener = %name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match limit {
                None => slots.take(),
                // Another worker's loop may have taken the last slot since the wait above:
                // this connection then waits here as it would have in the kernel's backlog.
                Some(limit) => tokio::select! {
                    slot = slots.take_when_below(limit as usize) => slot,
                    () = stop.cancelled() => break,
                },
            };
            connections_total.increment(1);
            let accepted = match (&balancer, accepted) {
                (Some(balancer), Accepted::Tcp(stream, peer)) => {
                    match balancer.elsewhere(crate::workers::current_index()) {
                        Some(worker) => {
                            hand_over(stream, peer, slot, serve.clone(), &connections, worker);
                            continue;
                        }
                        None => Accepted::Tcp(stream, peer),
                    }
                }
                (_, accepted) => accepted,
            };
            spawn_serving(accepted, slot, &serve, &connections);
        }
        // Dropping the socket closes it: the kernel refuses new connections at once.
        drop(socket);
    }
}

pin_project_lite::pin_project! {
    /// A connection's future and its slot, which is freed when the task ends. Written out
    /// rather than an `async` block that awaits the future: such a block keeps room for the
    /// future twice (as captured and as awaited), in every connection's task.
    struct Holding<F> {
        #[pin]
        future: F,
        slot: listener::ConnectionSlot,
        on_worker: OpenConnection,
    }
}

impl<F> Holding<F> {
    fn new(future: F, slot: listener::ConnectionSlot) -> Holding<F> {
        Holding {
            future,
            slot,
            on_worker: OpenConnection::count(),
        }
    }
}

impl<F: std::future::Future<Output = ()>> std::future::Future for Holding<F> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.project().future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_grows_from_a_reuseport_socket_and_an_old_plain_one_stays_shared() {
        let any_port = BindAddr::Tcp("127.0.0.1:0".parse().unwrap());
        let grouped = bind_named("web", &any_port, None, true).unwrap();
        let shards = bind_shards("web", &grouped, 2).unwrap();
        assert_eq!(shards.len(), 2);
        let port = grouped.local().unwrap().tcp().unwrap().port();
        assert!(
            shards
                .iter()
                .all(|s| s.local_addr().unwrap().port() == port)
        );
        // A socket inherited from a process that bound it without SO_REUSEPORT (an older
        // sluice, or `accept: shared`) cannot take a group: its workers share it instead.
        let plain = bind_named("web", &any_port, None, false).unwrap();
        assert!(bind_shards("web", &plain, 2).unwrap().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let unix = BindAddr::Unix(dir.path().join("s.sock"));
        let unix = bind_named("sock", &unix, None, true).unwrap();
        assert!(bind_shards("sock", &unix, 2).unwrap().is_empty());
    }
}
