//! The L7 data path: serve one client connection with hyper (HTTP/1.1 with keep-alive, or
//! HTTP/2 with prior knowledge) and forward each request to a backend of the listener's pool.
//!
//! Each request loads the current snapshot once, so a reload applies from the next request on
//! an open keep-alive connection while requests in flight finish on the snapshot they started
//! with. Bodies stream both ways; nothing is buffered whole.
//!
//! The request is routed by the listener's compiled route table (`crate::route`); an
//! `Upgrade` request answered with 101 becomes a byte tunnel (`proxy::tunnel`) that outlives
//! the HTTP exchange and is waited for before the connection task ends.

mod answers;
mod client;
mod log;
mod upgrade;

use crate::access_log;
use crate::balance::{PickContext, sticky};
use crate::config::AccessLogFormat;
use crate::config::RouteAction;
use crate::edge::{self, ClientAddress, Source};
use crate::headers::{
    ClientIp, append_forwarded, rewrite_request_headers, strip_hop_by_hop, truncate_forwarded_for,
};
use crate::proxy::activity::{Activity, ClientTimeouts, ConnActivity, TimedIo, Tracked};
use crate::proxy::admission;
use crate::proxy::answer_log;
use crate::proxy::body::{BodyLimits, ProxyBody};
use crate::proxy::client_conn::{self, Closing, Versions};
use crate::proxy::direct;
use crate::proxy::forward::{Forwarded, Outgoing, Refused, forward};
use crate::proxy::request_id::{X_REQUEST_ID, ensure_request_id};
use crate::proxy::tunnel;
use crate::proxy::{Peer, clock_micros};
use crate::route::{self, RequestView};
use crate::state::SharedSnapshot;
use crate::upstream::request_body::{BodyPolicy, ClientBody, Prepared};
use answers::{ClientFault, EdgeNote, MadeUp, client_fault, error_response, refuse};
use client::{client_cert_header, client_of};
use http::{Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use log::{Unanswered, start_log};
use upgrade::start_tunnel;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// What every request on one client connection shares. Every open connection holds one, so
/// what is the same for all of a listener's connections is a pointer to one copy.
struct ConnContext {
    listener: Arc<str>,
    /// The client's address as X-Forwarded-For writes it; `None` for a unix socket client.
    client_ip: Option<ClientIp>,
    /// Addresses (from the PROXY header when there is one) and TLS facts of the connection.
    peer: Peer,
    snapshot: SharedSnapshot,
    /// Kept here rather than in an allocation of its own: the socket wrapper and each request
    /// in progress hold the whole context as their `Activity`.
    activity: ConnActivity,
    /// Fired when this connection should wind down (shutdown, upgrade, listener removed).
    stop: CancellationToken,
    /// Upgraded connections of this client connection; the connection task waits for them.
    /// Made by the first upgrade: most connections never have one, and a tracker is an
    /// allocation per connection.
    tunnels: OnceLock<TaskTracker>,
    /// The listener's metric handles (time to response headers, body bytes each way), made
    /// once per listener: no label lookup per request.
    metrics: Arc<crate::metrics::ListenerHandles>,
    /// Where this connection's requests are logged (resolved when it was accepted).
    access_log: Option<(Arc<access_log::Sink>, access_log::Format)>,
    /// This connection's place in its client's count (`max_connections_per_client`).
    _place: Option<Box<edge::ClientConn>>,
}

impl Tracked for ConnContext {
    fn activity(&self) -> &ConnActivity {
        &self.activity
    }
}

impl ConnContext {
    /// `None`: a unix socket client without a PROXY header.
    fn client(&self) -> Option<SocketAddr> {
        self.peer.client
    }
}

/// Which pool and backend served a response; set by `handle` for the access log.
#[derive(Debug, Clone)]
struct Served {
    pool: Arc<str>,
    upstream: Option<crate::config::BackendAddress>,
    /// The request left a backend that stopped answering: from where and why.
    moved: Option<String>,
}

/// Serves one accepted client connection until it closes, or until `shutdown` fires and the
/// request in progress (if any) has been answered; `None` when the listener is gone.
///
/// Generic over the stream: TCP, unix socket, or TLS over either. On TLS, ALPN decides the
/// protocol (`h2`: HTTP/2 only; `http/1.1`: HTTP/1 only); without TLS or ALPN, hyper-util's
/// auto-detection serves HTTP/1.1 or HTTP/2 with prior knowledge (h2c).
///
/// The set-up is plain code and the returned future holds only what the connection needs
/// while it lives: an idle keep-alive connection's memory is mostly this future.
pub fn serve_connection<S>(
    stream: S,
    peer: Peer,
    listener: Arc<str>,
    snapshot: SharedSnapshot,
    shutdown: CancellationToken,
) -> Option<impl Future<Output = ()> + Send + 'static>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (timeouts, access_log, limits, place) = {
        let current = snapshot.load();
        let listener_config = current.listener(&listener)?;
        // Over its client's connection cap: closed before a byte is read.
        let place = match current.edge(&listener) {
            Some(state) if listener_config.edge.max_connections_per_client.is_some() => {
                let client = peer.client.map(|c| c.ip());
                match edge::judge_connection(
                    &listener,
                    listener_config,
                    state,
                    client,
                    clock_micros(),
                ) {
                    Ok(place) => place,
                    Err(refusal) => {
                        debug!(%listener, ?client, rule = %refusal.rule, "closing connection: {}", refusal.reason);
                        return None;
                    }
                }
            }
            _ => None,
        };
        let limits = client_conn::HyperLimits::new(&listener_config.limits);
        let timeouts = ClientTimeouts {
            header: listener_config.timeouts.client_header,
            idle: listener_config.timeouts.client_idle,
        };
        let access_log = listener_config.access_log.as_ref().map(|log| {
            let format = match log.format {
                AccessLogFormat::Combined => access_log::Format::Combined,
                AccessLogFormat::Json => access_log::Format::Json,
            };
            (access_log::sink(&log.path), format)
        });
        (timeouts, access_log, limits, place)
    };
    let alpn = peer.tls.as_ref().and_then(|t| t.alpn.clone());
    let closing = match peer.tls {
        Some(_) => Closing::Shutdown,
        None => Closing::Drop,
    };
    let context = Arc::new(ConnContext {
        client_ip: peer.client.map(|c| ClientIp::recent(c.ip())),
        peer,
        snapshot,
        activity: ConnActivity::default(),
        stop: shutdown.clone(),
        tunnels: OnceLock::new(),
        metrics: crate::metrics::listener_handles(&listener),
        access_log,
        listener,
        _place: place,
    });
    let io = TimedIo::new(stream, Arc::clone(&context) as Activity, timeouts);
    let hyper_context = Arc::clone(&context);
    let after = Arc::clone(&context);
    let service = service_fn(move |request: Request<Incoming>| {
        let context = Arc::clone(&hyper_context);
        async move { Ok::<_, Infallible>(respond(context, request.map(ClientBody::Hyper)).await) }
    });
    let own = move |request: Request<ClientBody>| respond(Arc::clone(&context), request);

    // On TLS, ALPN decides (`h2`: HTTP/2 only; `http/1.1`: HTTP/1 only); otherwise the
    // connection preface does (h2c with prior knowledge, or HTTP/1).
    let versions = match alpn.as_deref() {
        Some("h2") => Versions::Http2,
        Some("http/1.1") => Versions::Http1,
        _ => Versions::Detect,
    };
    let driver = client_conn::drive(io, service, own, versions, limits, closing, shutdown);
    Some(ConnectionTask {
        driver,
        context: after,
        tunnels: None,
    })
}

