//! Watching one file for changes: the config file (`reload`) and a discovery file
//! (`discovery::file`); or every file of a few directories (`tls`: certificates and keys,
//! whose directories may be swapped whole by a symlink). Owns the inotify (or other `notify` backend) watch and the settling
//! of a burst of events into one change; what a change means is the caller's business.
//!
//! The file's directory is watched, not the file: editors, config managers and Kubernetes
//! ConfigMaps replace a file by rename, which a watch on the file itself loses. Events that
//! only read the file (open, access, close without writing) are dropped: inotify reports the
//! watcher's own read of the file, so when every event led to a read, a watched file was read
//! again after each settling period for as long as it existed, and a broken config file was
//! reloaded, and reported failed, four times a second (issue 19).

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

/// A burst of events that never pauses (a file rewritten without end) still reports a change
/// this many settling periods after it began.
const MAX_SETTLE_PERIODS: u32 = 8;

/// A live watch of one file; dropping it stops the watch.
pub struct FileWatch {
    _watcher: RecommendedWatcher,
    events: mpsc::Receiver<()>,
    settle: Duration,
}

impl FileWatch {
    /// Watches `path`'s directory for events that may have changed `path`. A change is
    /// reported once no further event came for `settle`.
    pub fn new(path: &Path, settle: Duration) -> Result<FileWatch, notify::Error> {
        let name = path.file_name().map(OsString::from);
        let directory = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        FileWatch::start(&[directory], Some(name), path.display().to_string(), settle)
    }

    /// Watches every file of `directories` (not their subdirectories): a change is any event
    /// but a read, on any name (a Kubernetes secret swaps its `..data` symlink, not the file).
    pub fn directories(
        directories: &[PathBuf],
        settle: Duration,
    ) -> Result<FileWatch, notify::Error> {
        let shown = (directories.iter().map(|d| d.display().to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        FileWatch::start(directories, None, shown, settle)
    }

    /// `name`: `Some(file name)` to report changes of that name only, `None` for any.
    fn start(
        directories: &[PathBuf],
        name: Option<Option<OsString>>,
        shown: String,
        settle: Duration,
    ) -> Result<FileWatch, notify::Error> {
        let (events_tx, events) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<Event>| match event {
                Ok(event) if !may_change(&event, name.as_ref().map(Option::as_deref)) => {}
                Ok(_) => {
                    // A full channel already holds a pending change: coalesce.
                    let _ = events_tx.try_send(());
                }
                Err(error) => {
                    // Events may have been lost: look at the file again.
                    warn!(path = %shown, error = %crate::error::Chain(&error), "file watch error");
                    let _ = events_tx.try_send(());
                }
            })?;
        for directory in directories {
            watcher.watch(directory, RecursiveMode::NonRecursive)?;
        }
        Ok(FileWatch {
            _watcher: watcher,
            events,
            settle,
        })
    }

    /// Waits for the next change, then until the events have settled. False when the watch
    /// ended (no change will come).
    pub async fn changed(&mut self) -> bool {
        if self.events.recv().await.is_none() {
            return false;
        }
        let cap = Instant::now() + self.settle * MAX_SETTLE_PERIODS;
        loop {
            let quiet_until = (Instant::now() + self.settle).min(cap);
            match tokio::time::timeout_at(quiet_until, self.events.recv()).await {
                Ok(Some(())) if Instant::now() < cap => continue,
                // Settled, past the cap, or the watch ended with this change pending.
                _ => return true,
            }
        }
    }
}

/// Whether `event` may have changed the file named `name` (any file for `None`): any event on
/// it but a read, and any event that says events were lost.
fn may_change(event: &Event, name: Option<Option<&std::ffi::OsStr>>) -> bool {
    if event.need_rescan() {
        return true;
    }
    let only_read = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
        EventKind::Access(_) => true,
        _ => false,
    };
    !only_read
        && match name {
            None => true,
            Some(name) => event.paths.iter().any(|p| p.file_name() == name),
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, Flag, ModifyKind, RemoveKind, RenameMode};

    #[test]
    fn reads_of_the_file_and_other_files_are_no_change() {
        let name = Some(Some(std::ffi::OsStr::new("sluice.yaml")));
        let on = |kind: EventKind| Event::new(kind).add_path(PathBuf::from("/etc/sluice.yaml"));
        for read in [
            AccessKind::Open(AccessMode::Any),
            AccessKind::Read,
            AccessKind::Close(AccessMode::Read),
            AccessKind::Any,
        ] {
            assert!(!may_change(&on(EventKind::Access(read)), name), "{read:?}");
        }
        for change in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(may_change(&on(change), name), "{change:?}");
        }
        let other = Event::new(EventKind::Create(CreateKind::File))
            .add_path(PathBuf::from("/etc/sluice.yaml.swp"));
        assert!(!may_change(&other, name));
        let lost = Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert!(may_change(&lost, name), "events were lost: look again");
        assert!(may_change(&other, None), "a directory watch: any name");
        let read = on(EventKind::Access(AccessKind::Read));
        assert!(
            !may_change(&read, None),
            "a directory watch ignores reads too"
        );
    }
}
