//! Worker threads for `runtime.scheduler: per_thread`: N OS threads, each running a
//! current-thread tokio runtime of its own (event loop, timers, tasks), as nginx's worker
//! processes and HAProxy's threads each run one event loop.
//!
//! Every listener runs one accept loop per worker (on a socket of its SO_REUSEPORT group, or
//! on a duplicate of its one socket), and a connection is served start to end by one worker:
//! no work-stealing bookkeeping, no wake-ups that cross threads, and upstream keep-alive
//! connections kept per worker (`upstream::h1`). Reloads, health probes, discovery, the admin API and signals stay
//! on the runtime that started the server (the control thread).
//!
//! Owns the threads and their runtime handles, the calling thread's worker index, each
//! worker's count of open connections and the pure rule that balances them (`Balancer`). It
//! does not know about listeners or sockets.

use std::cell::{Cell, OnceCell};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// This thread's worker index; 0 on any thread that is not a worker (the control thread,
    /// the threads of a work-stealing runtime), which then share slot 0 of per-worker state.
    static INDEX: Cell<usize> = const { Cell::new(0) };
    /// This worker's count of open connections (unset outside worker threads).
    static OPEN: OnceCell<Arc<OpenCount>> = const { OnceCell::new() };
}

/// The calling thread's worker index (0 outside worker threads).
pub fn current_index() -> usize {
    INDEX.with(Cell::get)
}

/// One worker's open connections, on a cache line of its own (each worker writes its own).
#[derive(Debug, Default)]
#[repr(align(128))]
struct OpenCount(AtomicUsize);

/// Counts one open connection on the calling worker until dropped; nothing outside worker
/// threads. Zero-sized, so a connection's task grows by nothing. A connection's task never
/// leaves the worker that runs it (a current-thread runtime drops its tasks on its own thread
/// too), so the count it adds to is the one it takes from.
#[derive(Debug)]
pub struct OpenConnection(());

