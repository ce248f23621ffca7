//! Binding listening sockets the way a daemon should: SO_REUSEADDR (restart without waiting
//! out TIME_WAIT), IPV6_V6ONLY on IPv6 wildcards (so `[::]` and `0.0.0.0` can coexist), a
//! large accept backlog, non-blocking, then handed to tokio.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Kernel caps it at `net.core.somaxconn` (4096 on current kernels); nginx and HAProxy ask
/// for similar values so bursts of new connections wait in the kernel instead of failing.
pub const ACCEPT_BACKLOG: i32 = 4096;

pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    TcpListener::from_std(socket.into())
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
    async fn a_taken_port_is_an_error_not_a_panic() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = first.local_addr().unwrap();
        assert!(bind(taken).is_err());
    }
}
