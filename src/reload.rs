//! Reload triggers and their coordination: SIGHUP, a change of the config file, and
//! `POST /reload` all end in `Reloads::reload_file`, which reads, parses, validates and hands
//! the config to the transaction in `server/mod.rs`.
//!
//! Concurrent triggers coalesce: each trigger takes a ticket; a reload that starts after a
//! ticket was taken covers it, so a burst of triggers runs at most one reload more, and a
//! reload never runs twice at once. Every outcome is logged, counted in metrics, kept as the
//! last report for `/status`, and told to systemd (`RELOADING=1` ... `READY=1` + `STATUS=`).

use crate::config::Config;
use crate::config::diff::ReloadPlan;
use crate::error::{Error, chain};
use crate::server::Shared;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{error, info, warn};

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
    /// Hash of the file content last applied, so a watch event without a real change is a no-op.
    applied_hash: Mutex<Option<u64>>,
}

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
            Ok(plan) => Ok(plan.to_string()),
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
        let text = std::fs::read_to_string(path).map_err(|source| {
            chain(&Error::ReadConfig {
                path: path.to_path_buf(),
                source,
            })
        })?;
        let config = Config::parse(&text, &path.display().to_string()).map_err(|e| chain(&e))?;
        let plan = shared.apply(config).map_err(|e| chain(&e))?;
        *lock(&self.applied_hash) = Some(content_hash(&text));
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

    /// Whether `text` differs from what was last applied from the file.
    fn is_new_content(&self, text: &str) -> bool {
        *lock(&self.applied_hash) != Some(content_hash(text))
    }
}

fn content_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Watches the config file's directory (editors replace files by rename, which a watch on the
/// file itself would miss) and reloads when the file's content really changed.
pub fn watch_file(shared: &Arc<Shared>, path: &Path) -> Result<(), Error> {
    let watch_error = |e: notify::Error| Error::Io {
        context: format!("cannot watch {}", path.display()),
        source: std::io::Error::other(e),
    };
    let file_name = path.file_name().map(|n| n.to_owned());
    let directory = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut debouncer = new_debouncer(WATCH_DEBOUNCE, move |events: DebounceEventResult| {
        let touches_config = match events {
            Ok(events) => events
                .iter()
                .any(|event| event.path.file_name() == file_name.as_deref()),
            Err(error) => {
                warn!(error = %crate::error::Chain(&error), "config file watch error");
                false
            }
        };
        if touches_config {
            // A full channel already holds a pending trigger: coalesce.
            let _ = changed_tx.try_send(());
        }
    })
    .map_err(watch_error)?;
    debouncer
        .watcher()
        .watch(&directory, notify::RecursiveMode::NonRecursive)
        .map_err(watch_error)?;
    if let Ok(text) = std::fs::read_to_string(path) {
        *lock(&shared.reloads.applied_hash) = Some(content_hash(&text));
    }

    let shared = Arc::downgrade(shared);
    let path = path.to_path_buf();
    tokio::spawn(async move {
        // The debouncer lives as long as this task; dropping it stops the watch.
        let _debouncer = debouncer;
        while changed_rx.recv().await.is_some() {
            let Some(shared) = shared.upgrade() else {
                break;
            };
            match std::fs::read_to_string(&path) {
                Ok(text) if !shared.reloads.is_new_content(&text) => continue,
                // Unreadable (mid-rename) or changed: let the reload report what it finds.
                _ => {}
            }
            shared.reloads.reload_file(&shared, "file change").await;
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
