//! What happens to an accepted connection before a data path takes it: the PROXY protocol
//! header (when the listener accepts one from this peer) and the choice of the HTTP or TCP
//! data path, both read from the snapshot at accept time.
//!
//! A trusted peer must send a valid header within the listener's `client_header` timeout;
//! otherwise the connection is closed without a byte written (what HAProxy and nginx do).
//! Untrusted peers are served as plain connections with their own address, so they cannot
//! spoof one. Exactly the header's bytes are read, so the data path sees the payload intact.
//!
//! Then, on a TLS listener, the handshake (PROXY header first, ClientHello second, as HAProxy
//! sends them), within the same `client_header` timeout; on a passthrough listener, the
//! ClientHello is read for its server name. Generic over the stream: TCP or unix socket.

use crate::config::Protocol;
use crate::error::Chain;
use crate::listener::Accepted;
use crate::metrics::wire::{Metered, WireCounters};
use crate::proxy::{Peer, TlsInfo};
use crate::proxy_protocol::{self, Header, ParseError, Parsed};
use crate::state::SharedSnapshot;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// A variant with an inner error says what failed; the inner error is its `source`
/// (rendered by `crate::error::Chain`).
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("reading the PROXY header")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Header(#[from] ParseError),
}

/// A connection's data path (HTTP or TCP), boxed: the task serving the connection holds only
/// this pointer, not room for the largest of the paths.
pub type DataPath = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How an accepted connection is served; either way, by a task of its own that runs the
/// future inside until the connection ends.
pub enum Serving<H, O> {
    /// A plain HTTP connection over TCP (the common case): its data path, not boxed, so that
    /// the task holds it directly (one allocation fewer per connection, and 64 bytes less
    /// per idle connection than a task holding a box).
    Http(H),
    /// Everything else: a prologue first (PROXY header, TLS handshake, ClientHello) and a
    /// boxed data path (TCP, HTTP over a unix socket or TLS).
    Other(O),
}

/// Serves one accepted connection on `listener` until it ends.
///
/// Two boxed stages when there is a prologue, so that what a long-lived (mostly idle)
/// connection keeps is only its data path: the prologue (PROXY header, TLS handshake,
/// ClientHello; a TLS handshake's state alone is over a kilobyte) is freed as soon as it is
/// done.
///
/// `fixed_local`: the local address of every TCP connection of this listener, when it is
/// bound to one address (else each connection's is read from its socket).
///
/// `wire`: the listener's wire byte counters; the socket is wrapped to count every byte read
/// and written on it, beneath PROXY headers, TLS and HTTP.
pub fn serve(
    accepted: Accepted,
    fixed_local: Option<SocketAddr>,
    listener: Arc<str>,
    snapshot: SharedSnapshot,
    stop: CancellationToken,
    wire: &Arc<WireCounters>,
) -> Serving<impl Future<Output = ()> + Send + 'static, impl Future<Output = ()> + Send + 'static> {
    let start = match accepted {
        Accepted::Tcp(stream, peer) => match fixed_local.map_or_else(|| stream.local_addr(), Ok) {
            Ok(local) => {
                let peer = Peer {
                    client: Some(peer),
                    local: Some(local),
                    tls: None,
                };
                let stream = Metered::new(stream, Arc::clone(wire));
                match start(stream, peer, listener, snapshot, stop) {
                    Ok(start) => start,
                    Err((stream, peer, listener, snapshot, stop)) => {
                        let path = crate::proxy::http::serve_connection(
                            stream, peer, listener, snapshot, stop,
                        );
                        return match path {
                            Some(path) => Serving::Http(path),
                            None => Serving::Other(run(Start::Ready(None))),
                        };
                    }
                }
            }
            Err(_) => Start::Ready(None),
        },
        Accepted::Unix(stream) => match start(
            Metered::new(stream, Arc::clone(wire)),
            Peer::default(),
            listener,
            snapshot,
            stop,
        ) {
            Ok(start) => start,
            Err((stream, peer, listener, snapshot, stop)) => {
                Start::Ready(http_path(stream, peer, listener, snapshot, stop))
            }
        },
    };
    Serving::Other(run(start))
}

/// A function returning a block rather than an `async fn`, which would keep `start` twice.
#[allow(clippy::manual_async_fn)]
fn run(start: Start) -> impl Future<Output = ()> + Send + 'static {
    async move {
        // The prologue's box is dropped at the end of its arm, before the data path runs.
        let path = match start {
            Start::Ready(path) => path,
            Start::Prologue(prologue) => prologue.await,
        };
        if let Some(path) = path {
            path.await;
        }
    }
}

