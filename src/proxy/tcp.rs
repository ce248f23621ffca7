//! The L4 data path: splice one client connection to one backend, both directions at once.
//!
//! Half-close is passed on: when one side finishes sending (FIN), the other side's socket is
//! shut down for writing while the opposite direction keeps flowing, which protocols like
//! `nc -N` or a PostgreSQL COPY rely on. The snapshot is loaded once per connection.
//! A pool with `send_proxy` gets a PROXY protocol header before the first client byte (and
//! before the TLS handshake, when the pool has `tls:`: sluice then originates TLS and the
//! session carries the client's bytes inside it). Unix socket backends work the same way.
//! A failed connect is retried on another backend; a session quiet for the pool's
//! `timeouts.idle` is closed. When both ends are plain TCP sockets (Linux), the bytes move
//! with splice(2) once a session shows bulk traffic (`zero_copy`); TLS to the backend and
//! unix sockets keep the userspace copy (`splice`).

use crate::backend::{Backend, InFlight};
use crate::balance::PickContext;
use crate::config::{BackendAddress, route_by_sni};
use crate::error::Chain;
use crate::metrics::wire::{Metered, WireCounters};
use crate::probe::report_outcome;
use crate::proxy::passthrough::ClientHello;
use crate::proxy::splice::{Limits, SpliceEnd, splice};
use crate::proxy::{Peer, clock_micros, pick_backend_where};
use crate::state::{Pool, SharedSnapshot};
use crate::upstream::connector::Conn;
use crate::upstream::tls::Alpn;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Splices until either side closes. Once `stop` fires (shutdown, or the listener removed by
/// a reload) the session may go on for the drain deadline, then it is closed.
///
/// `hello` (passthrough listeners) is the ClientHello already read: it picks the pool by its
/// server name and is written to the backend first.
pub async fn serve_connection<S>(
    client: S,
    peer: Peer,
    hello: Option<ClientHello>,
    listener: Arc<str>,
    snapshot: SharedSnapshot,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + IntoTcp,
{
    let snapshot = snapshot.load_full();
    let drain_timeout = snapshot.config.runtime.drain_timeout;
    // Access rules, the per-client connection cap and the connection rate, before a
    // backend is picked: a refused client is closed without a byte either way.
    let _place = match (snapshot.listener(&listener), snapshot.edge(&listener)) {
        (Some(config), Some(state)) => {
            let client = peer.client.map(|c| c.ip());
            match crate::edge::judge_connection(&listener, config, state, client, clock_micros()) {
                Ok(place) => place,
                Err(refusal) => {
                    debug!(%listener, ?client, rule = %refusal.rule, "closing connection: {}", refusal.reason);
                    return;
                }
            }
        }
        _ => None,
    };
    let routed = match &hello {
        None => None,
        Some(hello) => snapshot
            .listener(&listener)
            .and_then(|l| route_by_sni(&l.sni_routes, hello.sni.as_deref()))
            .and_then(|route| snapshot.pools.get(&route.pool)),
    };
    let Some(pool) = routed.or_else(|| snapshot.pool_for_listener(&listener)) else {
        if let Some(hello) = &hello {
            crate::metrics::tls_passthrough_refused(&listener, "no_route");
            debug!(%listener, sni = ?hello.sni, "closing passthrough connection: no route and no default pool");
        }
        return;
    };
    let peer_addr = peer.client;
    let pick_context = PickContext::for_connection(&pool.config, peer_addr, clock_micros());
    let header = pool
        .config
        .send_proxy
        .map(|version| peer.proxy_header(version));
    let Some((backend, _in_flight, mut upstream)) =
        connect_with_redispatch(pool, &pick_context, &listener, header.as_deref()).await
    else {
        return;
    };
    if let Some(hello) = &hello
        && let Err(error) = upstream.write_all(&hello.bytes).await
    {
        debug!(%listener, backend = %backend.address, %error, "forwarding the ClientHello failed");
        return;
    }
    let limits = Limits {
        idle: pool.config.timeouts.idle,
        drain: drain_timeout,
    };
    let backend_address = &backend.address;
    match forward(client, upstream, limits, &stop).await {
        SpliceEnd::Closed(Ok((sent, received))) => {
            let (bytes_in, bytes_out) = crate::metrics::listener_bytes(&listener);
            bytes_in.increment(sent);
            bytes_out.increment(received);
            debug!(peer = ?peer_addr, backend = %backend_address, sent, received, "tcp session closed");
        }
        SpliceEnd::Closed(Err(error)) => {
            debug!(peer = ?peer_addr, backend = %backend_address, %error, "tcp session ended with an error");
        }
        SpliceEnd::Idle => {
            crate::metrics::timeout(&pool.name, "tcp_idle");
            debug!(peer = ?peer_addr, backend = %backend_address, "tcp session closed: idle");
        }
        SpliceEnd::Drained => {
            debug!(peer = ?peer_addr, backend = %backend_address, "tcp session closed at the drain deadline");
        }
    }
}

/// A client stream the L4 path may hand to splice(2): a plain TCP socket, nothing else.
/// With it come the wire counters the spliced bytes must be added to (the wrapper that
/// counted them is gone once the socket is handed over).
pub trait IntoTcp: Sized {
    fn into_tcp(self) -> Result<(TcpStream, Option<Arc<WireCounters>>), Self>;
}

impl IntoTcp for TcpStream {
    fn into_tcp(self) -> Result<(TcpStream, Option<Arc<WireCounters>>), Self> {
        Ok((self, None))
    }
}

impl IntoTcp for UnixStream {
    fn into_tcp(self) -> Result<(TcpStream, Option<Arc<WireCounters>>), Self> {
        Err(self)
    }
}

impl<S: IntoTcp> IntoTcp for Metered<S> {
    fn into_tcp(self) -> Result<(TcpStream, Option<Arc<WireCounters>>), Self> {
        let (inner, counters) = self.into_parts();
        match inner.into_tcp() {
            Ok((tcp, _)) => Ok((tcp, Some(counters))),
            Err(inner) => Err(Metered::new(inner, counters)),
        }
    }
}

/// Moves the session's bytes: with splice(2) when both ends are plain TCP sockets on Linux
/// (`zero_copy`), with the userspace copy otherwise (TLS to the backend, unix sockets).
async fn forward<S>(
    client: S,
    upstream: Conn,
    limits: Limits,
    stop: &CancellationToken,
) -> SpliceEnd
where
    S: AsyncRead + AsyncWrite + Unpin + IntoTcp,
{
    #[cfg(target_os = "linux")]
    let upstream = match upstream {
        Conn::Tcp(backend) => {
            return match client.into_tcp() {
                Ok((client, client_wire)) => {
                    let (backend, backend_wire) = backend.into_parts();
                    let end = crate::proxy::zero_copy::forward(client, backend, limits, stop).await;
                    // Spliced bytes never pass the wrappers: counted here, when the session
                    // closes (an idle or drained end reports no totals).
                    if let SpliceEnd::Closed(Ok((sent, received))) = &end {
                        if let Some(wire) = client_wire {
                            wire.add(*sent, *received);
                        }
                        backend_wire.add(*received, *sent);
                    }
                    end
                }
                Err(client) => splice(client, Conn::Tcp(backend), limits, stop).await,
            };
        }
        other => other,
    };
    splice(client, upstream, limits, stop).await
}

/// Picks a backend and connects (PROXY header, then TLS when the pool has it); a failed
/// connect (no client byte was sent) is retried on another backend, up to the pool's retry
/// attempts, as HAProxy's `redispatch` does.
async fn connect_with_redispatch<'p>(
    pool: &'p Pool,
    pick_context: &PickContext,
    listener: &str,
    preamble: Option<&[u8]>,
) -> Option<(&'p Backend, InFlight, Conn)> {
    let mut tried: Vec<&BackendAddress> = Vec::new();
    for _ in 0..=pool.config.resilience.retry.attempts {
        let picked = pick_backend_where(pool, pick_context, |b| !tried.contains(&&b.address))
            .or_else(|| pick_backend_where(pool, pick_context, |_| true));
        let Some((backend, in_flight)) = picked else {
            warn!(%listener, pool = %pool.config.name, "no backend available; closing client connection");
            return None;
        };
        tried.push(&backend.address);
        let connect_started = clock_micros();
        match connect(pool, &backend.address, preamble).await {
            Ok(stream) => {
                // The connect time is the only latency an L4 proxy sees (p2c's EWMA uses it).
                let now = clock_micros();
                backend
                    .state
                    .record_latency(now.saturating_sub(connect_started), now);
                report_outcome(pool, backend, true, "");
                return Some((backend, in_flight, stream));
            }
            Err(error) => {
                backend.state.count_failure();
                report_outcome(
                    pool,
                    backend,
                    false,
                    &format!("connect failed: {}", Chain(&error)),
                );
                warn!(%listener, backend = %backend.address, error = %Chain(&error), "backend connect failed");
            }
        }
    }
    None
}

async fn connect(
    pool: &Pool,
    address: &BackendAddress,
    preamble: Option<&[u8]>,
) -> std::io::Result<Conn> {
    let dialer = pool.client.dialer();
    let mut conn = dialer.open(address).await?;
    if let Some(header) = preamble {
        conn.write_all(header).await?;
    }
    // No ALPN: the bytes inside are whatever the client speaks.
    dialer.secure(conn, address, Alpn::None).await
}
