//! Binding listening sockets the way a daemon should: SO_REUSEADDR (restart without waiting
//! out TIME_WAIT), IPV6_V6ONLY on IPv6 wildcards (so `[::]` and `0.0.0.0` can coexist), a
//! large accept backlog, non-blocking, then handed to tokio.
//!
//! Unix domain sockets (`unix:/path`): a stale socket file (left by a crash, nothing accepts
//! on it) is removed before binding; a live one is an "address in use" error, and a path
//! that is not a socket is never deleted. The file is removed when the listener stops,
//! unless its socket was handed to a new process by a binary upgrade.

use crate::config::BindAddr;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Notify;

/// Kernel caps it at `net.core.somaxconn` (4096 on current kernels); nginx and HAProxy ask
/// for similar values so bursts of new connections wait in the kernel instead of failing.
pub const ACCEPT_BACKLOG: i32 = 4096;

pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(bind_tcp(addr, false)?)
}

/// Binds a TCP listening socket, not yet registered with any event loop. With `reuseport`
/// (SO_REUSEPORT) more sockets can be bound to the same address (`bind_shard`), and the
/// kernel spreads new connections over them by a hash of the client's address and port.
///
/// A port another socket listens on is "address in use" with `reuseport` too: a plain bind is
/// tried first, so a second sluice (or anything else) on the port is refused as without
/// SO_REUSEPORT, instead of silently joining the group and taking part of the connections.
pub fn bind_tcp(addr: SocketAddr, reuseport: bool) -> io::Result<std::net::TcpListener> {
    if reuseport && addr.port() != 0 {
        let probe = plain_socket(addr)?;
        probe.bind(&addr.into())?;
        // Closed before the group binds: a bound socket would take the port itself.
        drop(probe);
    }
    bind_listening(addr, reuseport)
}

fn bind_listening(addr: SocketAddr, reuseport: bool) -> io::Result<std::net::TcpListener> {
    let socket = plain_socket(addr)?;
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    Ok(socket.into())
}

fn plain_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// One more socket in the SO_REUSEPORT group of `first` (bound with `reuseport`), at the
/// address it actually bound (so a configured port 0 gets the same port).
pub fn bind_shard(first: &Bound) -> io::Result<std::net::TcpListener> {
    match first {
        Bound::Tcp(socket) => bind_listening(socket.local_addr()?, true),
        Bound::Unix(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "unix sockets have no SO_REUSEPORT groups",
        )),
    }
}

/// A listening socket of either family.
#[derive(Debug)]
pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// One accepted client connection; a unix client has no address.
#[derive(Debug)]
pub enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Bound {
    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Bound::Tcp(socket) => {
                let (stream, peer) = socket.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(Accepted::Tcp(stream, peer))
            }
            Bound::Unix(socket) => Ok(Accepted::Unix(socket.accept().await?.0)),
        }
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn local(&self) -> io::Result<BindAddr> {
        match self {
            Bound::Tcp(socket) => socket.local_addr().map(BindAddr::Tcp),
            Bound::Unix(socket) => {
                let addr = socket.local_addr()?;
                let path = addr
                    .as_pathname()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                Ok(BindAddr::Unix(path))
            }
        }
    }
}

impl AsFd for Bound {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Bound::Tcp(socket) => socket.as_fd(),
            Bound::Unix(socket) => socket.as_fd(),
        }
    }
}

/// A listening socket registered with no event loop: what each worker thread gets a
/// duplicate of, to register with its own (`runtime.scheduler: per_thread`).
#[derive(Debug)]
pub enum StdBound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Bound {
    /// Takes the socket out of this runtime's event loop (still non-blocking).
    pub fn into_std(self) -> io::Result<StdBound> {
        Ok(match self {
            Bound::Tcp(socket) => StdBound::Tcp(socket.into_std()?),
            Bound::Unix(socket) => StdBound::Unix(socket.into_std()?),
        })
    }
}

impl StdBound {
    /// Another descriptor for the same socket: every duplicate accepts from one queue.
    pub fn try_clone(&self) -> io::Result<StdBound> {
        Ok(match self {
            StdBound::Tcp(socket) => StdBound::Tcp(socket.try_clone()?),
            StdBound::Unix(socket) => StdBound::Unix(socket.try_clone()?),
        })
    }

    /// Registers the socket with the event loop of the runtime this is called on.
    pub fn register(self) -> io::Result<Bound> {
        Ok(match self {
            StdBound::Tcp(socket) => Bound::Tcp(TcpListener::from_std(socket)?),
            StdBound::Unix(socket) => Bound::Unix(UnixListener::from_std(socket)?),
        })
    }
}