/// How a connection starts: its data path at once, or a prologue to run first.
enum Start {
    /// `None`: the connection ends here (its listener was removed by a reload).
    Ready(Option<DataPath>),
    Prologue(Pin<Box<dyn Future<Output = Option<DataPath>> + Send>>),
}

/// What the listener asks of a connection before its data path, read once at accept time.
struct ListenerAsks {
    protocol: Protocol,
    /// Set when the peer must send a PROXY header.
    proxy_header: bool,
    deadline: std::time::Duration,
    /// Read at accept time: a reload's new certificates apply to new connections.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// A TCP listener with SNI routes: the ClientHello is read for its server name.
    passthrough: bool,
}

/// What a connection on a plain HTTP listener (no PROXY header, no TLS) is handed back as,
/// for the caller's own HTTP data path.
type PlainHttp<S> = (S, Peer, Arc<str>, SharedSnapshot, CancellationToken);

/// How the connection starts, or `Err` with everything handed back when it is a plain
/// connection on an HTTP listener: the caller runs the HTTP data path itself, unboxed.
///
/// A plain TCP connection (no PROXY header, no ClientHello to read) goes straight to its data
/// path, without boxing a prologue (one allocation and a copy of over a kilobyte per
/// connection, measurable when every request is a new connection).
fn start<S>(
    stream: S,
    peer: Peer,
    listener: Arc<str>,
    snapshot: SharedSnapshot,
    stop: CancellationToken,
) -> Result<Start, PlainHttp<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static + crate::proxy::tcp::IntoTcp,
{
    let asks = {
        let current = snapshot.load();
        // Removed by a reload an instant ago: drop the connection.
        let Some(config) = current.listener(&listener) else {
            return Ok(Start::Ready(None));
        };
        // A unix socket peer is a local process that passed the socket file's permissions:
        // it is trusted like a listed address.
        let proxy_header = config
            .proxy_protocol
            .as_ref()
            .is_some_and(|a| peer.client.is_none_or(|c| a.trusts(c.ip())));
        ListenerAsks {
            protocol: config.protocol,
            proxy_header,
            deadline: config.timeouts.client_header,
            tls: config.tls.as_ref().map(|t| Arc::clone(&t.server_config)),
            // SNI routes are on TCP listeners only (validation): the ClientHello is read for
            // them.
            passthrough: config.protocol == Protocol::Tcp && !config.sni_routes.is_empty(),
        }
    };
    if asks.proxy_header || asks.tls.is_some() || asks.passthrough {
        return Ok(Start::Prologue(Box::pin(prepare(
            stream, peer, asks, listener, snapshot, stop,
        ))));
    }
    match asks.protocol {
        Protocol::Http => Err((stream, peer, listener, snapshot, stop)),
        Protocol::Tcp => Ok(Start::Ready(Some(tcp_path(
            stream, peer, None, listener, snapshot, stop,
        )))),
    }
}

