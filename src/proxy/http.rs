//! The L7 data path: serve one client connection with hyper (HTTP/1.1 with keep-alive, or
//! HTTP/2 with prior knowledge) and forward each request to a backend of the listener's pool.
//!
//! Each request loads the current snapshot once, so a reload applies from the next request on
//! an open keep-alive connection while requests in flight finish on the snapshot they started
//! with. Bodies stream both ways; nothing is buffered whole.

use crate::balance::{PickContext, sticky};
use crate::proxy::activity::{ClientTimeouts, ConnActivity, TimedIo};
use crate::proxy::body::ProxyBody;
use crate::proxy::clock_micros;
use crate::proxy::forward::{Forwarded, Outgoing, forward};
use crate::proxy::headers::{rewrite_request_headers, strip_hop_by_hop};
use crate::proxy::request_body::Prepared;
use crate::state::SharedSnapshot;
use http::{Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// What every request on one client connection shares.
struct ConnContext {
    listener: Arc<str>,
    client: SocketAddr,
    snapshot: SharedSnapshot,
    activity: Arc<ConnActivity>,
    /// Fired when this connection should wind down (shutdown, upgrade, listener removed).
    stop: CancellationToken,
}

/// After `stop`, an HTTP/1 keep-alive connection is not cut at once: closing an idle
/// connection races a client that is sending its next request right then, and that request
/// fails. Instead, responses carry `Connection: close` (the client reconnects cleanly) and
/// connections still idle after this grace period are closed.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one accepted client connection until it closes, or until `shutdown` fires and the
/// request in progress (if any) has been answered.
pub async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    listener: Arc<str>,
    snapshot: SharedSnapshot,
    shutdown: CancellationToken,
) {
    let Some(timeouts) = snapshot.load().listener(&listener).map(|l| ClientTimeouts {
        header: l.timeouts.client_header,
        idle: l.timeouts.client_idle,
    }) else {
        return;
    };
    let activity = Arc::new(ConnActivity::default());
    let io = TokioIo::new(TimedIo::new(stream, Arc::clone(&activity), timeouts));
    let context = Arc::new(ConnContext {
        listener,
        client,
        snapshot,
        activity,
        stop: shutdown.clone(),
    });
    let service = service_fn(move |request| {
        let context = Arc::clone(&context);
        async move {
            let http1 = request.version() != Version::HTTP_2;
            let mut response = handle(request, &context).await;
            if http1 && context.stop.is_cancelled() {
                response.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Our TimedIo enforces header and idle deadlines; hyper's would close idle keep-alive
        // connections after the (short) header timeout.
        .header_read_timeout(None)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            let grace = tokio::time::sleep(IDLE_CLOSE_GRACE);
            tokio::select! {
                result = connection.as_mut() => result,
                () = grace => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
    };
    if let Err(error) = result {
        debug!(%client, error = %error, "client connection ended with an error");
    }
}

async fn handle(request: Request<Incoming>, context: &ConnContext) -> Response<ProxyBody> {
    let active = context.activity.begin();
    if request.version() == Version::HTTP_2 {
        context.activity.mark_http2();
    }
    let snapshot = context.snapshot.load_full();
    let Some(pool) = snapshot.pool_for_listener(&context.listener) else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no pool for this listener\n",
            active,
        );
    };
    let pick_context = PickContext::for_request(
        &pool.config,
        request.headers(),
        request.uri(),
        context.client,
        clock_micros(),
    );
    let (mut parts, body) = request.into_parts();
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    rewrite_request_headers(
        &mut parts.headers,
        context.client.ip(),
        "http",
        authority.as_deref(),
    );
    let body = match Prepared::from_request(body, &parts.headers).await {
        Ok(body) => body,
        Err(error) => {
            debug!(client = %context.client, %error, "client body failed");
            return error_response(
                StatusCode::BAD_REQUEST,
                "request body could not be read\n",
                active,
            );
        }
    };
    let outgoing = Outgoing {
        method: &parts.method,
        path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &parts.headers,
    };
    match forward(pool, outgoing, body, &pick_context).await {
        Ok(Forwarded {
            backend,
            in_flight,
            response,
        }) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(cookie) = sticky::set_cookie_if_needed(
                pool.config.sticky.as_ref(),
                &pick_context,
                backend.address,
            ) {
                parts.headers.append(header::SET_COOKIE, cookie);
            }
            Response::from_parts(parts, ProxyBody::upstream(body, in_flight, active))
        }
        Err(refused) => {
            let mut response = error_response(refused.status, refused.text, active);
            if let Some(seconds) = refused.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            }
            response
        }
    }
}

fn error_response(
    status: StatusCode,
    text: &'static str,
    active: crate::proxy::activity::RequestActive,
) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::fixed(text, Some(active)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
