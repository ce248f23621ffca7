//! The watch that keeps a certificate store current: every change in the directories of its
//! files (in-place rewrite, rename over, a Kubernetes `..data` symlink swap) and a look every
//! `RECHECK` besides (a lost event, a network file system without inotify) re-read the pairs.
//!
//! A pair that is not good is given `GRACE` to complete (a key written before its
//! certificate, a file written in two steps) before it is reported; a good pair is swapped in
//! at once. The watch also logs the expiry warnings. It ends when its store is dropped.

use super::store::CertStore;
use crate::watch::FileWatch;
use std::sync::Weak;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// A burst of events (a file written in pieces, a rename) settles into one look.
const SETTLE: Duration = Duration::from_millis(50);
const GRACE: Duration = Duration::from_secs(1);
const RECHECK: Duration = Duration::from_secs(60);

pub(super) async fn run(store: Weak<CertStore>, stop: CancellationToken) {
    let Some(first) = store.upgrade() else {
        return;
    };
    let mut directories = first.directories();
    let listener = first.listener().to_owned();
    first.warn_expiry(crate::clock::unix_seconds());
    drop(first);
    let mut watch = start(&listener, &directories);
    let mut report_at: Option<Instant> = None;
    loop {
        let next_look = Instant::now() + RECHECK;
        let until = report_at.map_or(next_look, |at| at.min(next_look));
        tokio::select! {
            () = stop.cancelled() => return,
            alive = changed(&mut watch) => if !alive { watch = None },
            () = tokio::time::sleep_until(until) => {}
        }
        let Some(store) = store.upgrade() else {
            return;
        };
        let now = crate::clock::unix_seconds();
        let report = report_at.is_some_and(|at| Instant::now() >= at);
        let outcome = store.recheck(now, report);
        report_at = match (outcome.failing, report_at) {
            (0, _) => None,
            (_, Some(at)) if !report => Some(at),
            // Reported (or first seen): the next report waits for the next change or look.
            _ if report => None,
            _ => Some(Instant::now() + GRACE),
        };
        store.warn_expiry(now);
        // A symlink swap may point a file at another directory: follow it.
        let fresh = store.directories();
        if fresh != directories || watch.is_none() {
            directories = fresh;
            watch = start(&listener, &directories);
        }
    }
}

async fn changed(watch: &mut Option<FileWatch>) -> bool {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

fn start(listener: &str, directories: &[std::path::PathBuf]) -> Option<FileWatch> {
    match FileWatch::directories(directories, SETTLE) {
        Ok(watch) => Some(watch),
        Err(error) => {
            warn!(%listener, error = %crate::error::Chain(&error), "cannot watch the certificate directories; looking every minute instead");
            None
        }
    }
}
