//! Admin actions on one backend: `POST /pools/{pool}/backends/{address}/drain`, `.../enable`
//! and `.../weight?value=N`; and `GET /pools/{pool}/backends/{address}`, its state alone. The caller (`route`) has already checked the token or peer; the
//! change itself is the control plane's (`ControlPlane::backend`).

use super::status::backend_status;
use super::{Admin, AdminResponse, json, text};
use crate::control::BackendAction;
use http::StatusCode;
use std::net::SocketAddr;
use tokio::time::Instant;

/// `GET /pools/{pool}/backends/{address}`: the backend's part of `/status` as the running
/// snapshot has it, or 404 when the pool does not have it (now). A read for one backend
/// that costs the same with 10,000 of them, for scripts that wait on a change (a discovered
/// backend arriving or leaving) without rendering all of `/status`.
pub(super) fn backend_read(path: &str, admin: &Admin) -> AdminResponse {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let [_, pool_name, "backends", address] = parts[..] else {
        return text(
            StatusCode::NOT_FOUND,
            "expected /pools/{pool}/backends/{address}\n".into(),
        );
    };
    let view = admin.control.view();
    match find(&view.snapshot, pool_name, address) {
        Ok(backend) => json(
            StatusCode::OK,
            &backend_status(backend, Instant::now(), &view.weights, pool_name),
        ),
        Err(missing) => text(StatusCode::NOT_FOUND, missing),
    }
}

/// The backend of `pool_name` whose address is `address` as written in a path (percent-
/// encoded brackets, colons and slashes allowed), or what is missing (for a 404).
fn find<'a>(
    snapshot: &'a crate::state::Snapshot,
    pool_name: &str,
    address: &str,
) -> Result<&'a crate::backend::Backend, String> {
    let address = address
        .replace("%5B", "[")
        .replace("%5D", "]")
        .replace("%3A", ":")
        // Unix socket backends: `unix:%2Frun%2Fapp.sock`.
        .replace("%2F", "/")
        .replace("%2f", "/");
    let Some(pool) = snapshot.pools.get(pool_name) else {
        return Err(format!("no pool named {pool_name:?}\n"));
    };
    (pool.backends.iter())
        .find(|b| b.address.to_string() == address)
        .ok_or_else(|| format!("no backend {address} in pool {pool_name}\n"))
}

/// `POST /pools/{pool}/backends/{address}/drain`, `.../enable` or `.../weight?value=N`. The
/// change survives reloads while the backend stays in the config: a drain lives in the
/// backend's runtime state, a weight in the control plane's overrides.
pub(super) async fn backend_action(
    path: &str,
    query: Option<&str>,
    peer: SocketAddr,
    admin: &Admin,
) -> AdminResponse {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let [_, pool_name, "backends", address, action] = parts[..] else {
        return text(
            StatusCode::NOT_FOUND,
            "expected /pools/{pool}/backends/{address}/drain|enable\n".into(),
        );
    };
    let snapshot = admin.control.view().snapshot;
    let backend = match find(&snapshot, pool_name, address) {
        Ok(backend) => backend,
        Err(missing) => return text(StatusCode::NOT_FOUND, missing),
    };
    let by = format!("admin API from {}", peer.ip());
    let action = match action {
        "drain" => BackendAction::Drain { by },
        "enable" => BackendAction::Enable { by },
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
            tracing::info!(pool = %pool_name, backend = %backend.address, weight, %by, "weight set at runtime");
            BackendAction::Weight(weight)
        }
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                format!("unknown action {action:?} (drain, enable)\n"),
            );
        }
    };
    let address = backend.address.clone();
    if let Err(error) = admin.control.backend(pool_name, &address, action).await {
        return text(StatusCode::NOT_FOUND, format!("{error}\n"));
    }
    // The backend as it is now (a weight change built a new snapshot).
    let view = admin.control.view();
    match view
        .snapshot
        .pools
        .get(pool_name)
        .and_then(|p| p.backends.iter().find(|b| b.address == address))
    {
        Some(updated) => json(
            StatusCode::OK,
            &backend_status(updated, Instant::now(), &view.weights, pool_name),
        ),
        None => text(StatusCode::NOT_FOUND, "backend left the pool\n".into()),
    }
}
