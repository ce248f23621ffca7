//! The access log's view of a request: what it needs taken before the request is consumed,
//! and the 499 line of a request its client abandoned before the answer.

use super::ConnContext;
use crate::access_log;
use crate::proxy::body::PendingLog;
use crate::upstream::request_body::ClientBody;
use http::{Request, Version, header};
use std::sync::Arc;

/// What the access log needs from the request, taken before the request is consumed.
pub(super) fn start_log(
    request: &Request<ClientBody>,
    context: &ConnContext,
    client: Option<std::net::IpAddr>,
    request_id: &header::HeaderValue,
    sink: &Arc<access_log::Sink>,
    format: access_log::Format,
) -> Box<PendingLog> {
    let text = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    #[allow(clippy::disallowed_types)] // the access log line's wall-clock timestamp
    let time = std::time::SystemTime::now();
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| text(header::HOST));
    Box::new(PendingLog {
        record: access_log::Record {
            time,
            ts: access_log::rfc3339(time),
            client_ip: client.map_or_else(|| "unix:".to_owned(), |ip| ip.to_string()),
            listener: Arc::clone(&context.listener),
            method: request.method().to_string(),
            host,
            path: request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            proto: match request.version() {
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2.0",
                _ => "HTTP/1.1",
            },
            status: 0,
            bytes_out: 0,
            duration_ms: 0.0,
            pool: None,
            upstream_addr: None,
            request_id: request_id.to_str().unwrap_or("-").to_owned(),
            user_agent: text(header::USER_AGENT),
            referer: text(header::REFERER),
            tls_version: context.peer.tls.as_ref().map(|t| t.version),
            error: None,
            moved: None,
            refused: None,
            sni: context.peer.tls.as_ref().and_then(|t| t.sni.clone()),
            client_subject: (context.peer.tls.as_ref())
                .and_then(|t| t.client.as_ref())
                .map(|c| c.subject.clone()),
        },
        started: tokio::time::Instant::now(),
        sink: Arc::clone(sink),
        format,
    })
}

/// A request not answered yet. Dropped unanswered (the client closed its connection or reset
/// its HTTP/2 stream while the request was in progress, and the server dropped the request),
/// it counts the client's abort and logs the request as nginx does: 499, `client aborted`.
pub(super) struct Unanswered<'a> {
    /// `None` once answered.
    pub(super) listener: Option<&'a str>,
    pub(super) log: Option<Box<PendingLog>>,
}

impl Unanswered<'_> {
    pub(super) fn answered(&mut self) -> Option<Box<PendingLog>> {
        self.listener = None;
        self.log.take()
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let Some(listener) = self.listener else {
            return;
        };
        crate::metrics::client_error(listener, "client_closed");
        if let Some(mut log) = self.log.take() {
            log.record.status = 499;
            log.record.error = Some("client aborted");
            log.record.duration_ms = log.started.elapsed().as_secs_f64() * 1000.0;
            log.sink.write(log.record.line(log.format));
        }
    }
}