impl OpenConnection {
    pub fn count() -> OpenConnection {
        OPEN.with(|open| {
            if let Some(open) = open.get() {
                open.0.fetch_add(1, Ordering::Relaxed);
            }
        });
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        // `try_with`: a task dropped while its thread exits finds the slot gone.
        let _ = OPEN.try_with(|open| {
            if let Some(open) = open.get() {
                open.0.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
}

/// The worker threads. Dropping it stops them: each runtime drops the tasks still on it.
pub struct Workers {
    balancer: Balancer,
    /// Sending (or dropping) one ends that worker's `block_on`.
    stops: Vec<oneshot::Sender<()>>,
}

/// Moves a new connection off a worker that holds clearly more connections than the least
/// loaded one, for listeners whose workers share one socket: there the worker that wins the
/// kernel's wake-up race tends to win them all (50 keep-alive connections opened at once went
/// 50/0 over two workers in 5 of 6 tries). HAProxy likewise passes accepted connections to a
/// less loaded thread, and Envoy has an "exact balance" option. Not used with reuseport: its
/// hash spreads connections well enough (at worst 29/21 in the same tries), and under a high
/// rate of short connections the counts wobble so much that moving cost 5% more CPU per
/// connection (a third of them moved) for no gain measurable on two cores.
#[derive(Clone)]
pub struct Balancer {
    handles: Arc<[Handle]>,
    open: Arc<[Arc<OpenCount>]>,
}

impl Balancer {
    /// The runtime of the worker that a connection accepted on worker `me` should be served
    /// by instead, if any.
    pub fn elsewhere(&self, me: usize) -> Option<&Handle> {
        let mine = self.open.get(me)?.0.load(Ordering::Relaxed);
        let (least, fewest) = self
            .open
            .iter()
            .map(|open| open.0.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, open)| open)?;
        (least != me && should_move(mine, fewest)).then(|| &self.handles[least])
    }
}

/// Whether a worker holding `mine` open connections should pass a new one to a worker
/// holding `fewest`. Only a clear gap moves one: two connections at least, and an eighth of
/// the smaller count, so counts that wobble under a high rate of short connections do not
/// move every connection (each move costs two epoll changes and a cross-thread wake-up).
pub fn should_move(mine: usize, fewest: usize) -> bool {
    mine >= fewest + 2.max(fewest / 8)
}

impl Workers {
    /// Starts `count` workers, numbered from 0.
    pub fn start(count: usize) -> io::Result<Workers> {
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        let mut open = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            let count = Arc::new(OpenCount::default());
            open.push(Arc::clone(&count));
            std::thread::Builder::new()
                .name(format!("sluice-worker-{index}"))
                .spawn(move || {
                    INDEX.set(index);
                    OPEN.with(|open| {
                        let _ = open.set(count);
                    });
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
        }
        Ok(Workers {
            balancer: Balancer {
                handles: handles.into(),
                open: open.into(),
            },
            stops,
        })
    }

    pub fn handles(&self) -> &[Handle] {
        &self.balancer.handles
    }

    pub fn balancer(&self) -> Balancer {
        self.balancer.clone()
    }

    /// Open connections of each worker, by index: how evenly they are spread.
    pub fn open_connections(&self) -> Vec<usize> {
        self.balancer
            .open
            .iter()
            .map(|open| open.0.load(Ordering::Relaxed))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.balancer.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.balancer.handles.is_empty()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Not joined: the last reference to the server may be dropped on a worker itself.
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_knows_its_index_and_runs_what_is_spawned_on_it() {
        let workers = Workers::start(3).expect("workers start");
        assert_eq!(workers.len(), 3);
        let (tx, rx) = std::sync::mpsc::channel();
        for (expected, handle) in workers.handles().iter().enumerate() {
            let tx = tx.clone();
            handle.spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                let _ = tx.send((expected, current_index(), name));
            });
        }
        let mut seen: Vec<_> = (0..3)
            .map(|_| {
                rx.recv_timeout(std::time::Duration::from_secs(5))
                    .expect("every worker runs its task")
            })
            .collect();
        seen.sort();
        for (expected, index, name) in seen {
            assert_eq!(index, expected);
            assert_eq!(name, Some(format!("sluice-worker-{expected}")));
        }
        assert_eq!(current_index(), 0, "the test thread is not a worker");
    }

    /// Holds `count` open connections on worker `index` until the returned sender is used
    /// or dropped; returns once they are counted.
    fn hold_connections(
        workers: &Workers,
        index: usize,
        count: usize,
    ) -> tokio::sync::oneshot::Sender<()> {
        let (opened, counted) = std::sync::mpsc::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        workers.handles()[index].spawn(async move {
            let held: Vec<_> = (0..count).map(|_| OpenConnection::count()).collect();
            let _ = opened.send(());
            let _ = released.await;
            drop(held);
        });
        counted
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the task runs");
        release
    }

    #[test]
    fn open_connections_are_counted_on_the_worker_that_holds_them() {
        let workers = Workers::start(2).expect("workers start");
        let release = hold_connections(&workers, 1, 2);
        assert_eq!(workers.open_connections(), vec![0, 2]);
        // Outside a worker nothing is counted.
        drop(OpenConnection::count());
        assert_eq!(workers.open_connections(), vec![0, 2]);
        let _ = release.send(());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while workers.open_connections() != vec![0, 0] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "closed connections uncounted"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn only_a_clear_gap_moves_a_connection() {
        assert!(!should_move(0, 0));
        assert!(
            !should_move(1, 0),
            "one ahead is as even as an odd count gets"
        );
        assert!(should_move(2, 0));
        assert!(!should_move(26, 25));
        // Large counts need an eighth more: 98 against 88 is close enough, 99 is not.
        assert!(!should_move(98, 88));
        assert!(should_move(99, 88));
    }

    #[test]
    fn the_balancer_points_at_the_least_loaded_worker_only_past_the_gap() {
        let workers = Workers::start(3).expect("workers start");
        let balancer = workers.balancer();
        let release = hold_connections(&workers, 0, 3);
        assert_eq!(workers.open_connections(), vec![3, 0, 0]);
        let elsewhere = balancer.elsewhere(0).expect("3 against 0 moves");
        assert!(
            std::ptr::eq(elsewhere, &workers.handles()[1]),
            "the first of the least loaded"
        );
        assert!(
            balancer.elsewhere(1).is_none(),
            "the least loaded keeps its own"
        );
        assert!(balancer.elsewhere(7).is_none(), "no such worker");
        let _ = release.send(());
    }

    #[test]
    fn dropping_the_workers_ends_their_threads() {
        let workers = Workers::start(1).expect("workers start");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A task that never ends holds `tx`: the runtime drops it when the worker stops.
        workers.handles()[0].spawn(async move {
            let _held = tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        let ended = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(ended, Err(std::sync::mpsc::RecvTimeoutError::Disconnected));
    }
}
