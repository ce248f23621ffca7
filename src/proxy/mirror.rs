//! Request mirroring (`routes[].mirror: {pool, percent, max_body, max_in_flight}`): a copy of
//! a sample of a route's requests goes to a shadow pool, fire and forget.
//!
//! The copy never delays, fails or changes the main request: it is started as its own task
//! before the main request is forwarded, takes only what the main request already holds (its
//! head, and its body when that was read whole and is at most `max_body`: a streamed body
//! can be read once only, so it is not mirrored), and nothing of its outcome comes back.
//! nginx's `mirror` holds the client's next request on a connection until the mirror
//! subrequest finished; here a hung shadow pool costs the main request nothing (tested).
//!
//! Bounded: at most `max_in_flight` copies per shadow pool are in flight; beyond it a sample
//! is skipped and counted (`busy`), so a hung shadow cannot pile up tasks. Each copy runs
//! under the shadow pool's own timeouts, retries and health, and its response body is read
//! and dropped. The copy carries `X-Sluice-Mirror: 1`, so a shadow can tell it from live
//! traffic (the Host is kept, unlike Envoy's `-shadow` suffix, so virtual hosts still match).

use crate::balance::PickContext;
use crate::config::Mirror;
use crate::proxy::forward::{Outgoing, forward};
use crate::proxy::request_body::Prepared;
use crate::state::Pool;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const MIRROR_HEADER: &str = "x-sluice-mirror";

/// What one copy needs, owned (the main request keeps its own).
pub struct Copy<'r> {
    pub method: &'r Method,
    pub uri: &'r Uri,
    pub path_and_query: &'r str,
    pub headers: &'r HeaderMap,
    pub body: &'r Prepared,
    pub client: Option<SocketAddr>,
    pub now: u64,
}

/// Starts a mirrored copy of the request when the sample, the body and the bound allow it.
pub fn maybe_send(pool: &Arc<Pool>, config: &Mirror, request: Copy<'_>) {
    let sampled =
        config.percent >= 100.0 || crate::proxy::with_rng(|rng| rng.f64() * 100.0 < config.percent);
    if !sampled {
        return;
    }
    let body = match request.body {
        Prepared::Replayable(bytes) if bytes.len() as u64 <= config.max_body => bytes.clone(),
        _ => {
            crate::metrics::http_edge::mirror(&pool.name, "body_too_large");
            return;
        }
    };
    let Some(slot) = Slot::take(&pool.mirrors_in_flight, config.max_in_flight as usize) else {
        crate::metrics::http_edge::mirror(&pool.name, "busy");
        return;
    };
    crate::metrics::http_edge::mirror_in_flight(&pool.name, slot.count());
    let mut headers = request.headers.clone();
    headers.insert(MIRROR_HEADER, HeaderValue::from_static("1"));
    let pick = PickContext::for_request(
        &pool.config,
        &headers,
        request.uri,
        request.client,
        request.now,
    );
    let task = send(
        Arc::clone(pool),
        request.method.clone(),
        request.path_and_query.to_owned(),
        headers,
        body,
        pick,
        request.now,
        slot,
    );
    tokio::spawn(task);
}

#[allow(clippy::too_many_arguments)]
async fn send(
    pool: Arc<Pool>,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    pick: PickContext,
    now: u64,
    slot: Slot,
) {
    let outgoing = Outgoing {
        method: &method,
        path_and_query: &path,
        headers: &headers,
        proxy_header: None,
    };
    let result = match forward(&pool, outgoing, Prepared::Replayable(body), &pick, now).await {
        Ok(forwarded) => {
            let idle = pool.config.timeouts.idle;
            let mut body = forwarded.response.into_body();
            // Read and dropped, under the pool's idle timeout, holding the backend's slot
            // (`forwarded.in_flight`) until done, as a live response would.
            loop {
                match tokio::time::timeout(idle, body.frame()).await {
                    Ok(Some(Ok(_))) => continue,
                    Ok(None) => break "answered",
                    Ok(Some(Err(_))) | Err(_) => break "failed",
                }
            }
        }
        Err(_) => "failed",
    };
    crate::metrics::http_edge::mirror(&pool.name, result);
    drop(slot);
    crate::metrics::http_edge::mirror_in_flight(
        &pool.name,
        pool.mirrors_in_flight.load(Ordering::Relaxed),
    );
}

/// One of a shadow pool's `max_in_flight` places, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Slot(Arc::clone(counter)))
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let counter = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&counter, 2).expect("first");
        let _b = Slot::take(&counter, 2).expect("second");
        assert!(Slot::take(&counter, 2).is_none(), "third is over the bound");
        drop(a);
        assert!(Slot::take(&counter, 2).is_some());
    }
}
