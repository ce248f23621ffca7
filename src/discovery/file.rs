//! The `file` discovery source: a YAML list of backends (same short and long forms as
//! `backends:`), re-read when it changes.
//!
//! Watches the file through `crate::watch` (its directory, reads of the file ignored, events
//! settled), and a re-read whose content hash did not change is a no-op. A file that is
//! missing, unreadable or invalid keeps the last good set; the error (with line and column)
//! goes to `/status`. A slow poll backs up the watch (a directory created later, a network
//! file system that sends no events).

use super::Publisher;
use crate::config::discovery::{FileSource, parse_backend_file};
use crate::error::Chain;
use crate::watch::FileWatch;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;

const DEBOUNCE: Duration = Duration::from_millis(100);
/// Re-read this often even without events; cheap (a read and a hash compare).
const POLL: Duration = Duration::from_secs(5);

pub async fn run(source: FileSource, publisher: Publisher, stop: CancellationToken) {
    // `None` while the directory cannot be watched (missing): the poll covers it and a
    // later round tries again.
    let mut watch: Option<FileWatch> = None;
    let mut last_seen: Option<u64> = None;
    loop {
        if watch.is_none() {
            watch = FileWatch::new(&source.path, DEBOUNCE)
                .map_err(|error| {
                    debug!(path = %source.path.display(), error = %Chain(&error), "cannot watch");
                })
                .ok();
        }
        read(&source.path, &publisher, &mut last_seen);
        let changed = async {
            match watch.as_mut() {
                Some(watch) => watch.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            watching = changed => if !watching {
                watch = None;
            },
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

fn content_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}