pin_project_lite::pin_project! {
    /// A client connection's driver, then its WebSocket tunnels: one future (no `async`
    /// block awaiting the other), so that it is one allocation with room for the driver
    /// once. Every open connection holds one.
    struct ConnectionTask<D> {
        #[pin]
        driver: D,
        context: Arc<ConnContext>,
        // Set when the driver is done and tunnels are still open.
        tunnels: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    }
}

impl<D> Future for ConnectionTask<D>
where
    D: Future<Output = Result<(), client_conn::BoxError>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if let Some(tunnels) = this.tunnels {
            return tunnels.as_mut().poll(cx);
        }
        if let Err(error) = ready!(this.driver.poll(cx)) {
            debug!(client = ?this.context.client(), error = %crate::error::Chain(error.as_ref()), "client connection ended with an error");
        }
        // Keep this (tracked) task alive while its tunnels run, so a drain waits for them.
        let Some(tracker) = this.context.tunnels.get() else {
            return Poll::Ready(());
        };
        tracker.close();
        let tracker = tracker.clone();
        let mut tunnels: Pin<Box<dyn Future<Output = ()> + Send>> =
            Box::pin(async move { tracker.wait().await });
        let poll = tunnels.as_mut().poll(cx);
        *this.tunnels = Some(tunnels);
        poll
    }
}

