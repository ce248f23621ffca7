//! A TLS listener's certificates as runtime state: the pairs as last loaded, the table the
//! handshake reads (`ResolvesServerCert`), and what went wrong with the files on disk.
//!
//! Decision: certificates rotate without a reload. The store's watch (`watch.rs`) re-reads a
//! pair when its files or directories change, and swaps a pair in only when it is complete
//! and consistent (both files parse, the key fits the certificate, the certificate is not
//! expired). A pair that is not keeps the last good one serving and is reported, once per
//! content, in the log, `/status` and `sluice_tls_certificate_stale`. Handshakes read one
//! `ArcSwap` of the table: a new pair applies to new connections, open ones keep theirs.
//!
//! The store belongs to the validated config (`config::tls`), so a reload that reads the
//! files again builds a fresh one; the old one's watch ends when the old store is dropped.

use super::expiry::expiry_text;
use super::resolve::{NameIndex, pick};
use super::{LoadedCert, PairError, parse_pair, read_pair};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use super::expiry::{EXPIRY_WARNING_SECONDS, expiry_warnings};

pub struct CertStore {
    listener: String,
    slots: Vec<Slot>,
    default: usize,
    table: ArcSwap<Table>,
    watching: AtomicBool,
    /// Cancelled when the store is dropped: its watch ends.
    stop: CancellationToken,
    rotations: AtomicU64,
    refusals: AtomicU64,
    /// Session ticket keys read from a file, watched with the certificates.
    tickets: Option<Arc<super::tickets::Ticketer>>,
    /// Why the ticket key file on disk is not in force.
    ticket_problem: Mutex<Option<String>>,
    /// The client certificate verifier (`tls.client_auth`): its CA bundle and CRL are
    /// watched with the certificates and swapped the same way (`client_auth.rs`).
    client_auth: Option<Arc<super::client_auth::ClientAuthStore>>,
}

struct Slot {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<LoadedCert>,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Unix seconds of the last swap-in by the watch (`None`: as the config loaded it).
    rotated_at: Option<f64>,
    /// Why the files on disk are not served, and the content that was refused (the same
    /// content is not reported twice).
    problem: Option<Problem>,
    /// Unix seconds of the last expiry warning in the log.
    warned_at: Option<i64>,
}

struct Problem {
    message: String,
    since: f64,
    content: Vec<u8>,
}

/// What the handshake reads.
struct Table {
    certs: Vec<Arc<CertifiedKey>>,
    names: NameIndex,
}

/// One pair in `/status` and the metrics.
#[derive(Debug, Clone, Serialize)]
pub struct CertStatus {
    pub cert: String,
    pub key: String,
    /// The SAN DNS names served.
    pub names: Vec<String>,
    pub subject: String,
    pub serial: String,
    /// notAfter, Unix seconds.
    pub expires_at: i64,
    /// When the watch last swapped in a new pair (`null`: as the config loaded it).
    pub rotated_at: Option<f64>,
    /// Why the files on disk are refused while the last good pair keeps serving.
    pub problem: Option<String>,
    pub problem_since: Option<f64>,
}

/// What one look at the files found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recheck {
    pub swapped: usize,
    /// Pairs whose files are not (yet) a good pair.
    pub failing: usize,
}

impl CertStore {
    /// `pairs[i]` is the (cert, key) paths of `loaded[i]`; `default` indexes them.
    pub fn new(
        listener: &str,
        pairs: Vec<(PathBuf, PathBuf)>,
        loaded: Vec<LoadedCert>,
        default: usize,
        tickets: Option<Arc<super::tickets::Ticketer>>,
        client_auth: Option<Arc<super::client_auth::ClientAuthStore>>,
    ) -> Arc<CertStore> {
        let slots: Vec<Slot> = pairs
            .into_iter()
            .zip(loaded)
            .map(|((cert, key), loaded)| Slot {
                cert,
                key,
                current: ArcSwap::from_pointee(loaded),
                state: Mutex::new(SlotState::default()),
            })
            .collect();
        let table = ArcSwap::from_pointee(table_of(&slots, default));
        Arc::new(CertStore {
            listener: listener.to_owned(),
            slots,
            default,
            table,
            watching: AtomicBool::new(false),
            stop: CancellationToken::new(),
            rotations: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            tickets,
            ticket_problem: Mutex::new(None),
            client_auth,
        })
    }

    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// Starts the watch of this store's files (once; needs a tokio runtime, else nothing).
    pub fn watch(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        runtime.spawn(super::watch::run(Arc::downgrade(self), self.stop.clone()));
    }

