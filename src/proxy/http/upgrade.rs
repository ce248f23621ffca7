//! The answer to a request that upgraded (WebSocket and the like): the backend's 101 to the
//! client, and both upgraded connections handed to a tunnel task.

use super::ConnContext;
use crate::headers::strip_hop_by_hop;
use crate::proxy::body::ProxyBody;
use crate::proxy::tunnel::{self, TunnelGuards, TunnelLimits};
use crate::route;
use http::{Response, header};
use tokio_util::task::TaskTracker;

/// Answers the client's upgrade with the backend's 101 and hands both upgraded connections
/// to a tunnel task that holds the backend's in-flight guard and the request's activity guard
/// (so the client idle deadline does not cut it) for its whole life.
pub(super) fn start_tunnel(
    mut response: Response<crate::upstream::UpstreamBody>,
    client: hyper::upgrade::OnUpgrade,
    context: &ConnContext,
    in_flight: crate::backend::InFlight,
    active: crate::proxy::activity::RequestActive,
    route: Option<&crate::config::RouteConfig>,
) -> Response<ProxyBody> {
    let backend = hyper::upgrade::on(&mut response);
    let snapshot = context.snapshot.load();
    let limits = TunnelLimits {
        idle: snapshot
            .listener(&context.listener)
            .map_or(crate::config::DEFAULT_TUNNEL_IDLE_TIMEOUT, |l| {
                l.timeouts.tunnel_idle
            }),
        drain: snapshot.config.runtime.drain_timeout,
    };
    let guards = TunnelGuards { in_flight, active };
    context
        .tunnels
        .get_or_init(TaskTracker::new)
        .spawn(tunnel::run(
            client,
            backend,
            limits,
            context.stop.clone(),
            guards,
        ));
    let (mut parts, _) = response.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = upgrade {
        tunnel::restore_upgrade_headers(&mut parts.headers, upgrade);
    }
    if let Some(route) = route {
        route::apply_edits(&mut parts.headers, &route.response_headers);
    }
    Response::from_parts(parts, ProxyBody::empty())
}