/// One request, whichever server read it: request id, access log, duration, and
/// `Connection: close` on HTTP/1 once the connection is stopping.
///
/// A function returning a block rather than an `async fn`, here and in `handle`: an `async
/// fn` keeps its arguments twice in its state (as captured, and as locals), and the request
/// is 264 bytes of every request's future (allocated and copied once per request).
#[allow(clippy::manual_async_fn)]
fn respond(
    context: Arc<ConnContext>,
    mut request: Request<ClientBody>,
) -> impl Future<Output = Response<ProxyBody>> {
    async move {
        let http1 = request.version() != Version::HTTP_2;
        let request_id = ensure_request_id(request.headers_mut());
        let snapshot = context.snapshot.load_full();
        let client = client_of(&context, &snapshot, request.headers());
        let log = context.access_log.as_ref().map(|(sink, format)| {
            start_log(&request, &context, client.ip, &request_id, sink, *format)
        });
        let mut waiting = Unanswered {
            listener: Some(&context.listener),
            log,
        };
        let started = clock_micros();
        // For an error page's format; a shared slice of the request head, no copy.
        let accept = request.headers().get(header::ACCEPT).cloned();
        let mut dry_run = None;
        let mut response = handle(request, &context, snapshot, client, started, &mut dry_run).await;
        let log = waiting.answered();
        context.metrics.answered(response.status().as_u16());
        let elapsed = clock_micros().saturating_sub(started);
        context.metrics.duration.record(elapsed as f64 / 1e6);
        if let Some(MadeUp(reason)) = response.extensions_mut().remove::<MadeUp>() {
            if let Some(listener) = context.snapshot.load().listener(&context.listener)
                && !listener.error_pages.is_empty()
            {
                crate::proxy::error_page::apply(
                    &mut response,
                    &listener.error_pages,
                    accept.as_ref(),
                    &context.listener,
                );
            }
            let served = response.extensions().get::<Served>();
            answer_log::note(&answer_log::Answered {
                status: response.status().as_u16(),
                reason,
                listener: &context.listener,
                request_id: request_id.to_str().unwrap_or("-"),
                pool: served.map(|s| &*s.pool),
                backend: served.and_then(|s| s.upstream.as_ref().map(|b| b.to_string())),
            });
        }
        response.headers_mut().insert(X_REQUEST_ID, request_id);
        let fault = response.extensions_mut().remove::<ClientFault>();
        if let Some(mut log) = log {
            log.record.status = response.status().as_u16();
            if let Some(fault) = fault {
                log.record.status = fault.logged_status.unwrap_or(log.record.status);
                log.record.error = Some(fault.note);
            }
            if let Some(EdgeNote(note)) = response.extensions_mut().remove::<EdgeNote>() {
                log.record.refused = Some(note);
            } else if let Some(would) = dry_run {
                log.record.refused = Some(format!("dry run: {}", would.describe()));
            }
            if let Some(served) = response.extensions_mut().remove::<Served>() {
                log.record.pool = Some(served.pool);
                log.record.upstream_addr = served.upstream;
                log.record.moved = served.moved;
            }
            response = response.map(|body| body.with_log(Some(log)));
        }
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if http1 && !switching && context.stop.is_cancelled() {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// `now`: `clock_micros()` when the request arrived.
#[allow(clippy::manual_async_fn)]
fn handle<'a>(
    request: Request<ClientBody>,
    context: &'a Arc<ConnContext>,
    snapshot: Arc<crate::state::Snapshot>,
    client: ClientAddress,
    now: u64,
    dry_run: &'a mut Option<edge::Refusal>,
) -> impl Future<Output = Response<ProxyBody>> + 'a {
    async move {
        let active = ConnActivity::begin(Arc::clone(context) as Activity);
        let http1 = request.version() != Version::HTTP_2;
        if !http1 {
            context.activity.mark_http2();
        }
        if !request.body().is_end_stream() {
            context.activity.mark_body();
        }
        let (Some(router), Some(listener)) = (
            snapshot.router(&context.listener),
            snapshot.listener(&context.listener),
        ) else {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no pool for this listener\n",
                active,
            );
        };
        let edge_state = snapshot.edge(&context.listener);
        if let Some(state) = edge_state {
            let rules = state.listener_rules(&context.listener, listener);
            let outcome = edge::judge_request(&rules, client.ip, request.headers(), now);
            if let Some(refused) = outcome.refused {
                return refuse(context, refused, outcome.would_refuse, active);
            }
            *dry_run = outcome.would_refuse;
        }
        // Nothing of a request goes anywhere before its head passed the listener's limits.
        let checked = admission::check(
            request.method(),
            request.uri(),
            request.version(),
            request.headers(),
            &listener.limits,
        );
        if let Err(refusal) = checked {
            return client_fault(context, http1, ClientFault::refused(refusal), active);
        }
        let mut request = {
            let (mut parts, body) = request.into_parts();
            admission::normalize(&parts.uri, &mut parts.headers);
            Request::from_parts(parts, body)
        };
        let view = RequestView::new(request.method(), request.uri(), request.headers())
            .with_client_cert(context.peer.tls.as_ref().and_then(|t| t.client.as_deref()));
        let Some(routed) = router.route(&view) else {
            return error_response(StatusCode::NOT_FOUND, "no route for this request\n", active);
        };
        let route = routed.route;
        if let (Some(route), Some(index), Some(state)) = (route, routed.index, edge_state)
            && let rules = state.route_rules(&context.listener, index, route)
            && !rules.is_empty()
        {
            let outcome = edge::judge_request(&rules, client.ip, request.headers(), now);
            let note = dry_run.take().or(outcome.would_refuse);
            if let Some(refused) = outcome.refused {
                return refuse(context, refused, note, active);
            }
            *dry_run = note;
        }
        let forwarding = match route.map(|r| &r.action) {
            Some(RouteAction::Redirect(redirect)) => {
                let scheme = if context.peer.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                let (parts, _) = request.into_parts();
                return direct::redirect(
                    redirect,
                    scheme,
                    &parts.uri,
                    &parts.headers,
                    &context.listener,
                    active,
                )
                .unwrap_or_else(|active| {
                    client_fault(context, http1, ClientFault::no_host(), active)
                });
            }
            Some(RouteAction::Respond(respond)) => {
                return direct::respond(respond, request.method(), &context.listener, active);
            }
            Some(RouteAction::Forward(forward)) => Some(forward),
            None => None,
        };
        let Some(pool) = direct::choose_pool(
            routed.target,
            forwarding,
            request.headers(),
            request.uri(),
            client.ip.map(|ip| SocketAddr::new(ip, 0)),
            &context.listener,
        ) else {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no pool for this route\n",
                active,
            );
        };
        let total_deadline = pool
            .config
            .timeouts
            .total
            .map(|total| crate::proxy::clock_instant(now) + total);
        let pick_context = PickContext::for_request(
            &pool.config,
            request.headers(),
            request.uri(),
            client.ip.map(|ip| SocketAddr::new(ip, 0)),
            now,
        );

        let upgrade = tunnel::requested_upgrade(&request);
        if upgrade.is_some() && pool.config.protocol == crate::config::UpstreamProtocol::H2 {
            // HTTP/2 has no Upgrade (RFC 8441's extended CONNECT is not offered by hyper's client).
            return error_response(
                StatusCode::NOT_IMPLEMENTED,
                "protocol upgrades (WebSocket) are not supported towards an h2 pool\n",
                active,
            );
        }
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
        let scheme = if context.peer.tls.is_some() {
            "https"
        } else {
            "http"
        };
        // The chain sent on ends with the one client address (see `edge::client_address`):
        // the trusted hops walked past, and the client's own entry, give way to it.
        let resolved_ip;
        let client_ip = match client.source {
            Source::Peer => context.client_ip.as_ref(),
            Source::ForwardedFor { trusted_hops } => {
                truncate_forwarded_for(&mut parts.headers, trusted_hops + 1);
                resolved_ip = client.ip.map(ClientIp::recent);
                resolved_ip.as_ref()
            }
        };
        rewrite_request_headers(&mut parts.headers, client_ip, scheme, authority.as_deref());
        client_cert_header(&mut parts.headers, listener, &context.peer);
        if let Some(forwarded) = &listener.forwarded {
            let by = forwarded.by.then_some(context.peer.local).flatten();
            append_forwarded(&mut parts.headers, client.ip, by, scheme);
        }
        if let Some(upgrade) = &upgrade {
            tunnel::restore_upgrade_headers(&mut parts.headers, upgrade.clone());
        }
        let mut path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let stripped;
        if let Some(route) = route {
            route::apply_edits(&mut parts.headers, &route.request_headers);
            if let Some(rest) = route
                .strip_prefix
                .as_deref()
                .and_then(|prefix| route::strip_prefix(path, prefix))
            {
                stripped = rest;
                path = &stripped;
            }
        }
        let policy = BodyPolicy::for_request(
            &parts.headers,
            listener.limits.request_buffer,
            listener.limits.body,
            listener.timeouts.client_body,
        );
        let bytes_in = &context.metrics.bytes_in;
        let body = match Prepared::from_request(body, bytes_in, policy).await {
            Ok(body) => body,
            Err(error) => {
                debug!(client = ?context.client(), %error, "client body failed before a backend was picked");
                return client_fault(context, http1, ClientFault::body(error), active);
            }
        };
        let proxy_header = pool
            .config
            .send_proxy
            .map(|version| context.peer.proxy_header(version));
        // An upgrade (WebSocket) is a conversation, not a request: it is not copied.
        if let (Some(shadow), Some(mirror), None) = (
            &routed.target.mirror,
            forwarding.and_then(|f| f.mirror.as_ref()),
            &upgrade,
        ) {
            crate::proxy::mirror::maybe_send(
                shadow,
                mirror,
                crate::proxy::mirror::Copy {
                    method: &parts.method,
                    uri: &parts.uri,
                    path_and_query: path,
                    headers: &parts.headers,
                    body: &body,
                    client: client.ip.map(|ip| SocketAddr::new(ip, 0)),
                    now,
                },
            );
        }
        let outgoing = Outgoing {
            method: &parts.method,
            path_and_query: path,
            headers: &parts.headers,
            proxy_header: proxy_header.as_deref(),
        };
        // A route's own compression replaces its listener's (`Some(None)`: off there).
        let compression = match route.and_then(|r| r.compression.as_ref()) {
            Some(own) => own.as_ref(),
            None => listener.compression.as_ref(),
        };
        let (request_method, request_headers) = (&parts.method, &parts.headers);
        match forward(pool, outgoing, body, &pick_context, now).await {
            Ok(Forwarded {
                backend,
                in_flight,
                response,
                moved,
            }) => {
                if response.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let (Some(client), Some(_)) = (client_upgrade, &upgrade)
                {
                    return start_tunnel(response, client, context, in_flight, active, route);
                }
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if let Some(route) = route {
                    route::apply_edits(&mut parts.headers, &route.response_headers);
                }
                if let Some(cookie) = sticky::set_cookie_if_needed(
                    pool.config.sticky.as_ref(),
                    &pick_context,
                    &backend.address,
                    context.peer.tls.is_some(),
                ) {
                    parts.headers.append(header::SET_COOKIE, cookie);
                }
                let limits = BodyLimits {
                    idle: pool.config.timeouts.idle,
                    total_deadline,
                    pool: Arc::clone(&pool.name),
                    bytes_out: context.metrics.bytes_out.clone(),
                };
                if context.access_log.is_some() {
                    // Only the access log reads it; extensions allocate, so not otherwise.
                    parts.extensions.insert(Served {
                        pool: Arc::clone(&pool.name),
                        upstream: Some(backend.address.clone()),
                        moved,
                    });
                }
                let body = ProxyBody::upstream(body, in_flight, active, limits);
                let body = match compression {
                    Some(config) => crate::proxy::compress::apply(
                        config,
                        request_method,
                        request_headers,
                        &mut parts,
                        body,
                        &context.listener,
                    ),
                    None => body,
                };
                Response::from_parts(parts, body)
            }
            Err(Refused {
                client: Some(error),
                ..
            }) => client_fault(context, http1, ClientFault::body(error), active),
            Err(refused) => {
                let mut response = error_response(refused.status, refused.text, active);
                // An error path: the extension's allocation does not matter here.
                response.extensions_mut().insert(Served {
                    pool: Arc::clone(&pool.name),
                    upstream: None,
                    moved: refused.moved,
                });
                if let Some(seconds) = refused.retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
                }
                response
            }
        }
    }
}
