//! The `file` discovery source: a YAML list of backends (same short and long forms as
//! `backends:`), re-read when it changes.
//!
//! Watches the file's directory, not the file: editors, config managers and Kubernetes
//! ConfigMaps replace a file by rename, which a watch on the file itself loses. Events are
//! debounced, and a re-read whose content hash did not change is a no-op. A file that is
//! missing, unreadable or invalid keeps the last good set; the error (with line and column)
//! goes to `/status`. A slow poll backs up the watch (a directory created later, a network
//! file system that sends no events).

use super::Publisher;
use crate::config::discovery::{FileSource, parse_backend_file};
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;

const DEBOUNCE: Duration = Duration::from_millis(100);
/// Re-read this often even without events; cheap (a read and a hash compare).
const POLL: Duration = Duration::from_secs(5);

pub async fn run(source: FileSource, publisher: Publisher, stop: CancellationToken) {
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(1);
    // `None` while the directory cannot be watched (missing): the poll covers it and a
    // later round tries again.
    let mut watcher = None;
    let mut last_seen: Option<u64> = None;
    loop {
        if watcher.is_none() {
            watcher = watch(&source.path, changed_tx.clone())
                .map_err(|error| debug!(path = %source.path.display(), %error, "cannot watch"))
                .ok();
        }
        read(&source.path, &publisher, &mut last_seen);
        tokio::select! {
            _ = changed_rx.recv() => {}
            () = tokio::time::sleep(POLL) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Reads, parses and publishes the file unless its content is what was seen last.
fn read(path: &Path, publisher: &Publisher, last_seen: &mut Option<u64>) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            let hash = Some(error.kind() as u64 ^ 0x5eed);
            if *last_seen != hash {
                *last_seen = hash;
                publisher.fail(&format!("cannot read {}: {error}", path.display()));
            }
            return;
        }
    };
    let hash = Some(content_hash(&text));
    if *last_seen == hash {
        return;
    }
    *last_seen = hash;
    match parse_backend_file(&text, &path.display().to_string()) {
        Ok(backends) => publisher.publish(backends),
        Err(error) => publisher.fail(&error.to_string()),
    }
}

fn watch(
    path: &Path,
    changed: tokio::sync::mpsc::Sender<()>,
) -> Result<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>, notify::Error> {
    let file_name = path.file_name().map(|n| n.to_owned());
    let directory = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut debouncer = new_debouncer(DEBOUNCE, move |events: DebounceEventResult| {
        let touches = events.is_ok_and(|events| {
            events
                .iter()
                .any(|event| event.path.file_name() == file_name.as_deref())
        });
        if touches {
            // A full channel already holds a pending wake-up: coalesce.
            let _ = changed.try_send(());
        }
    })?;
    debouncer
        .watcher()
        .watch(&directory, notify::RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}

fn content_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}
