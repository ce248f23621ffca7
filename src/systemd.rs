//! systemd `Type=notify` messages (no-ops without `NOTIFY_SOCKET`): ready with a status line,
//! reloading, stopping. A leaf: imports nothing of the crate.

/// Tells the manager we are serving, with a one-line status.
pub fn notify_ready(status: &str) {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// `RELOADING=1` with the monotonic timestamp systemd >= 253 (`Type=notify-reload`) requires.
pub fn notify_reloading() {
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, now]);
    }
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}
