//! Binding listening sockets the way a daemon should: SO_REUSEADDR (restart without waiting
//! out TIME_WAIT), IPV6_V6ONLY on IPv6 wildcards (so `[::]` and `0.0.0.0` can coexist), a
//! large accept backlog, non-blocking, then handed to tokio.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use tokio::net::TcpListener;

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
