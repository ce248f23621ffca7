//! The upstream side of a pool: which HTTP version it speaks to its backends (`protocol:`)
//! and TLS towards them (`tls:`), as parsed from YAML and validated.
//!
//! Validation reads the PEM files named here (CA bundle, client certificate and key) so that
//! `sluice check` and a reload refuse a missing or unreadable file with its `file:line:col`,
//! instead of every backend connection failing later. The loaded certificates are part of the
//! validated config, so a reload that changes a file's contents rebuilds the pool's client.
//! Building the rustls configuration from this is `crate::upstream::tls`'s job.

use super::Validator;
use super::file::Text;
use crate::error::ConfigError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::PathBuf;
use std::sync::Arc;

/// `tls:` on a pool. All fields are optional; `tls: {}` means verified TLS with the bundled
/// public roots.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub verify: Option<bool>,
    pub ca: Option<Text>,
    pub sni: Option<Text>,
    pub cert: Option<Text>,
    pub key: Option<Text>,
}

/// The HTTP version a pool speaks to its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2: prior knowledge on plaintext, negotiated by ALPN over TLS.
    H2,
}

impl UpstreamProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// `false` accepts any certificate (insecure: for tests and self-signed lab backends).
    pub verify: bool,
    /// Trust only these roots; `None`: the bundled public roots (webpki-roots).
    pub ca: Option<PemCertificates>,
    /// The name sent in SNI and checked against the certificate. `None`: an IP backend is
    /// checked against the IP address in the certificate, and no SNI is sent (RFC 6066 forbids
    /// IP literals in SNI).
    pub sni: Option<ServerName<'static>>,
    /// A client certificate for backends that require one (mutual TLS).
    pub client_auth: Option<ClientIdentity>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PemCertificates {
    pub path: PathBuf,
    pub certificates: Arc<Vec<CertificateDer<'static>>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientIdentity {
    pub chain: PemCertificates,
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl Validator<'_> {
    pub(super) fn upstream_protocol(
        &self,
        path: &str,
        raw: Option<&Text>,
    ) -> Result<UpstreamProtocol, ConfigError> {
        match raw.map(|t| (t, t.value.trim())) {
            None | Some((_, "http1" | "http/1.1")) => Ok(UpstreamProtocol::Http1),
            Some((_, "h2" | "http2")) => Ok(UpstreamProtocol::H2),
            Some((text, other)) => Err(self.error_at(
                text.referenced,
                format!("{path}.protocol"),
                format!("unknown upstream protocol {other:?}: use http1 or h2"),
            )),
        }
    }

    pub(super) fn upstream_tls(
        &self,
        path: &str,
        raw: Option<&Spanned<RawUpstreamTls>>,
    ) -> Result<Option<UpstreamTls>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let path = format!("{path}.tls");
        let tls = &raw.value;
        let ca = match &tls.ca {
            None => None,
            Some(file) => {
                let loaded = self.pem_certificates(file, &format!("{path}.ca"))?;
                // Each must be usable as a trust anchor, or verification fails on every connect.
                let mut roots = rustls::RootCertStore::empty();
                for certificate in loaded.certificates.iter() {
                    roots.add(certificate.clone()).map_err(|error| {
                        self.error_at(
                            file.referenced,
                            format!("{path}.ca"),
                            format!("{}: not a usable CA certificate: {error}", file.value),
                        )
                    })?;
                }
                Some(loaded)
            }
        };
        let sni = match &tls.sni {
            None => None,
            Some(text) => Some(ServerName::try_from(text.value.trim().to_owned()).map_err(
                |_| {
                    self.error_at(
                        text.referenced,
                        format!("{path}.sni"),
                        format!("invalid server name {:?}", text.value),
                    )
                },
            )?),
        };
        let client_auth = match (&tls.cert, &tls.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(self.client_identity(&path, cert, key)?),
            (Some(one), None) | (None, Some(one)) => {
                return Err(self.error_at(
                    one.referenced,
                    path,
                    "cert and key go together: give both for a client certificate, or neither"
                        .into(),
                ));
            }
        };
        Ok(Some(UpstreamTls {
            verify: tls.verify.unwrap_or(true),
            ca,
            sni,
            client_auth,
        }))
    }

    fn pem_certificates(&self, file: &Text, path: &str) -> Result<PemCertificates, ConfigError> {
        let fail = |message: String| self.error_at(file.referenced, path.to_owned(), message);
        let name = file.value.trim();
        let certificates = CertificateDer::pem_file_iter(name)
            .and_then(|all| all.collect::<Result<Vec<_>, _>>())
            .map_err(|error| fail(format!("{name}: {error}")))?;
        if certificates.is_empty() {
            return Err(fail(format!("{name}: no PEM certificate in the file")));
        }
        Ok(PemCertificates {
            path: PathBuf::from(name),
            certificates: Arc::new(certificates),
        })
    }

    fn client_identity(
        &self,
        path: &str,
        cert: &Text,
        key: &Text,
    ) -> Result<ClientIdentity, ConfigError> {
        let chain = self.pem_certificates(cert, &format!("{path}.cert"))?;
        let key_name = key.value.trim();
        let key_error =
            |message: String| self.error_at(key.referenced, format!("{path}.key"), message);
        let private = PrivateKeyDer::from_pem_file(key_name)
            .map_err(|error| key_error(format!("{key_name}: {error}")))?;
        // Checks the key type is supported and that it belongs to the certificate, so a
        // mismatched pair is a config error rather than a failed handshake per connection.
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(
            chain.certificates.as_ref().clone(),
            private.clone_key(),
            &provider,
        )
        .map_err(|error| {
            let cert_name = cert.value.trim();
            key_error(format!("{key_name} does not fit {cert_name}: {error}"))
        })?;
        Ok(ClientIdentity {
            chain,
            key: Arc::new(private),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, UpstreamProtocol};

    fn parse(pool: &str, listener_protocol: &str) -> Result<Config, String> {
        let text = format!(
            "listeners:\n  web: {{bind: '127.0.0.1:0', protocol: {listener_protocol}, pool: app}}\npools:\n  app:\n    backends: [127.0.0.1:9001]\n{pool}"
        );
        Config::parse(&text, "t.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn protocol_and_tls_defaults() {
        let config = parse(
            "    protocol: h2\n    tls: {verify: false, sni: api.internal}\n",
            "http",
        )
        .unwrap();
        let pool = &config.pools["app"];
        assert_eq!(pool.protocol, UpstreamProtocol::H2);
        let tls = pool.tls.as_ref().unwrap();
        assert!(!tls.verify && tls.ca.is_none() && tls.client_auth.is_none());
        assert_eq!(
            tls.sni.as_ref().map(|n| n.to_str().into_owned()).as_deref(),
            Some("api.internal")
        );
        let plain = parse("", "http").unwrap();
        assert_eq!(plain.pools["app"].protocol, UpstreamProtocol::Http1);
        assert!(plain.pools["app"].tls.is_none());
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                "    protocol: h3\n",
                "http",
                "t.yaml:6:15: pools.app.protocol: unknown upstream protocol",
            ),
            (
                "    protocol: h2\n",
                "tcp",
                "t.yaml:2:51: listeners.web.pool: pool \"app\" speaks protocol: h2",
            ),
            (
                "    tls: {sni: 'bad name!'}\n",
                "http",
                "pools.app.tls.sni: invalid server name",
            ),
            (
                "    tls: {cert: /nonexistent.pem}\n",
                "http",
                "pools.app.tls: cert and key go together",
            ),
            (
                "    tls: {cert: /nonexistent.pem, key: /k.pem}\n",
                "http",
                "pools.app.tls.cert: /nonexistent.pem:",
            ),
            ("    tls: {verify: maybe}\n", "http", "pools.app.tls.verify"),
        ];
        for (pool, listener, expected) in cases {
            let error = parse(pool, listener).unwrap_err();
            assert!(error.contains(expected), "{pool:?}: {error}");
        }
    }
}
