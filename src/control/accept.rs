//! A listener's accept loops: accept (within `max_connections`), hand a connection to a less
//! loaded worker when workers share one socket, and serve it in a task of its own that holds
//! its slot. Stopped by the listener's token; started only by commit.

use crate::config::BindAddr;
use crate::listener;
use crate::listener::{Accepted, Bound};
use crate::proxy;
use crate::state::SharedSnapshot;
use crate::workers::{Balancer, OpenConnection};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// What one accept loop needs; cloned for each worker's loop.
#[derive(Clone)]
pub(super) struct AcceptLoop {
    pub(super) serve: ServeArgs,
    slots: Arc<listener::ConnectionSlots>,
    connections: TaskTracker,
    connections_total: metrics::Counter,
    /// With workers that share one socket: moves a new connection to a clearly less loaded
    /// worker.
    pub(super) balancer: Option<Balancer>,
}

/// What serving an accepted connection needs besides the connection.
#[derive(Clone)]
pub(super) struct ServeArgs {
    pub(super) name: Arc<str>,
    snapshot: SharedSnapshot,
    stop: CancellationToken,
    /// A listener bound to one address accepts connections only to it: each connection's
    /// local address is known without asking the kernel (a getsockname per connection).
    fixed_local: Option<SocketAddr>,
    /// The listener's wire byte counters, looked up once rather than per connection.
    wire: Arc<crate::metrics::wire::WireCounters>,
}

/// Serves an accepted connection in a task of its own on the calling runtime, holding its
/// slot (and counted on its worker) until it ends.
fn spawn_serving(
    accepted: Accepted,
    slot: listener::ConnectionSlot,
    serve: &ServeArgs,
    connections: &TaskTracker,
) {
    // The connection reads its listener's settings (protocol, PROXY header) from the
    // snapshot when it starts: a reload may have changed them.
    let serving = proxy::accept::serve(
        accepted,
        serve.fixed_local,
        Arc::clone(&serve.name),
        serve.snapshot.clone(),
        serve.stop.clone(),
        &serve.wire,
    );
    match serving {
        proxy::accept::Serving::Http(path) => connections.spawn(Holding::new(path, slot)),
        proxy::accept::Serving::Other(path) => connections.spawn(Holding::new(path, slot)),
    };
}

/// Serves a TCP connection accepted here on the worker of `worker` instead: out of this
/// worker's event loop, into that one's (two epoll changes and a wake-up of that worker,
/// paid only when the balancer moves a connection). Its task runs there, counted there.
fn hand_over(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: listener::ConnectionSlot,
    serve: ServeArgs,
    connections: &TaskTracker,
    worker: &tokio::runtime::Handle,
) {
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            warn!(listener = %serve.name, %error, "cannot move a connection to another worker; closed");
            return;
        }
    };
    crate::metrics::worker_connection_moved();
    let tracker = connections.clone();
    connections.spawn_on(
        async move {
            match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => {
                    spawn_serving(Accepted::Tcp(stream, peer), slot, &serve, &tracker);
                }
                Err(error) => {
                    warn!(listener = %serve.name, %error, "cannot take a moved connection; closed");
                }
            }
        },
        worker,
    );
}

impl AcceptLoop {
    pub(super) fn new(
        name: Arc<str>,
        socket: &Bound,
        snapshot: SharedSnapshot,
        stop: CancellationToken,
        slots: Arc<listener::ConnectionSlots>,
        tracker: &TaskTracker,
    ) -> AcceptLoop {
        let handles = crate::metrics::listener_handles(&name);
        let connections_total = handles.connections.clone();
        let wire = Arc::clone(&handles.wire);
        let fixed_local = match socket.local() {
            Ok(BindAddr::Tcp(addr)) if !addr.ip().is_unspecified() => Some(addr),
            _ => None,
        };
        AcceptLoop {
            serve: ServeArgs {
                name,
                snapshot,
                stop,
                fixed_local,
                wire,
            },
            slots,
            connections: tracker.clone(),
            connections_total,
            balancer: None,
        }
    }

    pub(super) async fn run(self, socket: Bound) {
        let AcceptLoop {
            serve,
            slots,
            connections,
            connections_total,
            balancer,
        } = self;
        let ServeArgs {
            name,
            snapshot,
            stop,
            ..
        } = &serve;
        loop {
            // Read the limit each time: a reload may change it.
            let limit = snapshot
                .load()
                .listener(name)
                .and_then(|l| l.max_connections);
            if let Some(limit) = limit {
                tokio::select! {
                    () = slots.wait_below(limit as usize) => {}
                    () = stop.cancelled() => break,
                }
            }
            let accepted = tokio::select! {
                accepted = socket.accept() => accepted,
                () = stop.cancelled() => break,
            };
            let accepted = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE/ENFILE and friends: back off briefly instead of spinning; the
                    // pending connections wait in the kernel backlog meanwhile.
                    warn!(listener = %name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match limit {
                None => slots.take(),
                // Another worker's loop may have taken the last slot since the wait above:
                // this connection then waits here as it would have in the kernel's backlog.
                Some(limit) => tokio::select! {
                    slot = slots.take_when_below(limit as usize) => slot,
                    () = stop.cancelled() => break,
                },
            };
            connections_total.increment(1);
            let accepted = match (&balancer, accepted) {
                (Some(balancer), Accepted::Tcp(stream, peer)) => {
                    match balancer.elsewhere(crate::workers::current_index()) {
                        Some(worker) => {
                            hand_over(stream, peer, slot, serve.clone(), &connections, worker);
                            continue;
                        }
                        None => Accepted::Tcp(stream, peer),
                    }
                }
                (_, accepted) => accepted,
            };
            spawn_serving(accepted, slot, &serve, &connections);
        }
        // Dropping the socket closes it: the kernel refuses new connections at once.
        drop(socket);
    }
}

pin_project_lite::pin_project! {
    /// A connection's future and its slot, which is freed when the task ends. Written out
    /// rather than an `async` block that awaits the future: such a block keeps room for the
    /// future twice (as captured and as awaited), in every connection's task.
    struct Holding<F> {
        #[pin]
        future: F,
        slot: listener::ConnectionSlot,
        on_worker: OpenConnection,
    }
}

impl<F> Holding<F> {
    fn new(future: F, slot: listener::ConnectionSlot) -> Holding<F> {
        Holding {
            future,
            slot,
            on_worker: OpenConnection::count(),
        }
    }
}

impl<F: std::future::Future<Output = ()>> std::future::Future for Holding<F> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.project().future.poll(cx)
    }
}
