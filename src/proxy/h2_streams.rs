//! Running an HTTP/2 connection's streams on the connection's own task.
//!
//! hyper hands every request stream of an HTTP/2 connection to an executor. With tokio's
//! (`TokioExecutor`) each stream becomes a task of its own, and per request that costs a
//! task allocation with a copy of the whole request future into it, an insertion into and a
//! removal from the runtime's task list, a trip through the scheduler to start it, and another
//! wake-up of the connection task for every response it must write. On a worker that serves
//! many small requests over few connections (h2load: 64 connections x 10 streams, 13 B
//! answers) that is a visible part of sluice's CPU per request, where HAProxy and nginx run a
//! connection's streams in the connection's own event handler.
//!
//! Here `StreamExec` only queues the stream futures hyper gives it, and `WithStreams` polls
//! them right after the connection, in a `FuturesUnordered`: a stream woken by its upstream
//! wakes only the connection's task, and the connection writes the answers that its streams
//! produced in the same turn, several per write.
//!
//! What changes for a request: a stream never outlives its connection. When the connection
//! ends (the client closed it, or it broke), streams still in progress are dropped, which is
//! what hyper does with a stream the client reset: the request is cancelled, its upstream
//! exchange abandoned, and it is logged as the client's doing (499). A graceful shutdown waits
//! for the streams as before, since the connection only ends once they are answered.
//!
//! Imports nothing of sluice's: it knows hyper's executor trait and futures only.

use futures_util::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

/// How many times one poll goes round connection and streams at most.
const TURNS: usize = 8;

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor handed to hyper's HTTP/2 builder: it keeps the futures for `WithStreams`.
#[derive(Clone, Default)]
pub struct StreamExec {
    queue: Arc<Mutex<Vec<StreamFuture>>>,
}

impl StreamExec {
    fn take(&self) -> Vec<StreamFuture> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut *queue)
        }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(future));
    }
}

pin_project_lite::pin_project! {
    /// A connection future (hyper's HTTP/2 connection) together with its streams: ready when
    /// the connection is.
    pub struct WithStreams<C> {
        #[pin]
        connection: C,
        exec: StreamExec,
        streams: FuturesUnordered<StreamFuture>,
    }
}

impl<C> WithStreams<C> {
    /// `exec` must be the executor `connection` was built with.
    pub fn new(connection: C, exec: StreamExec) -> WithStreams<C> {
        WithStreams {
            connection,
            exec,
            streams: FuturesUnordered::new(),
        }
    }

    /// The connection itself (for a graceful shutdown).
    pub fn connection(self: Pin<&mut Self>) -> Pin<&mut C> {
        self.project().connection
    }
}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        // A turn repeats while streams started or finished, so that the connection writes
        // what they queued at once; bounded, so that one busy connection cannot hold the
        // worker (past the bound it asks to be polled again, after the other tasks).
        for _ in 0..TURNS {
            if let Poll::Ready(output) = this.connection.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            let new = this.exec.take();
            let had_new = !new.is_empty();
            this.streams.extend(new);
            // Poll streams until none is ready: finished ones are dropped here. (It yields by
            // itself after a while, having woken this task to come back.)
            let mut progressed = false;
            while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(cx) {
                progressed = true;
            }
            if !had_new && !progressed {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Streams queued while the connection is polled run in the same poll, and the whole is
    /// ready when the connection is.
    #[tokio::test]
    async fn streams_run_with_their_connection() {
        let exec = StreamExec::default();
        let ran = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let connection = {
            let exec = exec.clone();
            let ran = Arc::clone(&ran);
            async move {
                for _ in 0..3 {
                    let ran = Arc::clone(&ran);
                    exec.execute(async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                    });
                }
                // The connection waits for its peer, as hyper's waits for the socket.
                let _ = rx.await;
                "closed"
            }
        };
        let mut with = Box::pin(WithStreams::new(connection, exec));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(with.as_mut().poll(&mut cx).is_pending());
        assert_eq!(ran.load(Ordering::SeqCst), 3);
        assert!(with.streams.is_empty());
        tx.send(()).unwrap();
        assert_eq!(with.as_mut().poll(&mut cx), Poll::Ready("closed"));
    }

    /// A stream still waiting when its connection ends is dropped with it.
    #[tokio::test]
    async fn streams_end_with_their_connection() {
        let exec = StreamExec::default();
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Guard(Arc<AtomicUsize>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let guard = Guard(Arc::clone(&dropped));
        exec.execute(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        let mut with = Box::pin(WithStreams::new(
            async move {
                let _ = rx.await;
            },
            exec,
        ));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(with.as_mut().poll(&mut cx).is_pending());
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        tx.send(()).unwrap();
        assert!(with.as_mut().poll(&mut cx).is_ready());
        drop(with);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}
