//! Sockets for the transaction's prepare: binding a listener's socket and its SO_REUSEPORT
//! group, taking a socket over from a duplicate of its descriptor, duplicating sockets for
//! upgrades, and registering them with the event loop (or worker) that will accept on them.
//! Everything here can fail, and runs before the swap.

use super::accept::AcceptLoop;
use super::listeners::{Context, Ready, RunningListener};
use crate::config::{BindAddr, Config, ListenerConfig};
use crate::error::Error;
use crate::listener;
use crate::listener::{Bound, StdBound};
use crate::workers::Workers;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// A listening socket from a duplicate of another's descriptor (non-blocking already: the flag
/// belongs to the socket, which both share), registered with this runtime.
pub(super) fn bound_from(fd: OwnedFd, addr: &BindAddr) -> std::io::Result<Bound> {
    Ok(match addr {
        BindAddr::Tcp(_) => Bound::Tcp(TcpListener::from_std(std::net::TcpListener::from(fd))?),
        BindAddr::Unix(_) => Bound::Unix(tokio::net::UnixListener::from_std(
            std::os::unix::net::UnixListener::from(fd),
        )?),
    })
}

/// Everything that can fail before a listener's accept loops start: its address, the
/// duplicates kept for upgrades, and the sockets registered where they will be accepted on.
pub(super) fn ready(
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

pub(super) fn duplicate(socket: &impl AsFd, name: &str) -> Result<OwnedFd, Error> {
    socket
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| Error::Io {
            context: format!("cannot duplicate the socket of listener {name}"),
            source,
        })
}

pub(super) fn socket_addr(socket: &TcpListener, name: &str) -> Result<SocketAddr, Error> {
    socket.local_addr().map_err(|source| Error::Io {
        context: format!("cannot read address of listener {name}"),
        source,
    })
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
