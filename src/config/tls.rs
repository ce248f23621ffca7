//! `listeners.NAME.tls`: TLS termination settings, from the YAML mirror to the validated
//! `ListenerTls` that carries a ready rustls `ServerConfig`.
//!
//! Certificates are read here, at validation time (through `crate::tls`), so `sluice check`
//! and a reload refuse a missing file, a bad PEM or a key that does not fit its certificate
//! with the usual file:line:col and field path, and the running snapshot keeps serving the old
//! certificates. The `ServerConfig` lives in the listener's config inside the snapshot; its
//! certificates come from the listener's `CertStore`, which the store's watch keeps current
//! between reloads (`crate::tls::store`). Session resumption (`session_cache`,
//! `session_tickets`, `ticket_rotation`, `ticket_keys`) is set here too; mutual TLS is in
//! `tls_auth.rs`.

use super::Validator;
use super::file::Text;
pub use super::tls_auth::{
    ClientAuth, ClientCertMatch, DEFAULT_CLIENT_CERT_HEADER, RawClientAuth, RawClientCertMatch,
};
use crate::error::ConfigError;
use crate::tls::store::CertStore;
use crate::tls::{self, LoadedCert, PairField, TlsVersion};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub certificates: Option<Spanned<Vec<Spanned<RawCertificate>>>>,
    /// A `cert` path of the list, or a DNS name one of the certificates covers.
    pub default_certificate: Option<Text>,
    /// `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<Text>,
    /// Offered ALPN protocols, preferred first: `h2`, `http/1.1` (default both).
    pub alpn: Option<Spanned<Vec<String>>>,
    /// Mutual TLS: clients present a certificate signed by `ca`.
    pub client_auth: Option<Spanned<RawClientAuth>>,
    /// Sessions kept for TLS 1.2 session-ID resumption (default 20000; 0: none).
    pub session_cache: Option<Spanned<u64>>,
    /// Stateless resumption tickets, TLS 1.3 and 1.2 (default true).
    pub session_tickets: Option<Spanned<bool>>,
    /// How long a random ticket key encrypts (default 6h; it decrypts for as long again).
    pub ticket_rotation: Option<Text>,
    /// Ticket keys from a file every instance shares (watched like certificates).
    pub ticket_keys: Option<Text>,
}

/// Session resumption settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sessions {
    pub cache: usize,
    pub tickets: bool,
    pub ticket_rotation: std::time::Duration,
    pub ticket_keys: Option<PathBuf>,
}

/// HAProxy's default cache size; nginx's is off, rustls' 256 (too few for an edge).
pub const DEFAULT_SESSION_CACHE: usize = 20_000;
/// rustls' own rotation period: a ticket is accepted for twice as long.
pub const DEFAULT_TICKET_ROTATION: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Text,
    pub key: Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A TLS listener's settings and the `ServerConfig` built from them.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub certificates: Vec<CertificatePaths>,
    pub default_certificate: usize,
    pub min_version: TlsVersion,
    pub alpn: Vec<String>,
    pub client_auth: Option<ClientAuth>,
    pub sessions: Sessions,
    /// The session cache and ticketer in the `ServerConfig`, to carry across reloads.
    resumption: (
        Option<Arc<tls::sessions::SessionCache>>,
        Option<Arc<tls::tickets::Ticketer>>,
    ),
    pub server_config: Arc<rustls::ServerConfig>,
    /// The certificates as served: rotated by their watch without a reload.
    pub store: Arc<CertStore>,
    /// The bytes of every file, so a reload that rewrote a file in place counts as a change.
    content: Vec<Vec<u8>>,
}

impl ListenerTls {
    /// Keeps `old`'s sessions and ticket keys (the same listener before a reload) when the
    /// resumption settings did not change, so returning clients still resume. Called while a
    /// reload is prepared, on the new config that is not serving yet.
    pub fn carry_sessions(&self, old: &ListenerTls) {
        if self.sessions != old.sessions {
            return;
        }
        if let (Some(new), Some(old)) = (&self.resumption.0, &old.resumption.0) {
            new.carry(old);
        }
        if let (Some(new), Some(old)) = (&self.resumption.1, &old.resumption.1) {
            new.carry(old);
        }
    }
}

