//! Client certificates (mutual TLS): the verifier a listener's `tls.client_auth` builds (CA
//! bundle, optional CRL, required or optional), what a verified client's certificate tells
//! the backend and the router (`ClientCert`), and why a handshake failed (`failure_reason`,
//! the label of `sluice_tls_handshake_failures_total`).
//!
//! The header passed to the backend follows Envoy's `x-forwarded-client-cert` (XFCC):
//! `Hash=<sha256 of the DER, hex>;Subject="<RFC 4514>";URI=<uri SAN>;DNS=<dns SAN>...`, one
//! element (sluice is the first proxy to see the certificate). Backends written for Envoy or
//! Istio read it as is.

use super::cert::{San, facts};
use http::HeaderValue;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use std::path::Path;
use std::sync::Arc;

/// The verifier for `ca` (PEM bundle) and `crl` (PEM CRLs); `required`: a client without a
/// certificate fails the handshake, else it is served without one. Also returns the bytes of
/// both files (CA first), so that a reload or the watch can tell new content from old.
pub fn verifier(
    ca: &Path,
    crl: Option<&Path>,
    required: bool,
) -> Result<(Arc<dyn ClientCertVerifier>, Vec<u8>), String> {
    let files = read_files(ca, crl)?;
    let verifier = build(&files, required)?;
    Ok((verifier, files.content()))
}

/// The CA bundle and the CRL file as read, with their paths (for messages).
pub struct AuthFiles<'a> {
    pub ca: &'a Path,
    pub ca_bytes: Vec<u8>,
    pub crl: Option<(&'a Path, Vec<u8>)>,
}

impl AuthFiles<'_> {
    /// Both files' bytes, CA first.
    pub fn content(&self) -> Vec<u8> {
        let mut content = self.ca_bytes.clone();
        if let Some((_, bytes)) = &self.crl {
            content.extend_from_slice(bytes);
        }
        content
    }
}

/// Reads the CA bundle and the CRL (the message names the file that could not be read).
pub fn read_files<'a>(ca: &'a Path, crl: Option<&'a Path>) -> Result<AuthFiles<'a>, String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    Ok(AuthFiles {
        ca,
        ca_bytes: read(ca)?,
        crl: match crl {
            Some(path) => Some((path, read(path)?)),
            None => None,
        },
    })
}

/// Parses the files and builds the verifier (the message names the file at fault).
pub fn build(files: &AuthFiles<'_>, required: bool) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let ca = files.ca;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&files.ca_bytes) {
        let cert = cert.map_err(|e| format!("{}: bad PEM: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a CA certificate: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CERTIFICATE block found", ca.display()));
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider());
    if let Some((crl, bytes)) = &files.crl {
        let list = CertificateRevocationListDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: bad PEM: {e}", crl.display()))?;
        if list.is_empty() {
            return Err(format!("{}: no X509 CRL block found", crl.display()));
        }
        // Only the leaf is checked: a CRL file usually comes from the issuing CA alone, and
        // an intermediate without a CRL would otherwise fail every client.
        builder = builder
            .with_crls(list)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    if !required {
        builder = builder.allow_unauthenticated();
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the client certificate verifier: {e}"))
}

/// A verified client certificate, read once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// RFC 4514 (`CN=client,O=Example`).
    pub subject: String,
    pub sans: Vec<San>,
    /// The `x-forwarded-client-cert` value.
    pub header: HeaderValue,
}

impl ClientCert {
    /// From the leaf the client presented (already verified by rustls).
    pub fn from_leaf(leaf: &CertificateDer<'_>) -> Option<ClientCert> {
        let facts = facts(leaf).ok()?;
        let hash = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
        let header = xfcc(hash.as_ref(), &facts.subject, &facts.sans);
        Some(ClientCert {
            subject: facts.subject,
            sans: facts.sans,
            header: HeaderValue::from_str(&header).ok()?,
        })
    }

    /// Whether some SAN has exactly this value (a DNS name compared without case).
    pub fn has_san(&self, value: &str) -> bool {
        self.sans.iter().any(|san| match san {
            San::Dns(name) => name.eq_ignore_ascii_case(value),
            other => other.value() == value,
        })
    }
}

/// Envoy's XFCC element: `Hash`, `Subject` (quoted), each `URI` and each `DNS`. Values with
/// `,`, `;`, `=` or `"` are quoted with `"` escaped, as Envoy does.
fn xfcc(sha256: &[u8], subject: &str, sans: &[San]) -> String {
    let mut out = String::from("Hash=");
    for byte in sha256 {
        out.push_str(&format!("{byte:02x}"));
    }
    out.push_str(";Subject=");
    out.push_str(&quoted(subject, true));
    for san in sans {
        let (key, value) = match san {
            San::Uri(v) => ("URI", v),
            San::Dns(v) => ("DNS", v),
            _ => continue,
        };
        out.push(';');
        out.push_str(key);
        out.push('=');
        out.push_str(&quoted(value, false));
    }
    // A header value is visible ASCII: anything else (a UTF-8 subject) is escaped.
    out.chars()
        .flat_map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                vec![c]
            } else {
                c.escape_unicode().collect()
            }
        })
        .collect()
}

fn quoted(value: &str, always: bool) -> String {
    if !always && !value.contains([',', ';', '=', '"']) {
        return value.to_owned();
    }
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The reason label of a failed handshake, from the error tokio-rustls returned.
pub fn failure_reason(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return match error.kind() {
            std::io::ErrorKind::UnexpectedEof => "eof",
            _ => "io",
        };
    };
    match tls {
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidCertificate(CertificateError::Revoked) => "client_certificate_revoked",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "client_certificate_expired",
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "client_certificate_unknown_ca"
        }
        Error::InvalidCertificate(_) => "client_certificate_invalid",
        Error::NoApplicationProtocol => "no_alpn",
        Error::PeerIncompatible(_) => "incompatible",
        Error::AlertReceived(_) => "client_alert",
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::PeerMisbehaved(_) => "protocol",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_is_envoys_format() {
        let sans = [
            San::Uri("spiffe://example.com/ns/app".into()),
            San::Dns("a.example.com".into()),
            San::Email("x@example.com".into()),
        ];
        assert_eq!(
            xfcc(&[0xab, 0x01], "CN=client,O=Example\\, Inc", &sans),
            "Hash=ab01;Subject=\"CN=client,O=Example\\\\, Inc\";URI=spiffe://example.com/ns/app;DNS=a.example.com"
        );
        assert_eq!(xfcc(&[], "CN=é", &[]), "Hash=;Subject=\"CN=\\u{e9}\"");
    }

    #[test]
    fn san_match_is_exact_and_dns_ignores_case() {
        let cert = ClientCert {
            subject: String::new(),
            sans: vec![
                San::Dns("A.example.com".into()),
                San::Uri("spiffe://x/y".into()),
            ],
            header: HeaderValue::from_static(""),
        };
        assert!(cert.has_san("a.example.com"));
        assert!(cert.has_san("spiffe://x/y"));
        assert!(!cert.has_san("spiffe://x"));
    }
}
