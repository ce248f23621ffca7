//! The response body sluice sends to clients: a backend's streamed body or a short fixed text,
//! carrying the guards that must live exactly as long as the response is being sent.

use crate::backend::InFlight;
use crate::proxy::activity::RequestActive;
use crate::upstream::body::{UpstreamBody, UpstreamBodyError};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Deadlines on a streamed backend body: `idle` between two chunks, and the end of the whole
/// exchange (`timeouts.total`). On expiry the body fails, so the client sees the response
/// cut off (HTTP/1.1 closes the connection) instead of a hang.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    pub idle: Duration,
    pub total_deadline: Option<Instant>,
    /// For the timeout metric's label.
    pub pool: std::sync::Arc<str>,
    /// The listener's bytes-out counter.
    pub bytes_out: metrics::Counter,
}

#[derive(Debug)]
struct BodyTimer {
    limits: BodyLimits,
    /// Created on the first wait only: most small bodies are complete at the first poll.
    sleep: Option<Pin<Box<Sleep>>>,
    armed_at: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Upstream(#[from] UpstreamBodyError),
    #[error("backend body timed out ({0})")]
    Timeout(&'static str),
    #[error("response compression failed: {0}")]
    Compress(#[from] std::io::Error),
}

#[derive(Debug)]
enum Inner {
    Upstream(UpstreamBody),
    Fixed(Option<Bytes>),
}

/// Streams frames through without buffering; dropping it releases the backend's in-flight
/// count and marks the client connection idle again.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
    timer: Option<BodyTimer>,
    /// The access log line of this request, written when the body is done (bytes counted).
    log: Option<Box<PendingLog>>,
    _in_flight: Option<InFlight>,
    _active: Option<RequestActive>,
    /// Set when the response is compressed (`proxy::compress`): frames pass through it.
    compress: Option<Box<Compressing>>,
}

/// A compressed body's encoder and the trailers held back until its last bytes are out.
#[derive(Debug)]
struct Compressing {
    encoder: crate::proxy::compress::encoder::Encoder,
    trailers: Option<http::HeaderMap>,
}

impl ProxyBody {
    pub fn upstream(
        body: UpstreamBody,
        in_flight: InFlight,
        active: RequestActive,
        limits: BodyLimits,
    ) -> ProxyBody {
        ProxyBody {
            inner: Inner::Upstream(body),
            log: None,
            timer: Some(BodyTimer {
                limits,
                sleep: None,
                armed_at: None,
            }),
            _in_flight: Some(in_flight),
            _active: Some(active),
            compress: None,
        }
    }

    /// No body at all (a 101 answer: the bytes that follow belong to the tunnel).
    pub fn empty() -> ProxyBody {
        ProxyBody {
            inner: Inner::Fixed(None),
            timer: None,
            log: None,
            _in_flight: None,
            _active: None,
            compress: None,
        }
    }

    pub fn fixed(text: impl Into<Bytes>, active: Option<RequestActive>) -> ProxyBody {
        ProxyBody {
            inner: Inner::Fixed(Some(text.into())),
            timer: None,
            log: None,
            _in_flight: None,
            _active: active,
            compress: None,
        }
    }
}

impl ProxyBody {
    /// Compresses this body as it streams with `encoder`.
    pub fn compressed(mut self, encoder: crate::proxy::compress::encoder::Encoder) -> ProxyBody {
        self.compress = Some(Box::new(Compressing {
            encoder,
            trailers: None,
        }));
        self
    }

    /// Replaces a fixed body's text (an error page in place of sluice's plain text), keeping
    /// the guards it holds. A streamed body is left alone.
    pub fn set_fixed(&mut self, text: Bytes) {
        if let Inner::Fixed(data) = &mut self.inner {
            *data = Some(text);
        }
    }
}

/// An access log record waiting for its response to finish.
#[derive(Debug)]
pub struct PendingLog {
    pub record: crate::access_log::Record,
    pub started: tokio::time::Instant,
    pub sink: std::sync::Arc<crate::access_log::Sink>,
    pub format: crate::access_log::Format,
}

impl ProxyBody {
    /// Writes an access log line for this response once it has been sent (or abandoned).
    pub fn with_log(mut self, log: Option<Box<PendingLog>>) -> ProxyBody {
        self.log = log;
        self
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(mut log) = self.log.take() {
            log.record.duration_ms = log.started.elapsed().as_secs_f64() * 1000.0;
            log.sink.write(log.record.line(log.format));
        }
    }
}

impl ProxyBody {
    /// The next frame as the backend (or the fixed text) gives it, counted.
    fn poll_plain(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self;
        let counted = this.compress.is_none();
        match &mut this.inner {
            Inner::Upstream(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => {
                    if let Some(timer) = &mut this.timer {
                        timer.armed_at = None;
                    }
                    if let Some(Ok(frame)) = &frame
                        && let Some(data) = frame.data_ref()
                        && counted
                    {
                        if let Some(timer) = &this.timer {
                            timer.limits.bytes_out.increment(data.len() as u64);
                        }
                        if let Some(log) = &mut this.log {
                            log.record.bytes_out += data.len() as u64;
                        }
                    }
                    Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
                }
                Poll::Pending => match &mut this.timer {
                    Some(timer) => timer
                        .poll_expired(cx)
                        .map(|what| Some(Err(BodyError::Timeout(what)))),
                    None => Poll::Pending,
                },
            },
            Inner::Fixed(data) => {
                let frame = data.take();
                if let (Some(log), Some(bytes), true) = (&mut this.log, &frame, counted) {
                    log.record.bytes_out += bytes.len() as u64;
                }
                Poll::Ready(frame.map(|bytes| Ok(Frame::data(bytes))))
            }
        }
    }

    /// The next compressed frame: data through the encoder, flushed when the backend pauses,
    /// finished at the end (trailers wait for the last compressed bytes).
    fn poll_compressed(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(compress) = self.compress.as_mut() else {
                return self.poll_plain(cx);
            };
            if let Some(trailers) = compress.trailers.take() {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            if compress.encoder.is_finished() {
                return Poll::Ready(None);
            }
            let produced = match self.poll_plain(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Some(compress) = self.compress.as_mut() else {
                        continue;
                    };
                    match frame.into_data() {
                        Ok(data) => compress.encoder.write(&data),
                        Err(frame) => {
                            compress.trailers = frame.into_trailers().ok();
                            compress.encoder.finish()
                        }
                    }
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => {
                    let Some(compress) = self.compress.as_mut() else {
                        return Poll::Ready(None);
                    };
                    match compress.encoder.finish() {
                        Ok(None) => return Poll::Ready(None),
                        other => other,
                    }
                }
                Poll::Pending => {
                    let Some(compress) = self.compress.as_mut() else {
                        return Poll::Pending;
                    };
                    if !compress.encoder.needs_flush() {
                        return Poll::Pending;
                    }
                    match compress.encoder.flush() {
                        Ok(None) => return Poll::Pending,
                        other => other,
                    }
                }
            };
            match produced {
                Ok(Some(bytes)) => {
                    if let Some(log) = &mut self.log {
                        log.record.bytes_out += bytes.len() as u64;
                    }
                    if let Some(timer) = &self.timer {
                        timer.limits.bytes_out.increment(bytes.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Ok(None) => continue,
                Err(error) => return Poll::Ready(Some(Err(BodyError::Compress(error)))),
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.compress.is_some() {
            this.poll_compressed(cx)
        } else {
            this.poll_plain(cx)
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.compress.is_some() {
            // The encoder's last bytes are still to come after the backend's.
            return false;
        }
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Fixed(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.compress.is_some() {
            return SizeHint::default();
        }
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Fixed(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Inner::Fixed(None) => SizeHint::with_exact(0),
        }
    }
}

impl BodyTimer {
    /// Arms the deadline of this wait (the earlier of idle and total) and polls it.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<&'static str> {
        let now = Instant::now();
        let armed_at = *self.armed_at.get_or_insert(now);
        let idle_deadline = armed_at + self.limits.idle;
        let (deadline, what) = match self.limits.total_deadline {
            Some(total) if total < idle_deadline => (total, "total"),
            _ => (idle_deadline, "idle"),
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        ready!(sleep.as_mut().poll(cx));
        crate::metrics::timeout(
            &self.limits.pool,
            if what == "idle" { "body_idle" } else { "total" },
        );
        Poll::Ready(what)
    }
}
