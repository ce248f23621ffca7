//! The I/O data paths: `tcp` (L4) and `http` (L7), plus what they share. Both read the current
//! snapshot and ask the pool's balancer for a backend; neither writes any shared state except
//! the per-backend atomics through RAII guards.

pub mod accept;
pub mod activity;
pub mod admission;
pub mod answer_log;
pub mod body;
pub mod client_conn;
pub mod compress;
pub mod direct;
pub mod error_page;
pub mod forward;
pub mod h1;
pub mod h2_streams;
pub mod http;
pub mod mirror;
pub mod passthrough;
pub mod request_id;
pub mod sni;
pub mod splice;
pub mod tcp;
pub mod tunnel;
#[cfg(target_os = "linux")]
pub mod zero_copy;

// The clock lives in `crate::clock` (state and the probes read it too); the data path keeps
// its short names.
pub use crate::clock::{clock_instant, clock_micros};
// The request body sluice sends upstream is `upstream`'s type; the data path keeps its path.
pub use crate::upstream::request_body;

use crate::backend::{Backend, InFlight};
use crate::balance::PickContext;
use crate::state::Pool;
use std::cell::RefCell;
use std::net::SocketAddr;

/// What a connection knows about its client once accepted (and after the PROXY header and
/// the TLS handshake, when there are any).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// `None`: a unix socket client that sent no PROXY header (it has no address).
    pub client: Option<SocketAddr>,
    /// The address the client connected to; `None` on a unix socket.
    pub local: Option<SocketAddr>,
    /// Set on TLS listeners once the handshake is done. Boxed: every connection's context
    /// holds a `Peer`, and most connections are not TLS.
    pub tls: Option<Box<TlsInfo>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    pub sni: Option<String>,
    /// The ALPN protocol agreed on (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// The client's verified certificate (`tls.client_auth`), read once per connection.
    pub client: Option<std::sync::Arc<crate::tls::client::ClientCert>>,
}

impl Peer {
    /// The PROXY header to write upstream for this client: the addresses when known, else
    /// the spec's "unknown" form (the backend then uses the connection's own addresses).
    pub fn proxy_header(&self, version: crate::config::SendProxy) -> Vec<u8> {
        match (self.client, self.local) {
            (Some(client), Some(local)) => crate::proxy_protocol::encode(version, client, local),
            _ => crate::proxy_protocol::encode_unknown(version),
        }
    }
}

thread_local! {
    /// One RNG per worker thread: selection needs cheap randomness and no shared lock.
    static RNG: RefCell<fastrand::Rng> = RefCell::new(fastrand::Rng::new());
}

/// Runs `f` with this worker thread's RNG.
pub fn with_rng<R>(f: impl FnOnce(&mut fastrand::Rng) -> R) -> R {
    RNG.with(|rng| f(&mut rng.borrow_mut()))
}

/// How many times a pick is retried when the chosen backend filled up between the pick and
/// the acquire (another thread took its last `max_connections` slot).
const PICK_ATTEMPTS: usize = 3;

/// Asks the pool's algorithm for a backend and takes an in-flight slot on it; `None` when no
/// backend is available.
pub fn pick_backend<'p>(pool: &'p Pool, context: &PickContext) -> Option<(&'p Backend, InFlight)> {
    pick_backend_where(pool, context, |_| true)
}

/// Like `pick_backend`, but only accepts a backend for which `accept` holds (retries use it
/// to prefer backends not tried yet); gives up after `PICK_ATTEMPTS` picks.
pub fn pick_backend_where<'p>(
    pool: &'p Pool,
    context: &PickContext,
    accept: impl Fn(&Backend) -> bool,
) -> Option<(&'p Backend, InFlight)> {
    RNG.with(|rng| {
        let mut rng = rng.borrow_mut();
        let slow_start = pool.config.health.slow_start;
        for attempt in 0..PICK_ATTEMPTS {
            let index = pool.balancer.pick(&pool.backends, context, &mut rng)?;
            let backend = pool.backends.get(index)?;
            if !accept(backend) {
                continue;
            }
            // Slow start, for every algorithm alike: a backend warming up keeps a pick with
            // probability equal to its weight share so far, else the pick is made again
            // (the last attempt always keeps it, so a pool of one still serves).
            let last = attempt + 1 == PICK_ATTEMPTS;
            if slow_start.is_some() && !last {
                let factor = backend
                    .state
                    .health
                    .slow_start_factor(clock_micros(), slow_start);
                if factor < 1.0 && rng.f64() >= factor {
                    continue;
                }
            }
            if let Some(in_flight) = backend.try_acquire() {
                // A half-open breaker admits only a few probes; the pick's availability check
                // could not reserve one.
                if backend.state.breaker.admit(backend.breaker.as_deref()) {
                    return Some((backend, in_flight));
                }
            }
        }
        None
    })
}