/// Everything before the data path: `None` when the connection ends in the prologue.
async fn prepare<S>(
    mut stream: S,
    mut peer: Peer,
    asks: ListenerAsks,
    listener: Arc<str>,
    snapshot: SharedSnapshot,
    stop: CancellationToken,
) -> Option<DataPath>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static + crate::proxy::tcp::IntoTcp,
{
    let ListenerAsks {
        protocol,
        proxy_header,
        deadline,
        tls,
        passthrough,
    } = asks;
    if proxy_header {
        match tokio::time::timeout(deadline, read_header(&mut stream)).await {
            Ok(Ok(Header::Proxied {
                source,
                destination,
            })) => {
                peer.client = Some(source);
                peer.local = Some(destination);
            }
            Ok(Ok(Header::Local)) => {}
            Ok(Err(error)) => {
                debug!(%listener, ?peer.client, error = %Chain(&error), "closing connection: bad PROXY header");
                return None;
            }
            Err(_) => {
                debug!(%listener, ?peer.client, "closing connection: no PROXY header in time");
                return None;
            }
        }
    }
    if let Some(server_config) = tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        let stream = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                let reason = crate::tls::client::failure_reason(&error);
                crate::metrics::tls_handshake_failure(&listener, reason);
                debug!(%listener, ?peer.client, error = %Chain(&error), "TLS handshake failed");
                return None;
            }
            Err(_) => {
                crate::metrics::tls_handshake_failure(&listener, "timeout");
                debug!(%listener, ?peer.client, "TLS handshake timed out");
                return None;
            }
        };
        let session = stream.get_ref().1;
        peer.tls = Some(Box::new(TlsInfo {
            version: match session.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                _ => "TLS",
            },
            sni: session.server_name().map(str::to_owned),
            alpn: session
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            // Verified by rustls against `tls.client_auth.ca` (only asked for there).
            client: session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(crate::tls::client::ClientCert::from_leaf)
                .map(Arc::new),
        }));
        // TLS is only configured on http listeners (validation refuses it on tcp ones).
        return http_path(stream, peer, listener, snapshot, stop);
    }
    if !passthrough {
        return plain_path(stream, peer, protocol, listener, snapshot, stop);
    }
    let hello = match crate::proxy::passthrough::read_client_hello(&mut stream, deadline).await {
        Ok(hello) => hello,
        Err(error) => {
            let reason = match error {
                crate::proxy::passthrough::HelloError::Timeout(_) => "timeout",
                _ => "not_tls",
            };
            crate::metrics::tls_passthrough_refused(&listener, reason);
            debug!(%listener, ?peer.client, error = %Chain(&error), "closing passthrough connection");
            return None;
        }
    };
    Some(tcp_path(
        stream,
        peer,
        Some(hello),
        listener,
        snapshot,
        stop,
    ))
}

/// The data path of a connection with nothing (more) to read before it.
fn plain_path<S>(
    stream: S,
    peer: Peer,
    protocol: Protocol,
    listener: Arc<str>,
    snapshot: SharedSnapshot,
    stop: CancellationToken,
) -> Option<DataPath>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static + crate::proxy::tcp::IntoTcp,
{
    match protocol {
        Protocol::Http => http_path(stream, peer, listener, snapshot, stop),
        Protocol::Tcp => Some(tcp_path(stream, peer, None, listener, snapshot, stop)),
    }
}

/// The L4 data path, with the ClientHello already read on a passthrough listener.
fn tcp_path<S>(
    stream: S,
    peer: Peer,
    hello: Option<crate::proxy::passthrough::ClientHello>,
    listener: Arc<str>,
    snapshot: SharedSnapshot,
    stop: CancellationToken,
) -> DataPath
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static + crate::proxy::tcp::IntoTcp,
{
    Box::pin(crate::proxy::tcp::serve_connection(
        stream, peer, hello, listener, snapshot, stop,
    ))
}

fn http_path<S>(
    stream: S,
    peer: Peer,
    listener: Arc<str>,
    snapshot: SharedSnapshot,
    stop: CancellationToken,
) -> Option<DataPath>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let path = crate::proxy::http::serve_connection(stream, peer, listener, snapshot, stop)?;
    Some(Box::pin(path))
}

/// Reads exactly one PROXY header, as many bytes at a time as the parser asks for.
pub async fn read_header<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Header, AcceptError> {
    let mut buffer = Vec::with_capacity(64);
    loop {
        match proxy_protocol::parse(&buffer)? {
            Parsed::Complete { header, .. } => return Ok(header),
            Parsed::Incomplete { needed } => {
                let have = buffer.len();
                buffer.resize(needed, 0);
                stream.read_exact(&mut buffer[have..]).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn reads_the_header_and_not_a_byte_more() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut bytes = proxy_protocol::encode_v2(
            "192.0.2.1:1000".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
        );
        bytes.extend_from_slice(b"payload");
        client.write_all(&bytes).await.unwrap();
        let header = read_header(&mut server).await.unwrap();
        assert!(matches!(header, Header::Proxied { .. }));
        let mut rest = [0u8; 7];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"payload");

        client
            .write_all(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nhello")
            .await
            .unwrap();
        assert!(read_header(&mut server).await.is_ok());
        let mut rest = [0u8; 5];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
    }

    #[tokio::test]
    async fn garbage_and_early_close_are_errors() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(
            read_header(&mut server).await,
            Err(AcceptError::Header(ParseError::NotProxy))
        ));
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"PROXY TCP4 1.2").await.unwrap();
        drop(client);
        assert!(matches!(
            read_header(&mut server).await,
            Err(AcceptError::Io(_))
        ));
    }
}
