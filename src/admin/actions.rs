//! Admin actions on one backend: `POST /pools/{pool}/backends/{address}/drain`, `.../enable`
//! and `.../weight?value=N`. The caller (`route`) has already checked the token or peer.

use super::status::backend_status;
use super::{AdminResponse, json, text};
use crate::server::Shared;
use http::StatusCode;
use std::net::SocketAddr;
use std::time::Instant;

/// `POST /pools/{pool}/backends/{address}/drain`, `.../enable` or `.../weight?value=N`. The override lives in the
/// backend's runtime state, so it survives reloads while the backend stays in the config.
pub(super) fn backend_action(
    path: &str,
    query: Option<&str>,
    peer: SocketAddr,
    shared: &Shared,
) -> AdminResponse {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let [_, pool_name, "backends", address, action] = parts[..] else {
        return text(
            StatusCode::NOT_FOUND,
            "expected /pools/{pool}/backends/{address}/drain|enable\n".into(),
        );
    };
    let address = address
        .replace("%5B", "[")
        .replace("%5D", "]")
        .replace("%3A", ":")
        // Unix socket backends: `unix:%2Frun%2Fapp.sock`.
        .replace("%2F", "/")
        .replace("%2f", "/");
    let snapshot = shared.snapshot.load_full();
    let Some(pool) = snapshot.pools.get(pool_name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no pool named {pool_name:?}\n"),
        );
    };
    let Some(backend) = pool
        .backends
        .iter()
        .find(|b| b.address.to_string() == address)
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no backend {address} in pool {pool_name}\n"),
        );
    };
    let by = format!("admin API from {}", peer.ip());
    let now = Instant::now();
    let micros = crate::clock::clock_micros();
    let change = match action {
        "drain" => backend.state.health.update(micros, |m| m.drain(now, &by)),
        "enable" => backend.state.health.update(micros, |m| m.enable(now, &by)),
        "weight" => {
            let value = query
                .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("value=")))
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|&w| w <= crate::config::MAX_WEIGHT);
            let Some(weight) = value else {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "expected ?value=N with N in 0..={}\n",
                        crate::config::MAX_WEIGHT
                    ),
                );
            };
            let address = backend.address.clone();
            if shared.set_weight(pool_name, &address, weight).is_none() {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("no backend {address} in pool {pool_name}\n"),
                );
            }
            tracing::info!(pool = %pool_name, backend = %address, weight, %by, "weight set at runtime");
            let snapshot = shared.snapshot.load_full();
            return match snapshot
                .pools
                .get(pool_name)
                .and_then(|p| p.backends.iter().find(|b| b.address == address))
            {
                Some(updated) => json(
                    StatusCode::OK,
                    &backend_status(updated, now, shared, pool_name),
                ),
                None => text(StatusCode::NOT_FOUND, "backend left the pool\n".into()),
            };
        }
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                format!("unknown action {action:?} (drain, enable)\n"),
            );
        }
    };
    if let Some(change) = &change {
        crate::probe::announce(pool, backend, change);
    }
    json(
        StatusCode::OK,
        &backend_status(backend, now, shared, pool_name),
    )
}