/// Equal when the settings and the files' contents are: the `ServerConfig` is derived.
impl PartialEq for ListenerTls {
    fn eq(&self, other: &ListenerTls) -> bool {
        self.certificates == other.certificates
            && self.default_certificate == other.default_certificate
            && self.min_version == other.min_version
            && self.alpn == other.alpn
            && self.client_auth == other.client_auth
            && self.sessions == other.sessions
            && self.content == other.content
    }
}

const ALPN_KNOWN: [&str; 2] = ["h2", "http/1.1"];

impl Validator<'_> {
    pub(super) fn tls(
        &self,
        path: &str,
        raw: &Spanned<RawTls>,
    ) -> Result<ListenerTls, ConfigError> {
        let path = format!("{path}.tls");
        let Some(list) = raw
            .value
            .certificates
            .as_ref()
            .filter(|l| !l.value.is_empty())
        else {
            return Err(self.error_at(
                raw.referenced,
                format!("{path}.certificates"),
                "missing: list at least one {cert, key} pair".into(),
            ));
        };
        let mut certificates = Vec::new();
        let mut loaded: Vec<LoadedCert> = Vec::new();
        for (index, entry) in list.value.iter().enumerate() {
            let here = format!("{path}.certificates[{index}]");
            let pair = &entry.value;
            let cert = PathBuf::from(pair.cert.value.trim());
            let key = PathBuf::from(pair.key.value.trim());
            let certificate = tls::load_pair(&cert, &key).map_err(|error| {
                let (field, text) = match error.field {
                    PairField::Cert => ("cert", &pair.cert),
                    PairField::Key => ("key", &pair.key),
                };
                self.error_at(text.referenced, format!("{here}.{field}"), error.message)
            })?;
            loaded.push(certificate);
            certificates.push(CertificatePaths { cert, key });
        }
        let default_certificate = match &raw.value.default_certificate {
            None => 0,
            Some(text) => {
                let wanted = text.value.trim();
                let by_path = certificates
                    .iter()
                    .position(|c| c.cert == std::path::Path::new(wanted));
                let names =
                    tls::resolve::NameIndex::new(loaded.iter().map(|c| c.names.as_slice()), 0);
                by_path.or_else(|| names.covers(wanted)).ok_or_else(|| {
                    self.error_at(
                        text.referenced,
                        format!("{path}.default_certificate"),
                        format!(
                            "{wanted:?} is neither a cert path of this list nor a name one of them covers"
                        ),
                    )
                })?
            }
        };
        let min_version = match raw.value.min_version.as_ref() {
            None => TlsVersion::V1_2,
            Some(text) => match text.value.trim() {
                "1.2" => TlsVersion::V1_2,
                "1.3" => TlsVersion::V1_3,
                other => {
                    return Err(self.error_at(
                        text.referenced,
                        format!("{path}.min_version"),
                        format!("unsupported TLS version {other:?}: use \"1.2\" or \"1.3\""),
                    ));
                }
            },
        };
        let alpn = match raw.value.alpn.as_ref() {
            None => ALPN_KNOWN.iter().map(|p| (*p).to_owned()).collect(),
            Some(list) => {
                for protocol in &list.value {
                    if !ALPN_KNOWN.contains(&protocol.as_str()) {
                        return Err(self.error_at(
                            list.referenced,
                            format!("{path}.alpn"),
                            format!("unknown protocol {protocol:?}: use h2 and/or http/1.1"),
                        ));
                    }
                }
                list.value.clone()
            }
        };
        let mut content: Vec<Vec<u8>> = loaded.iter().map(|c| c.content.clone()).collect();
        let (client_auth, verifier) = match &raw.value.client_auth {
            None => (None, None),
            Some(raw) => {
                let (auth, verifier, bytes) = self.client_auth(&path, raw)?;
                content.push(bytes.clone());
                (Some(auth), Some((verifier, bytes)))
            }
        };
        let (sessions, ticketer) = self.sessions(&path, raw)?;
        let listener = path
            .strip_prefix("listeners.")
            .and_then(|p| p.strip_suffix(".tls"))
            .unwrap_or(&path);
        // The verifier in the `ServerConfig` follows its files as the certificates do.
        let verifier = client_auth
            .as_ref()
            .zip(verifier)
            .map(|(auth, (verifier, bytes))| {
                tls::client_auth::ClientAuthStore::new(
                    listener,
                    &auth.ca,
                    auth.crl.as_deref(),
                    auth.required,
                    verifier,
                    bytes,
                )
            });
        let store = CertStore::new(
            listener,
            (certificates.iter())
                .map(|c| (c.cert.clone(), c.key.clone()))
                .collect(),
            loaded,
            default_certificate,
            ticketer.clone().filter(|t| t.file().is_some()),
            verifier.clone(),
        );
        let cache = (sessions.cache > 0).then(|| tls::sessions::SessionCache::new(sessions.cache));
        let resumption = (cache.clone(), ticketer.clone());
        let server_config = tls::server_config(
            Arc::clone(&store),
            verifier,
            min_version,
            &alpn,
            cache,
            ticketer,
        )
        .map_err(|message| self.error_at(raw.referenced, path.clone(), message))?;
        Ok(ListenerTls {
            certificates,
            default_certificate,
            min_version,
            alpn,
            client_auth,
            sessions,
            resumption,
            server_config,
            store,
            content,
        })
    }
}

