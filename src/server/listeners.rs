//! The set of live listeners: binding sockets (named for error messages, with their
//! SO_REUSEPORT groups), starting a listener's accept loops (one per worker thread) and the
//! admin listener, the addresses they bound, their open connections, and duplicates of their
//! sockets for a binary upgrade.
//!
//! Only `Shared::apply` (the reload transaction in `mod.rs`) and start-up add or remove
//! entries; everything else reads them.

use super::{Shared, lock};
use crate::admin;
use crate::config::BindAddr;
use crate::error::Error;
use crate::listener;
use crate::listener::{Accepted, Bound, StdBound};
use crate::proxy;
use crate::state::SharedSnapshot;
use crate::workers::{Balancer, OpenConnection, Workers};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub(super) struct RunningListener {
    pub(super) local_addr: BindAddr,
    /// A unix listener's socket file, removed when the listener stops.
    pub(super) socket_file: Option<listener::SocketFile>,
    /// A duplicate of the listening socket, passed to the next process on upgrade.
    pub(super) fd: OwnedFd,
    /// Duplicates of the listener's further sockets in its SO_REUSEPORT group
    /// (`accept: reuseport`), passed on upgrade too.
    pub(super) shard_fds: Vec<OwnedFd>,
    /// Cancelling it stops this listener's accept loop and asks its connections to finish.
    pub(super) stop: CancellationToken,
    /// Open connections (for `max_connections` and the active-connections gauge).
    pub(super) slots: Arc<listener::ConnectionSlots>,
}

impl Shared {
    /// Duplicates of every listening socket, named as `Inherited::take` expects them.
    pub(super) fn sockets_for_upgrade(&self) -> Vec<(String, OwnedFd)> {
        let listeners = lock(&self.listeners);
        let admin = lock(&self.admin);
        listeners
            .iter()
            .flat_map(|(name, l)| {
                let key = format!("listener:{name}");
                let shards: Vec<_> = (l.shard_fds.iter().enumerate())
                    .map(|(i, fd)| (crate::upgrade::shard_key(&key, i), fd))
                    .collect();
                std::iter::once((key, &l.fd)).chain(shards)
            })
            .chain(admin.iter().map(|l| ("admin".to_owned(), &l.fd)))
            .filter_map(|(name, fd)| fd.try_clone().ok().map(|fd| (name, fd)))
            .collect()
    }

    /// The TCP address a listener bound (`None` for a unix listener).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        lock(&self.listeners)
            .get(listener)
            .and_then(|l| l.local_addr.tcp())
    }

    /// Where a listener is bound, TCP or unix.
    pub fn local_bind(&self, listener: &str) -> Option<BindAddr> {
        lock(&self.listeners)
            .get(listener)
            .map(|l| l.local_addr.clone())
    }

    /// Open client connections per worker thread (empty without worker threads).
    pub fn worker_connections(&self) -> Vec<usize> {
        self.workers
            .as_ref()
            .map_or_else(Vec::new, |workers| workers.open_connections())
    }

    /// Open client connections per listener (for the metrics gauge).
    pub fn open_connections(&self) -> Vec<(String, usize)> {
        lock(&self.listeners)
            .iter()
            .map(|(name, l)| (name.clone(), l.slots.open()))
            .collect()
    }

    pub(super) fn start_listener(
        &self,
        name: String,
        socket: Bound,
        shards: Vec<std::net::TcpListener>,
    ) -> Result<(), Error> {
        let local_addr = socket.local().map_err(|source| Error::Io {
            context: format!("cannot read address of listener {name}"),
            source,
        })?;
        let socket_file = match &local_addr {
            BindAddr::Unix(path) => Some(listener::SocketFile::new(path.clone())),
            BindAddr::Tcp(_) => None,
        };
        let fd = duplicate(&socket, &name)?;
        let shard_fds = shards
            .iter()
            .map(|shard| duplicate(shard, &name))
            .collect::<Result<_, _>>()?;
        let stop = self.shutdown.child_token();
        info!(listener = %name, addr = %local_addr, sockets = 1 + shards.len(), "listening");
        let slots = Arc::new(listener::ConnectionSlots::default());
        let accept = AcceptLoop::new(
            Arc::from(name.as_str()),
            &socket,
            self.snapshot.clone(),
            stop.clone(),
            Arc::clone(&slots),
            &self.tracker,
        );
        spawn_accept_loops(accept, socket, shards, self.workers.as_ref(), &self.tracker)?;
        lock(&self.listeners).insert(
            name,
            RunningListener {
                local_addr,
                socket_file,
                fd,
                shard_fds,
                stop,
                slots,
            },
        );
        Ok(())
    }

    pub(super) fn start_admin(self: &Arc<Self>, socket: TcpListener) -> Result<(), Error> {
        let local_addr = socket_addr(&socket, "admin")?;
        let fd = duplicate(&socket, "admin")?;
        let stop = self.shutdown.child_token();
        info!(addr = %local_addr, "admin listening");
        admin::spawn(socket, Arc::clone(self), stop.clone(), &self.tracker);
        *lock(&self.admin) = Some(RunningListener {
            local_addr: BindAddr::Tcp(local_addr),
            socket_file: None,
            fd,
            shard_fds: Vec::new(),
            stop,
            slots: Arc::default(),
        });
        Ok(())
    }
}

pub(super) fn bind_named(
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
pub(super) fn bind_shards(
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

pub(super) fn bind_admin(addr: SocketAddr) -> Result<TcpListener, Error> {
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

/// Starts a listener's accept loops. Without worker threads, one on the calling runtime per
/// socket. With them (`runtime.scheduler: per_thread`), each worker registers sockets with its
/// own event loop: with `accept: shared` every worker a duplicate of the one socket (the
/// kernel wakes the workers waiting in accept and one takes each connection; the balancer
/// evens out which worker keeps it); with `accept: reuseport` each worker
/// its own socket of the listener's SO_REUSEPORT group (the kernel picks one by a hash of the
/// client's address and wakes only that worker). Sockets beyond one per worker (inherited
/// from a process with more workers) go round robin: every socket of a group is accepted on.
fn spawn_accept_loops(
    accept: AcceptLoop,
    socket: Bound,
    shards: Vec<std::net::TcpListener>,
    workers: Option<&Workers>,
    tracker: &TaskTracker,
) -> Result<(), Error> {
    let listener = Arc::clone(&accept.serve.name);
    let io_error = |source| Error::Io {
        context: format!("cannot start the accept loops of listener {listener}"),
        source,
    };
    let Some(workers) = workers.filter(|w| !w.is_empty()) else {
        for shard in shards {
            let shard = StdBound::Tcp(shard).register().map_err(io_error)?;
            tracker.spawn(accept.clone().run(shard));
        }
        tracker.spawn(accept.run(socket));
        return Ok(());
    };
    // Workers that share one socket get their connections by wake-up races, which pile
    // them up on one worker: those are balanced (see `Balancer`).
    let accept = AcceptLoop {
        balancer: shards.is_empty().then(|| workers.balancer()),
        ..accept
    };
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
    for (index, socket) in sockets.into_iter().enumerate() {
        let accept = accept.clone();
        tracker.spawn_on(
            async move {
                match socket.register() {
                    Ok(socket) => accept.run(socket).await,
                    Err(error) => {
                        tracing::error!(listener = %accept.serve.name, worker = crate::workers::current_index(), %error, "worker cannot accept on listener");
                    }
                }
            },
            &workers.handles()[index % workers.len()],
        );
    }
    Ok(())
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
