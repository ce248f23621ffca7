//! A TLS listener's client certificate verifier as runtime state: the CA bundle and CRL of
//! `tls.client_auth` as last loaded, swapped without a reload when the files change.
//!
//! Decision: the CA bundle and the CRL rotate like the certificates (`store.rs`): the
//! certificate store's watch looks at these files too, and a new CA or CRL applies to new
//! handshakes once both files parse into a verifier. A file that does not keeps the verifier
//! in force and is reported once per content, in the log, `/status` (`client_auth_problem`)
//! and `sluice_tls_certificate_rotations_total{result="refused"}`. A revoked client is thus
//! refused from its next handshake: rustls does not verify again on resumption, so the
//! sessions made under other files are not resumed (`stamp`, `trust.rs`).
//!
//! `ServerConfig` holds one verifier for its life, so this one delegates to the verifier in
//! force through an `ArcSwap`: a handshake loads it once and uses that one throughout.

use super::client::{build, read_files};
use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tracing::{info, warn};

/// Hint lists kept for the handshakes' `certificate_authorities` (see `root_hint_subjects`).
const HINT_LISTS: usize = 16;

type Verifier = Arc<dyn ClientCertVerifier>;

pub struct ClientAuthStore {
    listener: String,
    ca: PathBuf,
    crl: Option<PathBuf>,
    required: bool,
    current: ArcSwap<Verifier>,
    state: Mutex<State>,
    /// rustls borrows the CA names it sends from the verifier for as long as the verifier
    /// lives (`&self`), so a list handed out must never be dropped while this lives. Each
    /// rotation fills the next cell; `hint` indexes the one in force. After `HINT_LISTS`
    /// rotations (years of monthly CA changes) no names are sent: clients then offer any
    /// certificate they have, which verification still checks (rustls 0.24 returns an `Arc`).
    hints: [OnceLock<Vec<DistinguishedName>>; HINT_LISTS],
    hint: AtomicUsize,
    /// The digest of the files in force (`trust::digest`), stamped on every session.
    stamp: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The bytes of the files in force (CA, then CRL).
    content: Vec<u8>,
    /// Why the files on disk are not in force, and their content (reported once).
    problem: Option<(String, Vec<u8>)>,
}

/// What one look at the files found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// The files are what is in force.
    Unchanged,
    Swapped,
    /// Not (yet) a good pair of files; `reported`: refused and logged by this look.
    Failing {
        reported: bool,
    },
}

impl ClientAuthStore {
    /// Around the verifier the config built from these files (`content`: their bytes).
    pub fn new(
        listener: &str,
        ca: &Path,
        crl: Option<&Path>,
        required: bool,
        verifier: Verifier,
        content: Vec<u8>,
    ) -> Arc<ClientAuthStore> {
        let hints: [OnceLock<Vec<DistinguishedName>>; HINT_LISTS] = Default::default();
        let _ = hints[0].set(verifier.root_hint_subjects().to_vec());
        let stamp = AtomicU64::new(super::trust::digest(&content, required));
        Arc::new(ClientAuthStore {
            listener: listener.to_owned(),
            ca: ca.to_path_buf(),
            crl: crl.map(Path::to_path_buf),
            required,
            current: ArcSwap::from_pointee(verifier),
            state: Mutex::new(State {
                content,
                ..State::default()
            }),
            hints,
            hint: AtomicUsize::new(0),
            stamp,
        })
    }

    /// The CA bundle and the CRL file, for the watch.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.ca.as_path()).chain(self.crl.as_deref())
    }

    /// Reads the files again and swaps in a verifier built from them when they changed and
    /// are good. `report`: record and log files that are not good (else they only count as
    /// failing: a bundle being written is given a moment to complete).
    pub fn recheck(&self, report: bool) -> Look {
        let read = read_files(&self.ca, self.crl.as_deref());
        let content = read.as_ref().map(|files| files.content()).ok();
        {
            let mut state = self.lock();
            if content.as_ref() == Some(&state.content) {
                // Back to what is in force (a bad write undone): nothing is wrong any more.
                state.problem = None;
                return Look::Unchanged;
            }
            if let (Some(content), Some((_, refused))) = (&content, &state.problem)
                && content == refused
            {
                return Look::Failing { reported: false };
            }
        }
        match read.and_then(|files| build(&files, self.required)) {
            Ok(verifier) => {
                self.publish_hints(&verifier);
                self.current.store(Arc::new(verifier));
                let content = content.unwrap_or_default();
                // After the verifier: a session verified by the new one and stamped with the
                // old stamp is only refused later, never the other way round.
                (self.stamp).store(
                    super::trust::digest(&content, self.required),
                    Ordering::Release,
                );
                let mut state = self.lock();
                state.content = content;
                state.problem = None;
                info!(
                    listener = %self.listener,
                    ca = %self.ca.display(),
                    crl = ?self.crl.as_ref().map(|c| c.display().to_string()),
                    "TLS client CA bundle / CRL reloaded: new handshakes verify against it"
                );
                Look::Swapped
            }
            Err(message) => {
                if !report {
                    return Look::Failing { reported: false };
                }
                let mut state = self.lock();
                if state.problem.as_ref().is_some_and(|(m, _)| *m == message) {
                    return Look::Failing { reported: false };
                }
                warn!(
                    listener = %self.listener,
                    ca = %self.ca.display(),
                    problem = %message,
                    "TLS client CA bundle / CRL refused: the one in force keeps verifying"
                );
                state.problem = Some((message, content.unwrap_or_default()));
                Look::Failing { reported: true }
            }
        }
    }

    /// The digest of the files in force: sessions stamped with another are not resumed.
    pub fn stamp(&self) -> u64 {
        self.stamp.load(Ordering::Acquire)
    }

    /// Why the files on disk are refused, if they are.
    pub fn problem(&self) -> Option<String> {
        self.lock().problem.as_ref().map(|(m, _)| m.clone())
    }

    fn publish_hints(&self, verifier: &Verifier) {
        let next = self.hint.load(Ordering::Acquire).saturating_add(1);
        let published = (self.hints.get(next))
            .is_some_and(|cell| cell.set(verifier.root_hint_subjects().to_vec()).is_ok());
        // Past the last cell: `usize::MAX` indexes none, and no names are sent.
        let index = if published { next } else { usize::MAX };
        self.hint.store(index, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it left plain data: keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for ClientAuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuthStore")
            .field("listener", &self.listener)
            .field("ca", &self.ca)
            .field("crl", &self.crl)
            .finish_non_exhaustive()
    }
}

/// Every call goes to the verifier in force; whether to ask for a certificate and whether it
/// is mandatory come from `mode`, which only a reload changes.
impl ClientCertVerifier for ClientAuthStore {
    fn offer_client_auth(&self) -> bool {
        self.current.load().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current.load().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        let index = self.hint.load(Ordering::Acquire);
        (self.hints.get(index))
            .and_then(OnceLock::get)
            .map_or(&[], Vec::as_slice)
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.current.load().requires_raw_public_keys()
    }
}