    /// The directories whose changes may change a pair: each file's own directory and, for a
    /// symlink, the directory of what it points to (certbot's `live/` links to `archive/`).
    pub fn directories(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let tickets = self.tickets.as_ref().and_then(|t| t.file());
        let client_auth = self.client_auth.iter().flat_map(|a| a.files());
        let files = self
            .slots
            .iter()
            .flat_map(|s| [s.cert.as_path(), s.key.as_path()]);
        for path in files.chain(tickets).chain(client_auth) {
            let real = std::fs::canonicalize(path).ok();
            for file in std::iter::once(path).chain(real.as_deref()) {
                if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
                    && !out.iter().any(|d| d == dir)
                {
                    out.push(dir.to_path_buf());
                }
            }
        }
        out
    }

    /// Reads every pair again and swaps in the ones that changed and are good. `report`:
    /// record and log a pair that is not good; otherwise it only counts as failing (a pair
    /// being written, the key before the certificate, is given a moment to complete).
    pub fn recheck(&self, now: f64, report: bool) -> Recheck {
        let mut outcome = Recheck::default();
        for slot in &self.slots {
            let current = slot.current.load();
            let (cert_bytes, key_bytes) = match read_pair(&slot.cert, &slot.key) {
                Ok(bytes) => bytes,
                Err(error) => {
                    outcome.failing += 1;
                    if report {
                        self.refuse(slot, error.message, Vec::new(), now);
                    }
                    continue;
                }
            };
            let same = |content: &[u8]| {
                content.len() == cert_bytes.len() + key_bytes.len()
                    && content.starts_with(&cert_bytes)
                    && content.ends_with(&key_bytes)
            };
            if same(&current.content) {
                // Back to what is served (a bad write undone): nothing is wrong any more.
                lock(&slot.state).problem = None;
                continue;
            }
            if lock(&slot.state)
                .problem
                .as_ref()
                .is_some_and(|p| same(&p.content))
            {
                outcome.failing += 1;
                continue;
            }
            let mut content = cert_bytes.clone();
            content.extend_from_slice(&key_bytes);
            match parse_pair(&slot.cert, &slot.key, cert_bytes, key_bytes)
                .map_err(|PairError { message, .. }| message)
                .and_then(|pair| usable(pair, now))
            {
                Ok(pair) => {
                    info!(
                        listener = %self.listener,
                        cert = %slot.cert.display(),
                        serial = %pair.facts.serial,
                        expires = pair.facts.not_after,
                        "TLS certificate rotated: new connections get the new one"
                    );
                    slot.current.store(Arc::new(pair));
                    let mut state = lock(&slot.state);
                    state.problem = None;
                    state.rotated_at = Some(now);
                    state.warned_at = None;
                    self.rotations.fetch_add(1, Ordering::Relaxed);
                    outcome.swapped += 1;
                }
                Err(message) => {
                    outcome.failing += 1;
                    if report {
                        self.refuse(slot, message, content, now);
                    }
                }
            }
        }
        if outcome.swapped > 0 {
            self.table
                .store(Arc::new(table_of(&self.slots, self.default)));
        }
        self.reload_tickets(report, &mut outcome);
        self.reload_client_auth(report, &mut outcome);
        outcome
    }

