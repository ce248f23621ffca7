//! The rustls client configuration of a pool with `tls:`: trust roots (the pool's `ca:` or the
//! bundled webpki roots), optional client certificate, ALPN, and which name each backend is
//! checked against.
//!
//! Always the ring provider, passed explicitly: if another provider is ever linked in,
//! rustls's process-wide default would be ambiguous and its builders would panic.

use crate::config::{BackendAddress, UpstreamProtocol, UpstreamTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, IpAddr, ServerName, UnixTime};
use std::io;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// What to offer in ALPN on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// The pool's HTTP version: `h2` or `http/1.1`.
    Http,
    /// Nothing: TCP forwarding carries an unknown protocol, and health checks of TCP kind.
    None,
}

/// Built once per pool client; connections share it.
pub struct TlsSetup {
    http: TlsConnector,
    raw: TlsConnector,
    sni: Option<ServerName<'static>>,
    verify: bool,
}

impl TlsSetup {
    pub fn new(tls: &UpstreamTls, protocol: UpstreamProtocol) -> Result<TlsSetup, rustls::Error> {
        let http_alpn: &[u8] = match protocol {
            UpstreamProtocol::H2 => b"h2",
            UpstreamProtocol::Http1 => b"http/1.1",
        };
        let connector = |alpn: &[&[u8]]| -> Result<TlsConnector, rustls::Error> {
            let mut config = client_config(tls)?;
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsConnector::from(Arc::new(config)))
        };
        Ok(TlsSetup {
            http: connector(&[http_alpn])?,
            raw: connector(&[])?,
            sni: tls.sni.clone(),
            verify: tls.verify,
        })
    }

    pub fn connector(&self, alpn: Alpn) -> TlsConnector {
        match alpn {
            Alpn::Http => self.http.clone(),
            Alpn::None => self.raw.clone(),
        }
    }

    /// The configured `sni`, else the backend's IP (checked against the certificate's IP
    /// SANs; rustls sends no SNI for an IP, as RFC 6066 requires).
    pub fn server_name(&self, address: &BackendAddress) -> io::Result<ServerName<'static>> {
        if let Some(name) = &self.sni {
            return Ok(name.clone());
        }
        match address {
            BackendAddress::Inet(inet) => Ok(ServerName::IpAddress(IpAddr::from(inet.ip()))),
            // Unchecked anyway; an IP name keeps SNI out of the handshake.
            BackendAddress::Unix(_) if !self.verify => Ok(ServerName::IpAddress(IpAddr::from(
                std::net::IpAddr::from([127, 0, 0, 1]),
            ))),
            BackendAddress::Unix(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a unix socket backend over verified TLS needs tls.sni",
            )),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    crate::tls::provider()
}

fn client_config(tls: &UpstreamTls) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = if tls.verify {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca {
            Some(ca) => {
                for certificate in ca.certificates.iter() {
                    roots.add(certificate.clone())?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    };
    match &tls.client_auth {
        Some(identity) => builder.with_client_auth_cert(
            identity.chain.certificates.as_ref().clone(),
            identity.key.clone_key(),
        ),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// `verify: false`: any certificate is accepted, for any name. The handshake signatures are
/// still checked, so the session is at least bound to the presented key; this protects
/// against passive eavesdropping only, never against an active attacker.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
