//! Routes that answer without a pool (`redirect`, `respond`), and the choice of a pool in a
//! traffic split (`pools: [{pool, weight}]`).
//!
//! These answers are the operator's, not sluice's own: they are not `MadeUp`, never take an
//! error page, and count under `sluice_route_answers_total`.

use crate::balance::{PickContext, request_key, split};
use crate::config::{Forward, Redirect, Respond};
use crate::proxy::activity::RequestActive;
use crate::proxy::body::ProxyBody;
use crate::route::redirect::location;
use crate::state::{Pool, Target};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use std::net::SocketAddr;
use std::sync::Arc;

/// The redirect answer; `Err` (giving the guard back) when no absolute `Location` can be
/// built (no host anywhere), which the caller answers with 400.
pub fn redirect(
    redirect: &Redirect,
    scheme: &str,
    uri: &Uri,
    headers: &HeaderMap,
    listener: &str,
    active: RequestActive,
) -> Result<Response<ProxyBody>, RequestActive> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let Some(value) = location(redirect, scheme, host, path)
        .and_then(|target| HeaderValue::from_str(&target).ok())
    else {
        return Err(active);
    };
    crate::metrics::http_edge::route_answer(listener, "redirect");
    let mut response = Response::new(ProxyBody::fixed(bytes::Bytes::new(), Some(active)));
    *response.status_mut() = redirect.code;
    response.headers_mut().insert(header::LOCATION, value);
    Ok(response)
}

/// A route's fixed answer (`respond:`): its status, body, type and headers.
pub fn respond(
    respond: &Respond,
    method: &Method,
    listener: &str,
    active: RequestActive,
) -> Response<ProxyBody> {
    crate::metrics::http_edge::route_answer(listener, "respond");
    let body = if method == Method::HEAD {
        // hyper sends no body for HEAD but would take its length from this one: say it.
        bytes::Bytes::new()
    } else {
        respond.body.clone()
    };
    let mut response = Response::new(ProxyBody::fixed(body, Some(active)));
    *response.status_mut() = respond.status;
    let headers = response.headers_mut();
    if respond.status != StatusCode::NO_CONTENT && respond.status != StatusCode::NOT_MODIFIED {
        headers.insert(header::CONTENT_TYPE, respond.content_type.clone());
    }
    if method == Method::HEAD {
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(respond.body.len()),
        );
    }
    for (name, value) in &respond.headers {
        headers.append(name.clone(), value.clone());
    }
    response
}

/// The pool a forwarded request goes to. A split keeps a client on one pool: a pool's sticky
/// cookie naming one of its backends wins, then the split key's hash, else a weighted draw.
pub fn choose_pool<'t>(
    target: &'t Target,
    forward: Option<&Forward>,
    headers: &HeaderMap,
    uri: &Uri,
    client: Option<SocketAddr>,
    listener: &str,
) -> Option<&'t Arc<Pool>> {
    if let [(only, _)] = target.pools.as_slice() {
        return Some(only);
    }
    let sticky = target.pools.iter().find(|(pool, weight)| {
        *weight > 0
            && pool.config.sticky.is_some()
            && PickContext::for_request(&pool.config, headers, uri, client, 0)
                .sticky
                .is_some_and(|token| pool.balancer.sticky_backend(token).is_some())
    });
    if let Some((pool, _)) = sticky {
        crate::metrics::http_edge::split(listener, &pool.name, "cookie");
        return Some(pool);
    }
    let key = forward
        .and_then(|f| f.split_key.as_ref())
        .and_then(|spec| request_key(spec, headers, uri, client));
    let index = crate::proxy::with_rng(|rng| split::pick_by(&target.pools, |(_, w)| *w, key, rng))?;
    let (pool, _) = target.pools.get(index)?;
    crate::metrics::http_edge::split(
        listener,
        &pool.name,
        if key.is_some() { "key" } else { "weight" },
    );
    Some(pool)
}
