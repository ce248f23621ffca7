//! What sluice reads out of an X.509 certificate besides what rustls needs: its validity
//! (expiry metrics and refusing an expired certificate), serial and subject (logs, `/status`),
//! and every subjectAltName (a verified client certificate passed to the backend).
//!
//! Pure: bytes in, values out (`x509-parser`); the wall clock is the caller's argument.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The facts of one certificate that sluice reports and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// notBefore and notAfter, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Hex, colon-separated, as `openssl x509 -serial` prints it (without the colons there).
    pub serial: String,
    /// The subject distinguished name in RFC 4514 order (`CN=client,O=Example`).
    pub subject: String,
    pub sans: Vec<San>,
}

/// One subjectAltName entry of a kind sluice passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    Dns(String),
    Uri(String),
    Email(String),
    Ip(std::net::IpAddr),
}

impl San {
    /// The value alone (what a route's `client_san` compares with).
    pub fn value(&self) -> String {
        match self {
            San::Dns(v) | San::Uri(v) | San::Email(v) => v.clone(),
            San::Ip(ip) => ip.to_string(),
        }
    }
}

/// Reads the facts of a DER certificate.
pub fn facts(der: &CertificateDer<'_>) -> Result<CertFacts, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let validity = cert.validity();
    let mut sans = Vec::new();
    if let Ok(Some(extension)) = cert.subject_alternative_name() {
        for name in &extension.value.general_names {
            match name {
                GeneralName::DNSName(v) => sans.push(San::Dns((*v).to_owned())),
                GeneralName::URI(v) => sans.push(San::Uri((*v).to_owned())),
                GeneralName::RFC822Name(v) => sans.push(San::Email((*v).to_owned())),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from(bytes) {
                        sans.push(San::Ip(ip));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertFacts {
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        subject: rfc4514(&cert),
        sans,
    })
}

fn ip_from(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// The subject as RFC 4514 writes it: most specific attribute first (x509-parser prints the
/// encoding order, country first), separated by commas, special characters escaped.
fn rfc4514(cert: &x509_parser::certificate::X509Certificate<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut parts = Vec::new();
    for rdn in cert.subject().iter() {
        let attributes: Vec<String> = rdn
            .iter()
            .map(|attribute| {
                let oid = attribute.attr_type();
                let name = x509_parser::objects::oid2abbrev(oid, registry)
                    .map(str::to_owned)
                    .unwrap_or_else(|_| oid.to_id_string());
                let value = attribute
                    .as_str()
                    .map(escape)
                    .unwrap_or_else(|_| "#".to_owned() + &hex(attribute.attr_value().data));
                format!("{name}={value}")
            })
            .collect();
        parts.push(attributes.join("+"));
    }
    parts.reverse();
    parts.join(",")
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == value.len() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_validity_subject_and_sans() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client one");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.com/app".try_into().unwrap(),
        ));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([10, 0, 0, 1].into()));
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        params.serial_number = Some(vec![0x01, 0xab].into());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let facts = facts(cert.der()).unwrap();
        assert_eq!(facts.not_after, 1_924_992_000 + 86_400, "2031-01-02");
        assert_eq!(facts.serial, "01ab");
        assert_eq!(facts.subject, "CN=client one,O=Example\\, Inc");
        assert_eq!(
            facts.sans,
            vec![
                San::Dns("a.example.com".into()),
                San::Uri("spiffe://example.com/app".into()),
                San::Ip("10.0.0.1".parse().unwrap()),
            ]
        );
        assert!(super::facts(&CertificateDer::from(vec![1, 2, 3])).is_err());
    }
}
