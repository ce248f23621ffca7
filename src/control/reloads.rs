//! Reloads of the config file: reading, coalescing and reporting. SIGHUP, a change of the
//! file and `POST /reload` all end in `Reloads::reload_file`, which reads and parses the file
//! and hands the config to the transaction (`Control::apply`); parsing is part of prepare.
//!
//! Concurrent triggers coalesce: each trigger takes a ticket; a reload that starts after a
//! ticket was taken covers it, so a burst of triggers runs at most one reload more, and a
//! reload never runs twice at once. Every outcome is logged, counted in metrics, kept (the last
//! report, and a history of the last 20) for `/status`, and told to systemd (`RELOADING=1`
//! ... `READY=1` + `STATUS=`).
//!
//! The file watch reloads once per change of the file's content: content a reload already
//! read (applied or refused) is no change, so a broken file is reported once, not again at
//! every event that touches it. A file put back to the running content after a refused
//! change clears the failure with a "no changes" report. SIGHUP and `POST /reload` always
//! reload: the operator asked.

use super::{Control, Proposal};
use crate::config::Config;
use crate::config::diff::ReloadPlan;
use crate::config::plan_summary::SUMMARY_LINES;
use crate::error::{Error, chain};
use crate::systemd::{notify_ready, notify_reloading};
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{error, info};

#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub trigger: String,
    /// Seconds since the Unix epoch.
    pub finished_at: f64,
    pub success: bool,
    /// The plan's summary on success, the error (with file:line:column) on failure.
    pub detail: String,
}

/// The bookkeeping of reloads; the lock that serialises them is the control plane's `run`.
#[derive(Default)]
pub(super) struct Reloads {
    tickets: AtomicU64,
    covered: AtomicU64,
    last: Mutex<Option<ReloadReport>>,
    /// The last `HISTORY` reports, oldest first (the status page's reload history).
    history: Mutex<std::collections::VecDeque<ReloadReport>>,
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

/// A plan as the info log and the reload history keep it: bounded (`ReloadPlan::summary`), so
/// that a change moving 10,000 backends is not a megabyte per log line and per report. The
/// whole plan goes to the debug log, built only when that level is on.
pub(super) fn describe(plan: &ReloadPlan) -> String {
    tracing::debug!("full plan:\n{plan}");
    plan.summary(SUMMARY_LINES)
}

/// Reload reports kept for `/status` (`reload_history`).
const HISTORY: usize = 20;

/// The detail of a report for a file put back to the running content.
const RESTORED: &str = "no changes (the file holds the running configuration again)\n";

impl Reloads {
    pub(super) fn last_report(&self) -> Option<ReloadReport> {
        lock(&self.last).clone()
    }

    pub(super) fn history(&self) -> Vec<ReloadReport> {
        lock(&self.history).iter().cloned().collect()
    }

    /// Re-reads the config file and applies it. Returns the report of the reload that covered
    /// this trigger (possibly one that another trigger started).
    pub(super) async fn reload_file(control: &Control, trigger: &str) -> ReloadReport {
        let this = &control.reloads;
        let ticket = this.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let _running = control.run.lock().await;
        this.reload_file_locked(control, trigger, ticket).await
    }

    async fn reload_file_locked(
        &self,
        control: &Control,
        trigger: &str,
        ticket: u64,
    ) -> ReloadReport {
        if self.covered.load(Ordering::SeqCst) >= ticket
            && let Some(report) = self.last_report()
        {
            return report;
        }
        self.covered
            .store(self.tickets.load(Ordering::SeqCst), Ordering::SeqCst);
        let outcome = match control.config_path() {
            None => Err("no config file: this instance was started without -c".to_owned()),
            Some(path) => self.load_and_apply(control, path).await,
        };
        self.finish(trigger, outcome)
    }

    /// A change the file watch saw: reloads when the file holds content no reload has read
    /// yet; when it holds the running content again after a refused change, clears the
    /// failure. `None` when there was nothing to report.
    pub(super) async fn file_changed(control: &Control) -> Option<ReloadReport> {
        let this = &control.reloads;
        let path = control.config_path()?;
        let state = file_state(&std::fs::read_to_string(path));
        let ticket = this.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let _running = control.run.lock().await;
        match this.classify(state) {
            FileChange::New => Some(
                this.reload_file_locked(control, "file change", ticket)
                    .await,
            ),
            FileChange::Restored => {
                *lock(&this.tried) = Some(state);
                Some(this.finish("file change", Ok(RESTORED.to_owned())))
            }
            FileChange::Seen => None,
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

    /// Reports a reload of an already parsed config (`Control::apply_config`).
    pub(super) fn finish_api(&self, result: &Result<ReloadPlan, Error>) {
        let outcome = match result {
            Ok(plan) => {
                // The running config is not the file's any more: the file's content, even
                // one applied before, is a change to apply again.
                *lock(&self.applied) = None;
                *lock(&self.tried) = None;
                Ok(describe(plan))
            }
            Err(error) => Err(chain(error)),
        };
        self.finish("api", outcome);
    }

    /// The file as it was at start is what runs.
    pub(super) fn started_from(&self, path: &Path) {
        let read = std::fs::read_to_string(path);
        if read.is_ok() {
            *lock(&self.applied) = Some(file_state(&read));
        }
        *lock(&self.tried) = Some(file_state(&read));
    }

    pub(super) fn notify_reloading(&self) {
        notify_reloading();
    }

    async fn load_and_apply(&self, control: &Control, path: &Path) -> Result<String, String> {
        notify_reloading();
        let (state, parsed) = read_and_parse(path).await;
        *lock(&self.tried) = Some(state);
        let (config, text) = parsed?;
        let plan = control
            .apply(Proposal::File(Box::new(config), Some(text)), None)
            .map_err(|e| chain(&e))?;
        *lock(&self.applied) = Some(state);
        Ok(describe(&plan))
    }

    fn finish(&self, trigger: &str, outcome: Result<String, String>) -> ReloadReport {
        let finished_at = crate::clock::unix_seconds();
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
        let mut history = lock(&self.history);
        history.push_back(report.clone());
        while history.len() > HISTORY {
            history.pop_front();
        }
        drop(history);
        report
    }
}

/// Reads and parses the config file on tokio's blocking pool: parsing a big file takes tens
/// of milliseconds of CPU (~60 ms for 10,000 backends), and with one worker thread the
/// requests of every connection would wait behind it (p99 during reloads). Only the pure
/// read-and-parse moves; applying the result stays on the caller's task, under the reload lock.
async fn read_and_parse(path: &Path) -> (u64, Result<(Config, String), String>) {
    let path = path.to_path_buf();
    let work = move || {
        let read = std::fs::read_to_string(&path);
        let state = file_state(&read);
        let parsed = read
            .map_err(|source| {
                chain(&Error::ReadConfig {
                    path: path.clone(),
                    source,
                })
            })
            .and_then(|text| {
                Config::parse(&text, &path.display().to_string())
                    .map(|config| (config, text))
                    .map_err(|e| chain(&e))
            });
        (state, parsed)
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(join) => (0, Err(format!("reading the config file failed: {join}"))),
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
