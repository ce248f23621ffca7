//! Unix signals: SIGTERM/SIGINT stop accepting and drain (a second one stops waiting),
//! SIGHUP reloads the config file, SIGUSR1 reopens access log files, SIGUSR2 hands the
//! listening sockets to a new process (binary upgrade) and drains this one.

use super::{DrainOutcome, Server};
use crate::error::{Chain, Error};
use crate::upgrade;
use tracing::{error, info, warn};

pub(super) struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    user1: tokio::signal::unix::Signal,
    user2: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn install() -> Result<Signals, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind| {
            signal(kind).map_err(|source| Error::Io {
                context: "cannot install signal handler".into(),
                source,
            })
        };
        Ok(Signals {
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
            hangup: install(SignalKind::hangup())?,
            user1: install(SignalKind::user_defined1())?,
            user2: install(SignalKind::user_defined2())?,
        })
    }
}

impl Server {
    /// Runs until SIGTERM or SIGINT, reloading on SIGHUP and upgrading on SIGUSR2, then
    /// drains with the configured deadline. A second SIGTERM/SIGINT stops waiting at once.
    pub async fn run_until_signal(&self) -> Result<DrainOutcome, Error> {
        let taken = self.signals.lock().await.take();
        let mut signals = match taken {
            Some(signals) => signals,
            None => Signals::install()?,
        };
        loop {
            tokio::select! {
                _ = signals.terminate.recv() => break,
                _ = signals.interrupt.recv() => break,
                _ = signals.user1.recv() => {
                    info!("SIGUSR1: reopening access log files");
                    crate::access_log::reopen_all();
                }
                _ = signals.user2.recv() => {
                    if self.upgrade().await {
                        break;
                    }
                }
                _ = signals.hangup.recv() => {
                    if self.control.config_path().is_some() {
                        self.control.reload_file("SIGHUP").await;
                    } else {
                        warn!("SIGHUP ignored: no config file to reload (demo mode)");
                    }
                }
            }
        }
        crate::systemd::notify_stopping();
        let deadline = self.snapshot().load().config.runtime.drain_timeout;
        info!(
            ?deadline,
            "shutting down: no new connections, draining open ones"
        );
        let outcome = tokio::select! {
            outcome = self.shutdown(deadline) => outcome,
            _ = signals.terminate.recv() => DrainOutcome::TimedOut,
            _ = signals.interrupt.recv() => DrainOutcome::TimedOut,
        };
        match outcome {
            DrainOutcome::Complete => info!("drained; exiting"),
            DrainOutcome::TimedOut => {
                warn!("drain deadline reached or second signal; closing remaining connections")
            }
        }
        Ok(outcome)
    }
}

impl Server {
    /// SIGUSR2: start the binary anew with our sockets. True when the new process serves and
    /// this one should drain and exit; false when the upgrade failed and we keep serving.
    async fn upgrade(&self) -> bool {
        if self.control.config_path().is_none() {
            warn!("SIGUSR2 ignored: binary upgrade needs a config file (not in demo mode)");
            return false;
        }
        let sockets = self.control.sockets_for_upgrade();
        info!(
            sockets = sockets.len(),
            "binary upgrade: starting a new process with our listening sockets"
        );
        match tokio::task::spawn_blocking(move || upgrade::hand_over(sockets)).await {
            Ok(Ok(pid)) => {
                // The new process accepts on our unix sockets now: leave their files.
                self.control.keep_socket_files();
                info!(
                    pid,
                    "binary upgrade: the new process serves; this one stops accepting and drains"
                );
                let _ = sd_notify::notify(&[sd_notify::NotifyState::MainPid(pid)]);
                true
            }
            Ok(Err(error)) => {
                error!(
                    "binary upgrade failed, this process keeps serving: {}",
                    Chain(&error)
                );
                false
            }
            Err(error) => {
                error!(%error, "binary upgrade task failed, this process keeps serving");
                false
            }
        }
    }
}
