//! A backend's HTTP/1 response body, read from the connection as the client takes it, in its
//! framing (length, chunked, or until close). When the body ends cleanly on a connection the
//! backend keeps open, the connection goes back to the idle pool; dropped early, it is closed.
//!
//! A body that arrived whole with the head (the usual small response) is `Complete`: the
//! connection was already returned, and no socket is touched again for this response.

use super::chunked::{ChunkError, ChunkedDecoder, Decoded};
use super::send::{SendError, Sending};
use super::{H1Pool, IdleConn, reserve_for_read};

/// The largest piece of a body read at once (what a slow client can make sluice hold per
/// response, beside the kernel's buffers). 16 KiB, HAProxy's buffer size too: relaying a
/// large body in pieces of this size lets the client start on it while the rest is still
/// coming from the backend. Measured on 64 KiB responses (benches/loadtest.py `64k`, A/B in
/// one run): 16 KiB served 12% more requests per second than 64 KiB at the same CPU per
/// request, and 28% more than 32 KiB.
const MAX_READ: usize = 16 * 1024;
use crate::config::BackendAddress;
use crate::upstream::connector::Conn;
use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// Why a backend body stopped before its end.
/// A variant with an inner error says what failed; the inner error is its `source`
/// (rendered by `crate::error::Chain`).
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    #[error("reading from the backend failed")]
    Read(#[from] io::Error),
    #[error("the backend closed the connection before the body ended")]
    Truncated,
    #[error(transparent)]
    Chunked(#[from] ChunkError),
    #[error(transparent)]
    Send(#[from] SendError),
}

#[derive(Debug)]
pub enum H1Body {
    Complete(Option<Bytes>),
    Streaming(Box<Streaming>),
}

#[derive(Debug)]
pub enum BodyFraming {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// Where a finished connection goes back to; `None` in `Streaming` when it must be closed.
#[derive(Debug)]
pub struct Release {
    pub pool: Arc<H1Pool>,
    pub address: BackendAddress,
    /// `clock_micros()` of the request (the connection's age counts from it).
    pub since: u64,
}

impl Release {
    /// Puts a connection whose response has ended back in the pool, when the request went
    /// out whole and nothing unexpected follows the response; otherwise it is closed.
    pub fn keep_if_clean(self, conn: Conn, buf: BytesMut, sending: Sending) {
        if sending.is_done() && buf.is_empty() {
            let idle = IdleConn::new(conn, buf, sending.into_buffer(), self.since);
            self.pool.put_back(&self.address, idle);
        }
    }
}

#[derive(Debug)]
pub struct Streaming {
    pub conn: Conn,
    pub buf: BytesMut,
    pub framing: BodyFraming,
    pub sending: Sending,
    pub release: Option<Release>,
}

impl H1Body {
    /// Ends the stream: the connection goes back to the pool when it is clean.
    fn finish(&mut self) {
        let H1Body::Streaming(streaming) = std::mem::replace(self, H1Body::Complete(None)) else {
            return;
        };
        let Streaming {
            conn,
            buf,
            sending,
            release,
            framing,
            ..
        } = *streaming;
        // A body read until close has no connection left to keep.
        if let (false, Some(release)) = (matches!(framing, BodyFraming::UntilClose), release) {
            release.keep_if_clean(conn, buf, sending);
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BodyReadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        let this = self.get_mut();
        let streaming = match this {
            H1Body::Complete(data) => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            H1Body::Streaming(streaming) => streaming,
        };
        if !streaming.sending.is_over()
            && let Poll::Ready(Err(error)) = streaming.sending.poll_send(&mut streaming.conn, cx)
        {
            match error {
                // The client's upload broke: the response cannot be trusted to end well.
                SendError::ClientBody(_) => return Poll::Ready(Some(Err(error.into()))),
                // The backend stopped reading what it has already answered: keep reading
                // its answer, and close the connection after it.
                SendError::Write(_) => streaming.sending.abandon(),
            }
        }
        loop {
            let Streaming {
                conn, buf, framing, ..
            } = &mut **streaming;
            match framing {
                BodyFraming::Length(remaining) if !buf.is_empty() => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let data = buf.split_to(take).freeze();
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyFraming::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                BodyFraming::Chunked(decoder) => match decoder.decode(buf) {
                    Err(error) => return Poll::Ready(Some(Err(error.into()))),
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                },
                BodyFraming::UntilClose if !buf.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(buf.split().freeze()))));
                }
                BodyFraming::Length(_) | BodyFraming::UntilClose => {}
            }
            reserve_for_read(buf, MAX_READ);
            match ready!(tokio_util::io::poll_read_buf(Pin::new(conn), cx, buf)) {
                Err(error) => return Poll::Ready(Some(Err(error.into()))),
                Ok(0) if matches!(framing, BodyFraming::UntilClose) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(BodyReadError::Truncated))),
                Ok(_) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, H1Body::Complete(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            H1Body::Complete(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            H1Body::Streaming(streaming) => match streaming.framing {
                BodyFraming::Length(remaining) => SizeHint::with_exact(remaining),
                _ => SizeHint::default(),
            },
        }
    }
}
