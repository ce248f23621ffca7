//! What happens to an accepted connection before a data path takes it: the PROXY protocol
//! header (when the listener accepts one from this peer) and the choice of the HTTP or TCP
//! data path, both read from the snapshot at accept time.
//!
//! A trusted peer must send a valid header within the listener's `client_header` timeout;
//! otherwise the connection is closed without a byte written (what HAProxy and nginx do).
//! Untrusted peers are served as plain connections with their own address, so they cannot
//! spoof one. Exactly the header's bytes are read, so the data path sees the payload intact.

use crate::config::Protocol;
use crate::proxy_protocol::{self, Header, ParseError, Parsed};
use crate::state::SharedSnapshot;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Header(#[from] ParseError),
}

/// Serves one accepted connection on `listener` until it ends.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    snapshot: SharedSnapshot,
    stop: CancellationToken,
) {
    let (protocol, accept_proxy, deadline) = {
        let current = snapshot.load();
        // Removed by a reload an instant ago: drop the connection.
        let Some(config) = current.listener(&listener) else {
            return;
        };
        (
            config.protocol,
            config.proxy_protocol.clone(),
            config.timeouts.client_header,
        )
    };
    let Ok(mut local) = stream.local_addr() else {
        return;
    };
    let mut client = peer;
    if accept_proxy.is_some_and(|a| a.trusts(peer.ip())) {
        match tokio::time::timeout(deadline, read_header(&mut stream)).await {
            Ok(Ok(Header::Proxied {
                source,
                destination,
            })) => {
                client = source;
                local = destination;
            }
            Ok(Ok(Header::Local)) => {}
            Ok(Err(error)) => {
                debug!(%listener, %peer, %error, "closing connection: bad PROXY header");
                return;
            }
            Err(_) => {
                debug!(%listener, %peer, "closing connection: no PROXY header in time");
                return;
            }
        }
    }
    match protocol {
        Protocol::Http => {
            crate::proxy::http::serve_connection(stream, client, local, listener, snapshot, stop)
                .await
        }
        Protocol::Tcp => {
            crate::proxy::tcp::serve_connection(stream, client, local, listener, snapshot, stop)
                .await
        }
    }
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