impl Validator<'_> {
    fn sessions(
        &self,
        path: &str,
        spanned: &Spanned<RawTls>,
    ) -> Result<(Sessions, Option<Arc<tls::tickets::Ticketer>>), ConfigError> {
        let raw = &spanned.value;
        let cache = raw
            .session_cache
            .as_ref()
            .map_or(DEFAULT_SESSION_CACHE, |n| n.value as usize);
        let tickets = raw.session_tickets.as_ref().is_none_or(|t| t.value);
        let ticket_rotation = match &raw.ticket_rotation {
            None => DEFAULT_TICKET_ROTATION,
            Some(_) => self.duration(
                raw.ticket_rotation.as_ref(),
                &format!("{path}.ticket_rotation"),
                std::time::Duration::from_secs(60),
            )?,
        };
        let ticket_keys = raw
            .ticket_keys
            .as_ref()
            .map(|t| PathBuf::from(t.value.trim()));
        for (given, field) in [
            (raw.ticket_keys.as_ref(), "ticket_keys"),
            (raw.ticket_rotation.as_ref(), "ticket_rotation"),
        ] {
            if let Some(text) = given
                && !tickets
            {
                return Err(self.error_at(
                    text.referenced,
                    format!("{path}.{field}"),
                    "session_tickets is false: drop this or turn tickets on".into(),
                ));
            }
        }
        if let (Some(text), Some(_)) = (&raw.ticket_rotation, &raw.ticket_keys) {
            return Err(self.error_at(
                text.referenced,
                format!("{path}.ticket_rotation"),
                "the keys come from ticket_keys: the operator rotates them in the file".into(),
            ));
        }
        let ticketer = match (&ticket_keys, tickets) {
            (_, false) => None,
            (Some(file), true) => Some(
                tls::tickets::Ticketer::from_file(file, DEFAULT_TICKET_ROTATION * 2).map_err(
                    |message| {
                        let at = raw
                            .ticket_keys
                            .as_ref()
                            .map_or(spanned.referenced, |t| t.referenced);
                        self.error_at(at, format!("{path}.ticket_keys"), message)
                    },
                )?,
            ),
            (None, true) => Some(
                tls::tickets::Ticketer::rotating(ticket_rotation)
                    .map_err(|m| self.error_at(spanned.referenced, path.to_owned(), m))?,
            ),
        };
        Ok((
            Sessions {
                cache,
                tickets,
                ticket_rotation,
                ticket_keys,
            },
            ticketer,
        ))
    }
}
