//! `tls.client_auth` (mutual TLS) and the routes' `match.client_cert`, from the YAML mirror
//! to validated settings and the rustls client certificate verifier (`crate::tls::client`).
//! Split from `tls.rs`, which owns the rest of a listener's `tls:`.

use super::Validator;
use super::file::Text;
use crate::error::ConfigError;
use crate::tls;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    /// PEM bundle of the CA certificates client certificates must chain to.
    pub ca: Text,
    /// `required` (default) or `optional`.
    pub mode: Option<Text>,
    /// PEM certificate revocation list(s) of the CA.
    pub crl: Option<Text>,
    /// The request header the verified certificate is passed in (default
    /// `x-forwarded-client-cert`); always removed from what the client sent.
    pub header: Option<Text>,
}

/// `tls.client_auth`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub ca: PathBuf,
    pub crl: Option<PathBuf>,
    /// `mode: required`: a client without a certificate fails the handshake.
    pub required: bool,
    pub header: http::HeaderName,
}

/// `match.client_cert` of a route: `{present: true}`, `{present: false}` or `{san: VALUE}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientCertMatch {
    pub present: Option<bool>,
    pub san: Option<String>,
}

/// A route condition on the client certificate: present or absent, and with a
/// subjectAltName of exactly this value (DNS names without case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertMatch {
    pub present: bool,
    pub san: Option<String>,
}

pub const DEFAULT_CLIENT_CERT_HEADER: &str = "x-forwarded-client-cert";

type Verifier = Arc<dyn rustls::server::danger::ClientCertVerifier>;

impl Validator<'_> {
    pub(super) fn client_auth(
        &self,
        path: &str,
        raw: &Spanned<RawClientAuth>,
    ) -> Result<(ClientAuth, Verifier, Vec<u8>), ConfigError> {
        let here = format!("{path}.client_auth");
        let raw = &raw.value;
        let required = match raw.mode.as_ref() {
            None => true,
            Some(text) => match text.value.trim() {
                "required" => true,
                "optional" => false,
                other => {
                    return Err(self.error_at(
                        text.referenced,
                        format!("{here}.mode"),
                        format!("unknown mode {other:?}: use required or optional"),
                    ));
                }
            },
        };
        let header = match raw.header.as_ref() {
            None => http::HeaderName::from_static(DEFAULT_CLIENT_CERT_HEADER),
            Some(text) => {
                http::HeaderName::from_bytes(text.value.trim().as_bytes()).map_err(|_| {
                    self.error_at(
                        text.referenced,
                        format!("{here}.header"),
                        format!("{:?} is not a valid header name", text.value),
                    )
                })?
            }
        };
        let ca = PathBuf::from(raw.ca.value.trim());
        let crl = raw.crl.as_ref().map(|t| PathBuf::from(t.value.trim()));
        let (verifier, bytes) =
            tls::client::verifier(&ca, crl.as_deref(), required).map_err(|message| {
                // Name the file the message is about.
                let (field, at) = match &raw.crl {
                    Some(text)
                        if crl
                            .as_ref()
                            .is_some_and(|c| message.contains(&*c.to_string_lossy())) =>
                    {
                        ("crl", text.referenced)
                    }
                    _ => ("ca", raw.ca.referenced),
                };
                self.error_at(at, format!("{here}.{field}"), message)
            })?;
        Ok((
            ClientAuth {
                ca,
                crl,
                required,
                header,
            },
            verifier,
            bytes,
        ))
    }
}

impl Validator<'_> {
    pub(super) fn client_cert_match(
        &self,
        route: &str,
        raw: Option<&Spanned<RawClientCertMatch>>,
    ) -> Result<Option<ClientCertMatch>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let here = format!("{route}.match.client_cert");
        let fail = |m: &str| Err(self.error_at(raw.referenced, here.clone(), m.to_owned()));
        match (&raw.value.present, &raw.value.san) {
            (None, None) => fail("give present: true|false or san: VALUE"),
            (Some(false), Some(_)) => fail("a san needs a certificate: drop present: false"),
            (_, Some(san)) if san.trim().is_empty() => fail("san is empty"),
            (present, san) => Ok(Some(ClientCertMatch {
                present: present.unwrap_or(true),
                san: san.as_ref().map(|s| s.trim().to_owned()),
            })),
        }
    }
}

impl Validator<'_> {
    /// A route on the client certificate needs a listener that asks for one.
    pub(super) fn no_client_cert_routes(
        &self,
        listener: &str,
        routes: Option<&Spanned<Vec<Spanned<super::file::RawRoute>>>>,
    ) -> Result<(), ConfigError> {
        for (index, route) in routes.iter().flat_map(|r| r.value.iter()).enumerate() {
            if let Some(condition) = &route.value.matcher.value.client_cert {
                return Err(self.error_at(
                    condition.referenced,
                    format!("{listener}.routes[{index}].match.client_cert"),
                    "this listener asks for no client certificate: add tls.client_auth".into(),
                ));
            }
        }
        Ok(())
    }
}
