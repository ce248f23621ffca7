//! The L4 data path: splice one client connection to one backend, both directions at once.
//!
//! Half-close is passed on: when one side finishes sending (FIN), the other side's socket is
//! shut down for writing while the opposite direction keeps flowing, which protocols like
//! `nc -N` or a PostgreSQL COPY rely on. The snapshot is loaded once per connection.

use crate::proxy::pick_backend;
use crate::state::SharedSnapshot;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tracing::{debug, warn};

pub async fn serve_connection(
    mut client: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    snapshot: SharedSnapshot,
) {
    let snapshot = snapshot.load_full();
    let Some(pool) = snapshot.pool_for_listener(&listener) else {
        return;
    };
    let Some(backend) = pick_backend(pool) else {
        warn!(%listener, pool = %pool.config.name, "no backend available; closing client connection");
        return;
    };
    let _in_flight = backend.state.acquire();
    let connect = TcpStream::connect(backend.address);
    let mut upstream = match tokio::time::timeout(pool.config.timeouts.connect, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            warn!(%listener, backend = %backend.address, %error, "backend connect failed");
            return;
        }
        Err(_) => {
            warn!(%listener, backend = %backend.address, "backend connect timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => {
            debug!(%peer, backend = %backend.address, sent, received, "tcp session closed");
        }
        Err(error) => {
            debug!(%peer, backend = %backend.address, %error, "tcp session ended with an error")
        }
    }
}
