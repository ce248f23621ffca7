//! Reload triggers and their coordination: SIGHUP, a change of the config file, and
//! `POST /reload` all end in `Reloads::reload_file`, which reads, parses, validates and hands
//! the config to the transaction in `server/mod.rs`.
//!
//! Concurrent triggers coalesce: each trigger takes a ticket; a reload that starts after a
//! ticket was taken covers it, so a burst of triggers runs at most one reload more, and a
//! reload never runs twice at once. Every outcome is logged, counted in metrics, kept as the
//! last report for `/status`, and told to systemd (`RELOADING=1` ... `READY=1` + `STATUS=`).
//!
//! The file watch reloads once per change of the file's content: content a reload already
//! read (applied or refused) is no change, so a broken file is reported once, not again at
//! every event that touches it. A file put back to the running content after a refused
//! change clears the failure with a "no changes" report. SIGHUP and `POST /reload` always
//! reload: the operator asked.

use crate::config::Config;
use crate::config::diff::ReloadPlan;
use crate::error::{Error, chain};
use crate::server::Shared;
use crate::watch::FileWatch;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{error, info};

/// Editors and config managers write a file in several steps (truncate, write, rename); wait
/// for the burst to settle before reading.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub trigger: String,
    /// Seconds since the Unix epoch.
    pub finished_at: f64,
    pub success: bool,
    /// The plan's summary on success, the error (with file:line:column) on failure.
    pub detail: String,
}

#[derive(Default)]
pub struct Reloads {
    run: tokio::sync::Mutex<()>,
    tickets: AtomicU64,
    covered: AtomicU64,
    last: Mutex<Option<ReloadReport>>,
    /// What the config file held when it was last applied (`file_state`); `None` while the
    /// running config did not come from the file.
    applied: Mutex<Option<u64>>,
    /// What the config file held when a reload last read it, applied or refused.
    tried: Mutex<Option<u64>>,
}

/// What a watch event found in the config file, against what was applied and tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileChange {
    /// Content no reload has read yet: reload.
    New,
    /// The running content after a refused change: clear the failure.
    Restored,
    /// Content already applied or already refused: nothing to say.
    Seen,
}

/// The detail of a report for a file put back to the running content.
const RESTORED: &str = "no changes (the file holds the running configuration again)\n";

impl Reloads {
    pub fn last_report(&self) -> Option<ReloadReport> {
        lock(&self.last).clone()
    }

    /// Re-reads the config file and applies it. Returns the report of the reload that covered
    /// this trigger (possibly one that another trigger started).
    pub async fn reload_file(&self, shared: &Arc<Shared>, trigger: &str) -> ReloadReport {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let _running = self.run.lock().await;
        if self.covered.load(Ordering::SeqCst) >= ticket
            && let Some(report) = self.last_report()
        {
            return report;
        }
        self.covered
            .store(self.tickets.load(Ordering::SeqCst), Ordering::SeqCst);
        let outcome = match &shared.config_path {
            None => Err("no config file: this instance was started without -c".to_owned()),
            Some(path) => self.load_and_apply(shared, path),
        };
        self.finish(trigger, outcome)
    }

    /// A change the file watch saw: reloads when the file holds content no reload has read
    /// yet; when it holds the running content again after a refused change, clears the
    /// failure. `None` when there was nothing to report.
    pub async fn file_changed(&self, shared: &Arc<Shared>) -> Option<ReloadReport> {
        let path = shared.config_path.as_ref()?;
        let state = file_state(&std::fs::read_to_string(path));
        let change = {
            let _running = self.run.lock().await;
            let change = self.classify(state);
            if change == FileChange::Restored {
                *lock(&self.tried) = Some(state);
                return Some(self.finish("file change", Ok(RESTORED.to_owned())));
            }
            change
        };
        match change {
            FileChange::New => Some(self.reload_file(shared, "file change").await),
            FileChange::Restored | FileChange::Seen => None,
        }
    }

    /// Decides what a watch event that found `state` in the file means.
    fn classify(&self, state: u64) -> FileChange {
        let last_failed = lock(&self.last).as_ref().is_some_and(|r| !r.success);
        if *lock(&self.applied) == Some(state) {
            if last_failed {
                FileChange::Restored
            } else {
                FileChange::Seen
            }
        } else if *lock(&self.tried) == Some(state) {
            FileChange::Seen
        } else {
            FileChange::New
        }
    }

    /// Applies an already parsed config (tests, embedding); same transaction and reporting.
    pub async fn apply_config(
        &self,
        shared: &Arc<Shared>,
        config: Config,
    ) -> Result<ReloadPlan, Error> {
        let _running = self.run.lock().await;
        notify_reloading();
        let result = shared.apply(config);
        let outcome = match &result {
            Ok(plan) => {
                // The running config is not the file's any more: the file's content, even
                // one applied before, is a change to apply again.
                *lock(&self.applied) = None;
                *lock(&self.tried) = None;
                Ok(plan.to_string())
            }
            Err(error) => Err(chain(error)),
        };
        self.finish("api", outcome);
        result
    }

