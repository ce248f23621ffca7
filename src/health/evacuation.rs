//! The signal that tells the requests waiting on a backend to give it up: sounded when an
//! active check of the backend times out, or when the backend goes down or is ejected. The
//! proxy (`proxy::forward`) listens for it while a request that is safe to send again waits
//! for its response head, and moves such a request to another backend instead of waiting
//! for the response timeout (60 s by default).
//!
//! Decision: a check timeout is the trigger, not a latency-derived per-try timeout. A check
//! is a trivial request; when the backend does not answer it within the check's timeout, the
//! backend as a whole is stuck, whatever the waiting requests ask for. A per-try timeout
//! derived from a pool's latency cannot tell a hung backend from a request that is slow by
//! nature (a report, an export), and would cut and replay those on every backend in turn.
//! Draining and removal do not sound it: an operator drains a backend so that its work in
//! flight *finishes* there.
//!
//! Costs nothing on the data path until a request has waited `proxy::forward`'s grace: the
//! request reads the epoch (one atomic load) when it is sent, and registers with the `Notify`
//! only if it is still waiting after the grace; an evacuation in between shows as a newer
//! epoch. No clock, no I/O here; imports nothing of ours.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// Why a backend's waiting requests were told to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An active check got no answer within its timeout.
    CheckTimedOut,
    /// Active checks marked it down.
    Down,
    /// Passive outlier detection ejected it.
    Ejected,
}

impl Cause {
    /// The `cause` label of `sluice_requests_moved_total`.
    pub fn label(self) -> &'static str {
        match self {
            Cause::CheckTimedOut => "check_timeout",
            Cause::Down => "down",
            Cause::Ejected => "ejected",
        }
    }

    /// For the access log and debug logs.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::CheckTimedOut => "an active check of the backend timed out",
            Cause::Down => "active checks marked the backend down",
            Cause::Ejected => "the backend was ejected for failing",
        }
    }

    fn code(self) -> u8 {
        match self {
            Cause::CheckTimedOut => 0,
            Cause::Down => 1,
            Cause::Ejected => 2,
        }
    }

    fn from_code(code: u8) -> Cause {
        match code {
            1 => Cause::Down,
            2 => Cause::Ejected,
            _ => Cause::CheckTimedOut,
        }
    }
}

/// One backend's evacuation signal: a counter of evacuations and the cause of the latest.
#[derive(Debug, Default)]
pub struct Evacuation {
    epoch: AtomicU32,
    cause: AtomicU8,
    notify: Notify,
}

impl Evacuation {
    /// The current epoch; read it when a request is sent, to ask `since` later.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Tells every request waiting on the backend to leave it if it safely can.
    pub fn sound(&self, cause: Cause) {
        self.cause.store(cause.code(), Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// The cause of the latest evacuation, if one was sounded after `epoch` was read.
    pub fn since(&self, epoch: u32) -> Option<Cause> {
        (self.epoch() != epoch).then(|| Cause::from_code(self.cause.load(Ordering::Relaxed)))
    }

    /// Resolves at the next `sound` after this call. Enable it before asking `since`, so a
    /// sound in between is not missed.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reports_the_latest_cause_only_after_a_sound() {
        let evacuation = Evacuation::default();
        let sent = evacuation.epoch();
        assert_eq!(evacuation.since(sent), None);
        evacuation.sound(Cause::CheckTimedOut);
        assert_eq!(evacuation.since(sent), Some(Cause::CheckTimedOut));
        evacuation.sound(Cause::Ejected);
        assert_eq!(evacuation.since(sent), Some(Cause::Ejected));
        assert_eq!(evacuation.since(evacuation.epoch()), None, "a later sender");
    }

    #[tokio::test]
    async fn an_enabled_waiter_is_woken_by_a_sound() {
        let evacuation = Evacuation::default();
        let notified = evacuation.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        evacuation.sound(Cause::Down);
        notified.await;
        assert_eq!(Cause::from_code(Cause::Down.code()), Cause::Down);
    }
}
