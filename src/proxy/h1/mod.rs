//! sluice's own HTTP/1.1 server for the common request: a body-less HTTP/1.1 request is read,
//! parsed with httparse straight into an `http::Request`, handed to the proxy, and its response
//! written back, with no hyper connection built for it.
//!
//! Why not hyper for these: a hyper connection is a buffered, general-purpose state machine
//! (an 8 KiB read buffer, a write queue, a dispatcher) built per connection and kept while it
//! lives; here a connection between requests holds no buffer at all, and a request costs one
//! read, one parse and one write. Anything else (a request body, an upgrade, `Expect`,
//! HTTP/1.0, a malformed or unusual head) is handed to hyper with its bytes unread
//! (`End::Handover`), so hyper serves that request, and the rest of the connection until it
//! is idle again, exactly as it did before this path existed.

mod outbox;
pub mod request;
pub mod response;

use crate::upstream::h1::chunked::{push_chunk_header, push_last_chunk};
use crate::upstream::request_body::ClientBody;
use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use hyper::body::{Body, Frame};
use outbox::Outbox;
use request::{Parsed, parse_request, wants_close};
use response::{BodyHint, BodyPlan, encode_head, head_size_hint};
use std::error::Error as StdError;
use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Body pieces that are ready one after another are gathered into one write up to this much;
/// more is written at once (the client should not wait for all of a large body).
const WRITE_BATCH: usize = 128 * 1024;

/// Bytes read at most per read of a request head.
const READ_CHUNK: usize = 4 * 1024;

/// How serving stopped.
#[derive(Debug)]
pub enum End {
    /// Between requests with nothing of the next one read: the caller waits for its first
    /// bytes holding no buffer.
    Idle,
    /// The connection is finished (the client asked to close, or sluice is stopping): the
    /// response is written and flushed, and the stream should be closed.
    Close,
    /// hyper serves from here: these bytes, then the rest of the stream.
    Handover(Bytes),
}

/// Serves requests from `buf` (the bytes read so far) and `io` until the connection is idle
/// (a response is out and nothing of the next request has been read: `End::Idle`), closes,
/// or meets a request this path leaves to hyper.
///
/// Returning at once when idle, as nginx frees a keep-alive connection's request memory, is
/// what keeps a waiting connection small: this future has room for a whole request's proxy
/// future (about 5 KiB), and the caller holds it only while a request is being served.
/// Allocating it per request measured the same CPU per request as keeping it for a quiet
/// period (A/B under wrk keep-alive), and 0.7 KiB less memory per idle connection.
pub async fn serve<I, F, Fut, B>(io: &mut I, mut buf: BytesMut, respond: &F) -> io::Result<End>
where
    I: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Request<ClientBody>) -> Fut,
    Fut: Future<Output = Response<B>>,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut outbox = Outbox::default();
    loop {
        let request = match parse_request(&mut buf) {
            Parsed::Request(request) => request,
            Parsed::Handover => return Ok(End::Handover(buf.freeze())),
            Parsed::Partial => {
                if read_some(io, &mut buf).await? == 0 {
                    // Closed in the middle of a head: there is no one to answer.
                    return Ok(End::Close);
                }
                continue;
            }
        };
        let head_request = request.method() == Method::HEAD;
        let client_closes = wants_close(request.headers());
        let response = respond(request.map(|()| ClientBody::Empty)).await;
        let close = client_closes || wants_close(response.headers());
        write_response(io, &mut outbox, response, head_request, close).await?;
        if close {
            // The caller ends the stream (a plain TCP socket needs no shutdown before its
            // close: the FIN follows the response either way).
            return Ok(End::Close);
        }
        if buf.is_empty() {
            return Ok(End::Idle);
        }
    }
}

/// Reads what is there (up to `READ_CHUNK`) onto the end of `buf`; 0 at the end of the
/// stream. The chunk is on the stack of the poll, so a waiting connection holds no buffer.
pub async fn read_some<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut) -> io::Result<usize> {
    poll_fn(|cx| poll_read_some(io, buf, cx)).await
}

/// `read_some` for a hand-written future.
pub fn poll_read_some<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    // Uninitialised: zeroing 4 KiB before every read showed in profiles.
    let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut read_buf = ReadBuf::uninit(&mut chunk);
    ready!(Pin::new(&mut *io).poll_read(cx, &mut read_buf))?;
    buf.extend_from_slice(read_buf.filled());
    Poll::Ready(Ok(read_buf.filled().len()))
}

/// What the next poll of the response body gave.
enum Step<D> {
    Frame(Option<Result<Frame<D>, io::Error>>),
    /// Nothing yet, and bytes are waiting in the outbox: send them before waiting.
    Flush,
}

async fn write_response<I, B>(
    io: &mut I,
    outbox: &mut Outbox,
    response: Response<B>,
    head_request: bool,
    close: bool,
) -> io::Result<()>
where
    I: AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let (mut parts, body) = response.into_parts();
    let hint = BodyHint {
        end_stream: body.is_end_stream(),
        exact: body.size_hint().exact(),
    };
    // One allocation for the head and a small body: growing the buffer as they were written
    // showed as five reallocations per response.
    let small_body = hint.exact.filter(|&n| n <= outbox::COPY_LIMIT as u64);
    outbox
        .small()
        .reserve(head_size_hint(&parts.headers) + small_body.unwrap_or(0) as usize);
    let plan = encode_head(
        outbox.small(),
        parts.status,
        &mut parts.headers,
        hint,
        head_request,
        close,
    );
    let (mut remaining, chunked) = match plan {
        BodyPlan::None => return finish(io, outbox).await,
        BodyPlan::Length(length) => (length, false),
        BodyPlan::Chunked => (u64::MAX, true),
    };
    let mut body = pin!(body);
    let mut finished = remaining == 0 || hint.end_stream;
    while !finished {
        let step = poll_fn(|cx| match body.as_mut().poll_frame(cx) {
            Poll::Pending if !outbox.is_empty() => Poll::Ready(Step::Flush),
            Poll::Pending => Poll::Pending,
            Poll::Ready(frame) => {
                Poll::Ready(Step::Frame(frame.map(|result| {
                    result.map_err(|error| io::Error::other(error.into()))
                })))
            }
        })
        .await;
        let frame = match step {
            Step::Flush => {
                finish(io, outbox).await?;
                continue;
            }
            Step::Frame(None) => break,
            Step::Frame(Some(frame)) => frame?,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if chunked && let Ok(trailers) = frame.into_trailers() {
                    push_last_chunk(outbox.small(), Some(&trailers));
                    return finish(io, outbox).await;
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            push_chunk_header(outbox.small(), data.len());
            outbox.push(data);
            outbox.small().extend_from_slice(b"\r\n");
        } else {
            remaining = remaining
                .checked_sub(data.len() as u64)
                .ok_or_else(|| io::Error::other("response body longer than its Content-Length"))?;
            outbox.push(data);
        }
        if outbox.len() >= WRITE_BATCH {
            outbox.write_to(io).await?;
        }
        finished = (!chunked && remaining == 0) || body.is_end_stream();
    }
    if chunked {
        push_last_chunk(outbox.small(), None);
    } else if remaining != 0 {
        return Err(io::Error::other(
            "response body shorter than its Content-Length",
        ));
    }
    finish(io, outbox).await
}

/// Writes what is queued and flushes (a TLS stream holds records until flushed).
async fn finish<I: AsyncWrite + Unpin>(io: &mut I, outbox: &mut Outbox) -> io::Result<()> {
    if !outbox.is_empty() {
        outbox.write_to(io).await?;
    }
    io.flush().await
}

#[cfg(test)]
mod tests;
