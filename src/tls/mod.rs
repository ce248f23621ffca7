//! TLS termination material: reading PEM certificate chains and keys, checking that each key
//! matches its certificate, and building the rustls `ServerConfig` a TLS listener serves with.
//!
//! Called from config validation (`config::tls`), so a missing file, a bad PEM or a key that
//! does not match is refused like any other bad setting, before anything is bound or swapped.
//! This is the config's one reach into the file system besides the config file itself.
//! Always `provider()` (ring, or aws-lc-rs with that feature), never the process default:
//! with two providers in the graph, `ServerConfig::builder()` would panic at run time.

pub mod cert;
pub mod client;
pub mod client_auth;
pub mod expiry;
pub mod resolve;
pub mod sessions;
pub mod store;
pub mod tickets;
pub mod trust;
mod watch;

pub use cert::{CertFacts, San};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;

/// Which file of a certificate pair a problem is about (for the error's field path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairField {
    Cert,
    Key,
}

/// A certificate that failed to load, with the file it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PairError {
    pub field: PairField,
    pub message: String,
}

/// One certificate chain with its key, and the DNS names it serves.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// SAN DNS names, lowercased; `*.example.com` for wildcards.
    pub names: Vec<String>,
    /// The raw bytes of both files, so a reload can tell new content from old.
    pub content: Vec<u8>,
    /// The leaf's validity, serial and subject.
    pub facts: CertFacts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// The crypto provider of every TLS connection, server and client side: ring, or aws-lc-rs
/// when built with the `aws-lc-rs` feature (benches/loadtest.py compares them).
#[cfg(not(feature = "aws-lc-rs"))]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(feature = "aws-lc-rs")]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM chain (leaf first) and its private key and checks that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<LoadedCert, PairError> {
    let (cert_bytes, key_bytes) = read_pair(cert, key)?;
    parse_pair(cert, key, cert_bytes, key_bytes)
}

/// The bytes of both files of a pair, certificate first.
pub fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), PairError> {
    let read = |field, path: &Path| {
        std::fs::read(path).map_err(|e| PairError {
            field,
            message: format!("cannot read {}: {e}", path.display()),
        })
    };
    Ok((read(PairField::Cert, cert)?, read(PairField::Key, key)?))
}

/// Parses the bytes of a pair (`cert` and `key` name the files in errors) and checks that the
/// key fits the certificate.
pub fn parse_pair(
    cert: &Path,
    key: &Path,
    cert_bytes: Vec<u8>,
    key_bytes: Vec<u8>,
) -> Result<LoadedCert, PairError> {
    let fail = |field, message: String| PairError { field, message };
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(PairField::Cert, format!("{}: bad PEM: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(fail(
            PairField::Cert,
            format!("{}: no CERTIFICATE block found", cert.display()),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        fail(
            PairField::Key,
            format!("{}: no usable private key: {e}", key.display()),
        )
    })?;
    let names = san_names(&chain[0])
        .map_err(|e| fail(PairField::Cert, format!("{}: {e}", cert.display())))?;
    let facts = cert::facts(&chain[0])
        .map_err(|e| fail(PairField::Cert, format!("{}: {e}", cert.display())))?;
    // `from_der` loads the key and compares its public half with the leaf certificate's.
    let certified = CertifiedKey::from_der(chain, private, &provider()).map_err(|e| {
        fail(
            PairField::Key,
            format!("{} does not fit {}: {e}", key.display(), cert.display()),
        )
    })?;
    let mut content = cert_bytes;
    content.extend_from_slice(&key_bytes);
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
        content,
        facts,
    })
}

/// The DNS names of the certificate's subjectAltName extension (what clients check; the
/// subject CN is ignored by browsers and so by us).
fn san_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let parsed = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    Ok(parsed
        .valid_dns_names()
        .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
        .collect())
}

/// Builds the server side of a TLS listener around its certificate store (which the store's
/// watch keeps current without a new `ServerConfig`). Sessions and tickets are stamped with
/// the client-auth trust they were verified under (`trust.rs`).
pub fn server_config(
    store: Arc<store::CertStore>,
    client_auth: Option<Arc<client_auth::ClientAuthStore>>,
    min_version: TlsVersion,
    alpn: &[String],
    session_cache: Option<Arc<sessions::SessionCache>>,
    ticketer: Option<Arc<tickets::Ticketer>>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("cannot build the TLS configuration: {e}"))?;
    let trust = trust::Trust::new(client_auth.clone());
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // Without a cache or tickets nothing can resume: rustls would still encode a session and
    // draw randomness for the tickets it then drops, twice per handshake. Send none.
    if session_cache.is_none() && ticketer.is_none() {
        config.send_tls13_tickets = 0;
    }
    config.session_storage = match session_cache {
        Some(cache) => Arc::new(trust::StampedSessions {
            inner: cache,
            trust: trust.clone(),
        }),
        None => Arc::new(rustls::server::NoServerSessionStorage {}),
    };
    if let Some(ticketer) = ticketer {
        config.ticketer = Arc::new(trust::StampedTickets {
            inner: ticketer,
            trust,
        });
    }
    Ok(Arc::new(config))
}
