//! The answers sluice makes itself: for a client's own failure (counted under the client's
//! errors, never a backend's), for an edge rule's refusal, and the one `error_response` every
//! such answer goes through (so error pages and the answer log see them all).

use super::ConnContext;
use crate::edge;
use crate::proxy::admission;
use crate::proxy::body::ProxyBody;
use crate::upstream::request_body::ClientBodyError;
use http::{Response, StatusCode, header};

/// Marks a response that answers the client's own failure, for the access log: what it
/// says, and the status it logs when that differs from the one sent (499: the client left).
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientFault {
    pub(super) status: StatusCode,
    pub(super) text: &'static str,
    pub(super) reason: &'static str,
    pub(super) note: &'static str,
    pub(super) logged_status: Option<u16>,
}

impl ClientFault {
    pub(super) fn refused(refusal: admission::Refusal) -> ClientFault {
        ClientFault {
            status: refusal.status,
            text: refusal.text,
            reason: refusal.reason,
            note: "request refused",
            logged_status: None,
        }
    }

    /// A redirect that keeps the request's host, for a request that names none (HTTP/1.0).
    pub(super) fn no_host() -> ClientFault {
        ClientFault {
            status: StatusCode::BAD_REQUEST,
            text: "no host to redirect to\n",
            reason: "no_host",
            note: "redirect needs a Host",
            logged_status: None,
        }
    }

    pub(super) fn body(error: ClientBodyError) -> ClientFault {
        let (note, logged_status) = match error {
            // nginx's 499: the client closed the connection before it was answered.
            ClientBodyError::Aborted => ("client aborted", Some(499)),
            ClientBodyError::Malformed => ("malformed request body", None),
            ClientBodyError::TooLarge => ("request body too large", None),
            ClientBodyError::TimedOut => ("client body timeout", None),
        };
        ClientFault {
            status: error.status(),
            text: error.text(),
            reason: error.reason(),
            note,
            logged_status,
        }
    }
}

/// The answer to a request that failed by its client's doing: counted under the client's
/// errors (never a backend's), and the connection closed after it, since what the client
/// sends next cannot be trusted to start a new request.
pub(super) fn client_fault(
    context: &ConnContext,
    http1: bool,
    fault: ClientFault,
    active: crate::proxy::activity::RequestActive,
) -> Response<ProxyBody> {
    crate::metrics::client_error(&context.listener, fault.reason);
    let mut response = error_response(fault.status, fault.text, active);
    if http1 {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    if context.access_log.is_some() {
        response.extensions_mut().insert(fault);
    }
    response
}

/// What an edge rule said of a request that passed or was refused, for the access log.
#[derive(Debug, Clone)]
pub(super) struct EdgeNote(pub(super) String);

/// A request an edge rule refused: 403 (access) or 429 with `Retry-After` (rate limit),
/// through `error_response` like every answer sluice makes. The connection stays open: the
/// request was well-formed, and the client may send another.
pub(super) fn refuse(
    context: &ConnContext,
    refused: edge::Refusal,
    also: Option<edge::Refusal>,
    active: crate::proxy::activity::RequestActive,
) -> Response<ProxyBody> {
    let text = match refused.retry_after {
        Some(_) => "too many requests\n",
        None => "forbidden\n",
    };
    let mut response = error_response(refused.status(), text, active);
    if let Some(seconds) = refused.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    }
    if context.access_log.is_some() {
        let mut note = refused.describe();
        if let Some(also) = also {
            note = format!("{note}; dry run: {}", also.describe());
        }
        response.extensions_mut().insert(EdgeNote(note));
    }
    response
}

/// Marks a response sluice made up itself (not a backend's), with the reason it gives: it is
/// logged (`answer_log`).
#[derive(Debug, Clone, Copy)]
pub(super) struct MadeUp(pub(super) &'static str);

pub(super) fn error_response(
    status: StatusCode,
    text: &'static str,
    active: crate::proxy::activity::RequestActive,
) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::fixed(text, Some(active)));
    *response.status_mut() = status;
    response.extensions_mut().insert(MadeUp(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
