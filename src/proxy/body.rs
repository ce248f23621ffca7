//! The response body sluice sends to clients: a backend's streamed body or a short fixed text,
//! carrying the guards that must live exactly as long as the response is being sent.

use crate::backend::InFlight;
use crate::proxy::activity::RequestActive;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug)]
enum Inner {
    Upstream(Incoming),
    Fixed(Option<Bytes>),
}

/// Streams frames through without buffering; dropping it releases the backend's in-flight
/// count and marks the client connection idle again.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
    _in_flight: Option<InFlight>,
    _active: Option<RequestActive>,
}

impl ProxyBody {
    pub fn upstream(body: Incoming, in_flight: InFlight, active: RequestActive) -> ProxyBody {
        ProxyBody {
            inner: Inner::Upstream(body),
            _in_flight: Some(in_flight),
            _active: Some(active),
        }
    }

    /// No body at all (a 101 answer: the bytes that follow belong to the tunnel).
    pub fn empty() -> ProxyBody {
        ProxyBody {
            inner: Inner::Fixed(None),
            _in_flight: None,
            _active: None,
        }
    }

    pub fn fixed(text: impl Into<Bytes>, active: Option<RequestActive>) -> ProxyBody {
        ProxyBody {
            inner: Inner::Fixed(Some(text.into())),
            _in_flight: None,
            _active: active,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
            Inner::Fixed(data) => Poll::Ready(data.take().map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Fixed(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Fixed(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Inner::Fixed(None) => SizeHint::with_exact(0),
        }
    }
}
