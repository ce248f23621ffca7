//! Opening connections to backends: TCP or Unix socket, optionally wrapped in TLS.
//!
//! `Dialer` is the one place a backend connection starts, shared by the pooled HTTP/1 client,
//! the HTTP/2 connection cache, TCP forwarding and health checks, so every path gets the same
//! connect timeout, socket options and TLS settings. Opening and securing are separate steps
//! because a PROXY protocol header must go out in plaintext before the TLS handshake.
//!
//! `authority_for` names a backend in a URI (HTTP/2's `:authority` when the client sent no
//! `Host`): an IP backend by its address, a Unix socket backend by a synthetic name
//! (`<hex of the path>.unix.invalid`, which can never resolve).

use super::tls::{Alpn, TlsSetup};
use crate::config::BackendAddress;
use crate::error::Chain;
use crate::metrics::wire::Metered;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// TCP keepalive on backend connections finds peers that vanished without a FIN.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Marks a synthetic authority that names a Unix socket (`.invalid` can never resolve).
const UNIX_AUTHORITY_SUFFIX: &str = ".unix.invalid";

/// An open backend connection of any kind.
#[derive(Debug)]
pub enum Conn {
    /// Plain sockets count their bytes for the backend's wire counters; TLS is layered on one
    /// of them, so its records are counted too.
    Tcp(Metered<TcpStream>),
    Unix(Metered<UnixStream>),
    Tls(Box<tokio_rustls::client::TlsStream<Conn>>),
}

impl Conn {
    /// Closes the connection with a TCP reset rather than a FIN (SO_LINGER 0): a request cut
    /// short by its client must not look to the backend like one that ended cleanly.
    pub fn reset(self) {
        let tcp = match &self {
            Conn::Tcp(stream) => Some(stream.get_ref()),
            Conn::Tls(stream) => match stream.get_ref().0 {
                Conn::Tcp(stream) => Some(stream.get_ref()),
                _ => None,
            },
            Conn::Unix(_) => None,
        };
        if let Some(stream) = tcp {
            // Failing only means a FIN goes instead; the request is cut short either way.
            let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
        }
        drop(self);
    }

    /// Whether TLS negotiated HTTP/2 by ALPN.
    pub fn negotiated_h2(&self) -> bool {
        match self {
            Conn::Tls(stream) => stream.get_ref().1.alpn_protocol() == Some(b"h2"),
            _ => false,
        }
    }
}

/// Opens backend connections with a pool's connect timeout and TLS settings.
#[derive(Clone)]
pub struct Dialer {
    connect_timeout: Duration,
    tls: Option<Arc<TlsSetup>>,
    /// The pool's name: the backend wire counters are `(pool, backend)`.
    pool: Arc<str>,
}

impl Dialer {
    pub fn new(pool: &str, connect_timeout: Duration, tls: Option<Arc<TlsSetup>>) -> Dialer {
        Dialer {
            connect_timeout,
            tls,
            pool: Arc::from(pool),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens a plain connection (no TLS yet) within the connect timeout.
    pub async fn open(&self, address: &BackendAddress) -> io::Result<Conn> {
        let wire = crate::metrics::backend_wire(&self.pool, address);
        let connect = async {
            match address {
                BackendAddress::Inet(inet) => {
                    let stream = TcpStream::connect(inet).await?;
                    let _ = stream.set_nodelay(true);
                    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
                    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                    Ok(Conn::Tcp(Metered::new(stream, wire)))
                }
                BackendAddress::Unix(path) => Ok(Conn::Unix(Metered::new(
                    UnixStream::connect(path).await?,
                    wire,
                ))),
            }
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))
    }

    /// Runs the TLS handshake when the pool has `tls:` (within the connect timeout, so an
    /// unresponsive backend cannot hold a request past it); otherwise returns `conn` as is.
    pub async fn secure(
        &self,
        conn: Conn,
        address: &BackendAddress,
        alpn: Alpn,
    ) -> io::Result<Conn> {
        let Some(tls) = &self.tls else {
            return Ok(conn);
        };
        let server_name = tls.server_name(address)?;
        let handshake = tls.connector(alpn).connect(server_name, conn);
        match tokio::time::timeout(self.connect_timeout, handshake).await {
            Ok(Ok(stream)) => Ok(Conn::Tls(Box::new(stream))),
            Ok(Err(error)) => Err(io::Error::new(
                error.kind(),
                format!("TLS handshake with {address} failed: {}", Chain(&error)),
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }

    /// `open` then `secure`.
    pub async fn connect(&self, address: &BackendAddress, alpn: Alpn) -> io::Result<Conn> {
        let conn = self.open(address).await?;
        self.secure(conn, address, alpn).await
    }
}

/// A backend's name in a URI authority (see the module notes).
pub fn authority_for(address: &BackendAddress) -> String {
    match address {
        BackendAddress::Inet(inet) => inet.to_string(),
        BackendAddress::Unix(path) => {
            let bytes = path.as_os_str().as_encoded_bytes();
            let mut text = String::with_capacity(bytes.len() * 2 + UNIX_AUTHORITY_SUFFIX.len());
            for byte in bytes {
                text.push_str(&format!("{byte:02x}"));
            }
            text.push_str(UNIX_AUTHORITY_SUFFIX);
            text
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Conn::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
            Conn::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Conn::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
            Conn::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Conn::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Conn::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(stream) => stream.is_write_vectored(),
            Conn::Unix(stream) => stream.is_write_vectored(),
            Conn::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Conn::Unix(stream) => Pin::new(stream).poll_flush(cx),
            Conn::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Conn::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
            Conn::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_authority_is_a_valid_uri_authority() {
        for text in [
            "unix:/run/app.sock",
            "unix:/tmp/dir with space/Ä.sock",
            "10.0.0.1:80",
        ] {
            let address: BackendAddress = text.parse().unwrap();
            let authority = authority_for(&address);
            let uri: http::Uri = format!("http://{authority}/path").parse().unwrap();
            assert_eq!(
                uri.authority().map(|a| a.as_str()),
                Some(authority.as_str())
            );
        }
    }
}
