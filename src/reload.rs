//! The file watch trigger: watches the config file (`crate::watch`) and asks the control plane
//! to reload when it changed. What a change means (new content, content already seen, the
//! running content back after a refused change) is decided by the control plane's reload
//! bookkeeping, which also reads and applies the file.
//!
//! Imports the control plane's narrow interface (`ControlPlane`) and `watch`; never the
//! server or the control plane's owner.

use crate::control::ControlPlane;
use crate::error::Error;
use crate::watch::FileWatch;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tracing::info;

/// Editors and config managers write a file in several steps (truncate, write, rename); wait
/// for the burst to settle before reading.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(250);

/// Watches `path` and reports each change to `control` until `control` is gone.
pub fn watch_file(control: Weak<dyn ControlPlane>, path: &Path) -> Result<(), Error> {
    let mut watch = FileWatch::new(path, WATCH_DEBOUNCE).map_err(|e| Error::Io {
        context: format!("cannot watch {}", path.display()),
        source: std::io::Error::other(e),
    })?;
    info!(path = %path.display(), "watching the config file for changes");
    tokio::spawn(async move {
        // The watch lives as long as this task; dropping it stops the watch.
        while watch.changed().await {
            let Some(control) = control.upgrade() else {
                break;
            };
            let control: Arc<dyn ControlPlane> = control;
            control.file_changed().await;
        }
    });
    Ok(())
}
