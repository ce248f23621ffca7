//! `sluice ready`: a probe for keepalived's track_script and the like. 0 when the running
//! sluice answers `/ready` with 200 within the timeout; else 1 and one line on stderr
//! (keepalived logs a script's exit status only). Nothing on stdout either way.

use super::admin::admin_request;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// A hung daemon counts as not ready: the whole exchange has `timeout`.
pub fn ready(admin: SocketAddr, timeout: Duration) -> ExitCode {
    let answer = super::current_thread_runtime()
        .map_err(|e| crate::error::chain(&e))
        .and_then(|runtime| {
            runtime.block_on(async {
                let request = admin_request(admin, http::Method::GET, "/ready", None);
                match tokio::time::timeout(timeout, request).await {
                    Ok(Ok((status, body))) => Ok((status, body)),
                    Ok(Err(error)) => Err(crate::error::chain(&error)),
                    Err(_) => Err(format!("{admin}: no answer in {timeout:?}")),
                }
            })
        });
    match answer {
        Ok((200, _)) => ExitCode::SUCCESS,
        Ok((status, body)) => {
            eprintln!(
                "sluice: not ready: {admin} answered {status}: {}",
                body.trim_end()
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("sluice: not ready: {error}");
            ExitCode::FAILURE
        }
    }
}