    fn reload_client_auth(&self, report: bool, outcome: &mut Recheck) {
        use super::client_auth::Look;
        let Some(auth) = &self.client_auth else {
            return;
        };
        match auth.recheck(report) {
            Look::Unchanged => {}
            Look::Swapped => {
                self.rotations.fetch_add(1, Ordering::Relaxed);
                outcome.swapped += 1;
            }
            Look::Failing { reported } => {
                outcome.failing += 1;
                if reported {
                    self.refusals.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Why the client CA bundle or CRL on disk is refused, if it is.
    pub fn client_auth_problem(&self) -> Option<String> {
        self.client_auth.as_ref().and_then(|a| a.problem())
    }

    fn reload_tickets(&self, report: bool, outcome: &mut Recheck) {
        let Some(tickets) = &self.tickets else { return };
        let mut problem = self
            .ticket_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match tickets.reload() {
            Ok(changed) => {
                if changed {
                    info!(listener = %self.listener, "TLS session ticket keys reloaded");
                }
                *problem = None;
            }
            Err(message) => {
                outcome.failing += 1;
                if report && problem.as_deref() != Some(message.as_str()) {
                    warn!(listener = %self.listener, problem = %message, "TLS session ticket key file refused: the keys in force stay");
                    *problem = Some(message);
                }
            }
        }
    }

    /// Why the session ticket key file is refused, if it is.
    pub fn ticket_problem(&self) -> Option<String> {
        self.ticket_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refuse(&self, slot: &Slot, message: String, content: Vec<u8>, now: f64) {
        let mut state = lock(&slot.state);
        if state.problem.as_ref().is_some_and(|p| p.message == message) {
            return;
        }
        warn!(
            listener = %self.listener,
            cert = %slot.cert.display(),
            key = %slot.key.display(),
            problem = %message,
            "TLS certificate files refused: the last good certificate keeps serving"
        );
        self.refusals.fetch_add(1, Ordering::Relaxed);
        state.problem = Some(Problem {
            message,
            since: now,
            content,
        });
    }

    /// Logs a warning for each certificate served that expires within
    /// `EXPIRY_WARNING_SECONDS`, at most once a day per certificate.
    pub fn warn_expiry(&self, now: f64) {
        let now_secs = now as i64;
        for slot in &self.slots {
            let current = slot.current.load();
            let left = current.facts.not_after - now_secs;
            if left > EXPIRY_WARNING_SECONDS {
                continue;
            }
            let mut state = lock(&slot.state);
            if state.warned_at.is_some_and(|at| now_secs - at < 24 * 3600) {
                continue;
            }
            state.warned_at = Some(now_secs);
            warn!(
                listener = %self.listener,
                cert = %slot.cert.display(),
                expires = current.facts.not_after,
                days_left = left / 86_400,
                "{}",
                expiry_text(left)
            );
        }
    }

    pub fn status(&self) -> Vec<CertStatus> {
        self.slots
            .iter()
            .map(|slot| {
                let current = slot.current.load();
                let state = lock(&slot.state);
                CertStatus {
                    cert: slot.cert.display().to_string(),
                    key: slot.key.display().to_string(),
                    names: current.names.clone(),
                    subject: current.facts.subject.clone(),
                    serial: current.facts.serial.clone(),
                    expires_at: current.facts.not_after,
                    rotated_at: state.rotated_at,
                    problem: state.problem.as_ref().map(|p| p.message.clone()),
                    problem_since: state.problem.as_ref().map(|p| p.since),
                }
            })
            .collect()
    }

    /// Pairs (and client CA bundles / CRLs) swapped in by the watch, and those on disk
    /// refused (each content once).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.rotations.load(Ordering::Relaxed),
            self.refusals.load(Ordering::Relaxed),
        )
    }
}

impl Drop for CertStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("listener", &self.listener)
            .field("pairs", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        let candidates = table.names.select(hello.server_name());
        pick(&table.certs, candidates, hello.signature_schemes())
    }
}

/// An expired certificate is refused: the one it would replace is better or no worse.
fn usable(pair: LoadedCert, now: f64) -> Result<LoadedCert, String> {
    if pair.facts.not_after <= now as i64 {
        return Err(format!(
            "the certificate expired at {} (Unix seconds)",
            pair.facts.not_after
        ));
    }
    Ok(pair)
}

fn table_of(slots: &[Slot], default: usize) -> Table {
    let loaded: Vec<Arc<LoadedCert>> = slots.iter().map(|s| s.current.load_full()).collect();
    Table {
        certs: loaded.iter().map(|c| Arc::clone(&c.key)).collect(),
        names: NameIndex::new(loaded.iter().map(|c| c.names.as_slice()), default),
    }
}

fn lock(state: &Mutex<SlotState>) -> MutexGuard<'_, SlotState> {
    // A panic while holding it left plain data: keep using it.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