/// Binds a listener address; `mode` applies to unix sockets, `reuseport` to TCP ones.
pub fn bind_any(addr: &BindAddr, mode: Option<u32>, reuseport: bool) -> io::Result<Bound> {
    match addr {
        BindAddr::Tcp(addr) => TcpListener::from_std(bind_tcp(*addr, reuseport)?).map(Bound::Tcp),
        BindAddr::Unix(path) => bind_unix(path, mode).map(Bound::Unix),
    }
}

pub fn bind_unix(path: &Path, mode: Option<u32>) -> io::Result<UnixListener> {
    remove_stale_socket(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    socket.listen(ACCEPT_BACKLOG)?;
    UnixListener::from_std(socket.into())
}

/// Removes `path` if it is a socket file nobody accepts on (a crashed predecessor's).
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process accepts on this socket",
        )),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path)
        }
        Err(error) => Err(error),
    }
}

/// Removes a unix listener's socket file when dropped (the listener stopped), unless `keep`
/// was called because a new process now accepts on the same socket.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    keep: AtomicBool,
}

impl SocketFile {
    pub fn new(path: PathBuf) -> SocketFile {
        SocketFile {
            path,
            keep: AtomicBool::new(false),
        }
    }

    pub fn keep(&self) {
        self.keep.store(true, Ordering::Release);
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if !self.keep.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Counts a listener's open connections so the accept loop can stop accepting at
/// `max_connections` and resume when one closes: excess clients wait in the kernel backlog
/// (as HAProxy's `maxconn` does) instead of being accepted and dropped.
#[derive(Debug, Default)]
pub struct ConnectionSlots {
    open: AtomicUsize,
    closed: Notify,
}

impl ConnectionSlots {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until fewer than `limit` connections are open.
    pub async fn wait_below(&self, limit: usize) {
        loop {
            let closed = self.closed.notified();
            if self.open() < limit {
                return;
            }
            closed.await;
        }
    }

    /// Counts one connection if fewer than `limit` are open (the check and the count are one
    /// step, so accept loops on several threads never go past the limit together).
    pub fn take_below(self: &Arc<Self>, limit: usize) -> Option<ConnectionSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionSlot {
                slots: Arc::clone(self),
            })
    }

    /// Waits until fewer than `limit` connections are open, then counts one.
    pub async fn take_when_below(self: &Arc<Self>, limit: usize) -> ConnectionSlot {
        loop {
            let closed = self.closed.notified();
            if let Some(slot) = self.take_below(limit) {
                return slot;
            }
            closed.await;
        }
    }

    /// Counts one connection until the returned guard drops.
    pub fn take(self: &Arc<Self>) -> ConnectionSlot {
        self.open.fetch_add(1, Ordering::AcqRel);
        ConnectionSlot {
            slots: Arc::clone(self),
        }
    }
}

#[derive(Debug)]
pub struct ConnectionSlot {
    slots: Arc<ConnectionSlots>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
        self.slots.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_ephemeral_ports_on_v4_and_v6_wildcards_side_by_side() {
        let v4 = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        assert_ne!(port, 0);
        // With IPV6_V6ONLY the same port on ::1 does not clash with the IPv4 socket.
        if let Ok(v6) = bind(SocketAddr::new("::1".parse().unwrap(), port)) {
            assert_eq!(v6.local_addr().unwrap().port(), port);
        }
    }

    #[tokio::test]
    async fn unix_sockets_replace_stale_files_but_not_live_ones_or_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let first = bind_unix(&path, Some(0o600)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(bind_unix(&path, None).is_err(), "live socket kept");
        drop(first);
        // The file is left behind, as after a crash: it is stale now.
        assert!(path.exists());
        let _second = bind_unix(&path, None).unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(bind_unix(&file, None).is_err());
        assert!(file.exists(), "a regular file is never deleted");
    }

    #[tokio::test]
    async fn shards_share_a_reuseport_port_and_a_plain_socket_does_not() {
        let first = bind_any(&BindAddr::Tcp("127.0.0.1:0".parse().unwrap()), None, true).unwrap();
        let shard = bind_shard(&first).unwrap();
        let port = shard.local_addr().unwrap().port();
        assert_eq!(Some(port), first.local().unwrap().tcp().map(|a| a.port()));
        // Without SO_REUSEPORT on the first socket the port is taken, as before.
        let plain = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(bind_shard(&Bound::Tcp(plain)).is_err());
        // A second group on a port in use is refused, as a plain socket would be.
        let taken = BindAddr::Tcp(shard.local_addr().unwrap());
        let error = bind_any(&taken, None, true).expect_err("the port is in use");
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error_not_a_panic() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = first.local_addr().unwrap();
        assert!(bind(taken).is_err());
    }
}
