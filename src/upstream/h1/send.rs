//! Writing one request to a backend connection: the head (with a small body appended, so it
//! usually leaves in one write), then a streamed body chunk by chunk. Polled by the exchange
//! until the response head arrives and then by the response body, so a backend that answers
//! while the upload still streams (full duplex) keeps receiving it.

use super::chunked::{push_chunk_header, push_last_chunk};
use crate::upstream::connector::Conn;
use crate::upstream::request_body::RequestBody;
use http::HeaderMap;
use hyper::body::Body;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;

/// Why a request could not be sent.
/// A variant with an inner error says what failed; the inner error is its `source`
/// (rendered by `crate::error::Chain`).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("writing to the backend failed")]
    Write(#[source] io::Error),
    /// The client's fault, not the backend's: the connection is reset, not reused.
    #[error("the client's request body failed")]
    ClientBody(#[source] crate::upstream::request_body::ClientBodyError),
}

#[derive(Debug)]
pub struct Sending {
    /// Bytes ready to go out, and how many of them went.
    out: Vec<u8>,
    written: usize,
    /// A body still streaming from the client, and whether it is chunk-framed here.
    body: Option<RequestBody>,
    chunked: bool,
    trailers: Option<HeaderMap>,
    flushed: bool,
    /// Sending stopped before the end (the backend answered and stopped reading, or the
    /// write failed): the connection must not carry another request.
    abandoned: bool,
    /// Some byte reached the socket.
    started: bool,
}

impl Sending {
    /// `out` holds the head (and any body already known); `body` streams after it.
    pub fn new(out: Vec<u8>, body: Option<RequestBody>, chunked: bool) -> Sending {
        Sending {
            out,
            written: 0,
            body,
            chunked,
            trailers: None,
            flushed: false,
            abandoned: false,
            started: false,
        }
    }

    /// The write buffer, for the connection's next request.
    pub fn into_buffer(self) -> Vec<u8> {
        self.out
    }

    /// Stops sending (what is left of the body is dropped); the connection is not reusable.
    pub fn abandon(&mut self) {
        self.abandoned = true;
        self.body = None;
        self.out.clear();
        self.written = 0;
    }

    /// The whole request went out (head, body and framing).
    pub fn is_done(&self) -> bool {
        self.flushed && self.written == self.out.len() && self.body.is_none() && !self.abandoned
    }

    /// Nothing more will be written, whether the request went out whole or not.
    pub fn is_over(&self) -> bool {
        self.abandoned || self.is_done()
    }

    /// Whether any byte of the request reached the socket.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Writes what it can; `Ready(Ok)` once the whole request is out.
    pub fn poll_send(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        loop {
            while self.written < self.out.len() {
                let n = ready!(Pin::new(&mut *conn).poll_write(cx, &self.out[self.written..]))
                    .map_err(SendError::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(SendError::Write(io::ErrorKind::WriteZero.into())));
                }
                self.written += n;
                self.started = true;
                self.flushed = false;
            }
            if !self.flushed {
                // TLS holds records until flushed; plain sockets return at once.
                ready!(Pin::new(&mut *conn).poll_flush(cx)).map_err(SendError::Write)?;
                self.flushed = true;
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            self.out.clear();
            self.written = 0;
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        if self.chunked {
                            push_chunk_header(&mut self.out, data.len());
                            self.out.extend_from_slice(&data);
                            self.out.extend_from_slice(b"\r\n");
                        } else {
                            self.out.extend_from_slice(&data);
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers = Some(trailers);
                        }
                    }
                },
                Some(Err(error)) => return Poll::Ready(Err(SendError::ClientBody(error))),
                None => {
                    self.body = None;
                    if self.chunked {
                        push_last_chunk(&mut self.out, self.trailers.as_ref());
                    }
                }
            }
        }
    }
}