    /// Rebuilds the snapshot with the latest discovered backends, serialised with reloads.
    pub async fn apply_discovered(&self, shared: &Arc<Shared>) {
        let _running = self.run.lock().await;
        shared.apply_discovered();
    }

    fn load_and_apply(&self, shared: &Arc<Shared>, path: &Path) -> Result<String, String> {
        notify_reloading();
        let read = std::fs::read_to_string(path);
        let state = file_state(&read);
        *lock(&self.tried) = Some(state);
        let text = read.map_err(|source| {
            chain(&Error::ReadConfig {
                path: path.to_path_buf(),
                source,
            })
        })?;
        let config = Config::parse(&text, &path.display().to_string()).map_err(|e| chain(&e))?;
        let plan = shared.apply(config).map_err(|e| chain(&e))?;
        *lock(&self.applied) = Some(state);
        shared.set_config_text(text);
        Ok(plan.to_string())
    }

    fn finish(&self, trigger: &str, outcome: Result<String, String>) -> ReloadReport {
        let finished_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let report = match outcome {
            Ok(plan) => {
                info!(
                    trigger,
                    "configuration reloaded: {}",
                    plan.trim_end().replace('\n', "; ")
                );
                crate::metrics::reload(true, finished_at);
                notify_ready("serving; last reload succeeded");
                ReloadReport {
                    trigger: trigger.to_owned(),
                    finished_at,
                    success: true,
                    detail: plan,
                }
            }
            Err(message) => {
                error!(
                    trigger,
                    "reload failed, keeping the running configuration: {message}"
                );
                crate::metrics::reload(false, finished_at);
                let first_line = message.lines().next().unwrap_or_default();
                notify_ready(&format!("serving; last reload failed: {first_line}"));
                ReloadReport {
                    trigger: trigger.to_owned(),
                    finished_at,
                    success: false,
                    detail: message,
                }
            }
        };
        *lock(&self.last) = Some(report.clone());
        report
    }
}

/// What a read of the config file found: a hash of its content, or of why it could not be
/// read (so a file that stays missing is one state too).
fn file_state(read: &std::io::Result<String>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match read {
        Ok(text) => text.hash(&mut hasher),
        Err(error) => (0xdead_u16, error.kind().to_string()).hash(&mut hasher),
    }
    hasher.finish()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Watches the config file (`crate::watch`) and reloads when its content changed.
pub fn watch_file(shared: &Arc<Shared>, path: &Path) -> Result<(), Error> {
    let mut watch = FileWatch::new(path, WATCH_DEBOUNCE).map_err(|e| Error::Io {
        context: format!("cannot watch {}", path.display()),
        source: std::io::Error::other(e),
    })?;
    // The file as it was at start is what runs.
    let read = std::fs::read_to_string(path);
    if read.is_ok() {
        *lock(&shared.reloads.applied) = Some(file_state(&read));
    }
    *lock(&shared.reloads.tried) = Some(file_state(&read));
    info!(path = %path.display(), "watching the config file for changes");

    let shared = Arc::downgrade(shared);
    tokio::spawn(async move {
        // The watch lives as long as this task; dropping it stops the watch.
        while watch.changed().await {
            let Some(shared) = shared.upgrade() else {
                break;
            };
            shared.reloads.file_changed(&shared).await;
        }
    });
    Ok(())
}

/// systemd `Type=notify`: tell the manager we are serving (no-op without NOTIFY_SOCKET).
pub fn notify_ready(status: &str) {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// `RELOADING=1` with the monotonic timestamp systemd >= 253 (`Type=notify-reload`) requires.
fn notify_reloading() {
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, now]);
    }
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_change_is_reported_once_per_content() {
        let reloads = Reloads::default();
        let running = file_state(&Ok("running".to_owned()));
        let broken = file_state(&Ok("broken".to_owned()));
        *lock(&reloads.applied) = Some(running);
        *lock(&reloads.tried) = Some(running);
        assert_eq!(
            reloads.classify(running),
            FileChange::Seen,
            "read, not changed"
        );
        assert_eq!(reloads.classify(broken), FileChange::New);

        // The reload of the broken content read it and failed: seen from now on.
        *lock(&reloads.tried) = Some(broken);
        reloads.finish("file change", Err("t.yaml:1:1: broken".into()));
        assert_eq!(reloads.classify(broken), FileChange::Seen);
        let missing = file_state(&Err(std::io::ErrorKind::NotFound.into()));
        assert_eq!(reloads.classify(missing), FileChange::New);

        // Back to the running content: the failure is cleared, once.
        assert_eq!(reloads.classify(running), FileChange::Restored);
        reloads.finish("file change", Ok(RESTORED.to_owned()));
        assert_eq!(reloads.classify(running), FileChange::Seen);
        let report = reloads.last_report().expect("a report");
        assert!(report.success && report.detail.starts_with("no changes"));
    }
}
