//! Choosing the certificate for a handshake by the client's SNI: an exact SAN name first, then
//! a wildcard SAN (`*.example.com` covers exactly one more label, as RFC 6125 says clients
//! check it), else the listener's default certificate (no SNI, an IP literal, an unknown name).
//!
//! The choice (`select`, `pick`) is pure and unit-tested; the rustls trait is implemented by
//! the certificate store (`store`), a thin shell over it.

//! Several certificates may serve the same name (an ECDSA and an RSA one): the candidates come
//! in list order and the first whose key the client can verify wins (`pick`), so a client
//! that only offers RSA signature schemes gets the RSA certificate and every other the first
//! listed. The default's candidates are the default then every other certificate, so a client
//! without SNI still finds a key it can use.

use rustls::SignatureScheme;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Name -> indices of the certificates serving it, in list order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NameIndex {
    exact: HashMap<String, Vec<usize>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Vec<usize>>,
    /// The default certificate first, then every other one.
    default: Vec<usize>,
}

impl NameIndex {
    /// `names[i]` are the SAN names of certificate `i`.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a [String]>, default: usize) -> NameIndex {
        let mut index = NameIndex::default();
        let mut count = 0;
        for (i, list) in names.into_iter().enumerate() {
            count = i + 1;
            for name in list {
                let name = name.to_ascii_lowercase();
                let entry = match name.strip_prefix("*.") {
                    Some(suffix) => index.wildcard.entry(suffix.to_owned()).or_default(),
                    None => index.exact.entry(name).or_default(),
                };
                if !entry.contains(&i) {
                    entry.push(i);
                }
            }
        }
        index.default = std::iter::once(default)
            .chain((0..count).filter(|&i| i != default))
            .collect();
        index
    }

    /// The candidate certificates for a client's SNI (already lowercase from rustls), best
    /// first.
    pub fn select(&self, sni: Option<&str>) -> &[usize] {
        let Some(sni) = sni else {
            return &self.default;
        };
        let sni = sni.trim_end_matches('.');
        if let Some(found) = self.exact.get(sni) {
            return found;
        }
        sni.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .map_or(&self.default, Vec::as_slice)
    }

    /// Whether some certificate covers `name` (for `default_certificate: NAME`).
    pub fn covers(&self, name: &str) -> Option<usize> {
        let name = name.to_ascii_lowercase();
        if let Some(found) = self.exact.get(&name) {
            return found.first().copied();
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).and_then(|f| f.first().copied())
    }
}

/// The first candidate whose key signs with a scheme the client offered; the first candidate
/// when none does (the handshake then fails with rustls' own alert).
pub fn pick(
    certs: &[Arc<CertifiedKey>],
    candidates: &[usize],
    offered: &[SignatureScheme],
) -> Option<Arc<CertifiedKey>> {
    let first = candidates.first().and_then(|&i| certs.get(i));
    if candidates.len() > 1 {
        let fits = candidates
            .iter()
            .filter_map(|&i| certs.get(i))
            .find(|c| offered.iter().any(|s| signs_with(c, *s)));
        if let Some(found) = fits {
            return Some(Arc::clone(found));
        }
    }
    first.cloned()
}

/// Whether `key`'s algorithm is the one `scheme` signs with (no signer is built: this runs
/// on every handshake).
fn signs_with(key: &CertifiedKey, scheme: SignatureScheme) -> bool {
    use rustls::SignatureAlgorithm as A;
    use rustls::SignatureScheme as S;
    let algorithm = match scheme {
        S::ECDSA_NISTP256_SHA256 | S::ECDSA_NISTP384_SHA384 | S::ECDSA_NISTP521_SHA512 => A::ECDSA,
        S::RSA_PKCS1_SHA256
        | S::RSA_PKCS1_SHA384
        | S::RSA_PKCS1_SHA512
        | S::RSA_PSS_SHA256
        | S::RSA_PSS_SHA384
        | S::RSA_PSS_SHA512 => A::RSA,
        S::ED25519 => A::ED25519,
        _ => return false,
    };
    key.key.algorithm() == algorithm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(certs: &[&[&str]], default: usize) -> NameIndex {
        let owned: Vec<Vec<String>> = certs
            .iter()
            .map(|names| names.iter().map(|n| n.to_string()).collect())
            .collect();
        NameIndex::new(owned.iter().map(Vec::as_slice), default)
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let names = index(
            &[
                &["a.example.com"],
                &["*.example.com", "example.org"],
                &["b.example.com"],
            ],
            0,
        );
        let first = |sni| names.select(sni)[0];
        assert_eq!(first(Some("a.example.com")), 0);
        assert_eq!(first(Some("b.example.com")), 2, "exact beats wildcard");
        assert_eq!(first(Some("c.example.com")), 1);
        assert_eq!(first(Some("example.org")), 1);
        assert_eq!(first(Some("example.com")), 0, "wildcard needs a label");
        assert_eq!(first(Some("x.c.example.com")), 0, "one label only");
        assert_eq!(first(Some("other.net")), 0);
        assert_eq!(names.select(None), &[0, 1, 2]);
        assert_eq!(first(Some("a.example.com.")), 0);
    }

    #[test]
    fn first_listed_wins_and_default_is_configurable() {
        let names = index(&[&["x.test"], &["x.test", "y.test"]], 1);
        assert_eq!(
            names.select(Some("x.test")),
            &[0, 1],
            "both, first listed first"
        );
        assert_eq!(names.select(Some("y.test")), &[1]);
        assert_eq!(names.select(None), &[1, 0], "the default, then the others");
        assert_eq!(names.covers("Y.test"), Some(1));
        assert_eq!(names.covers("z.test"), None);
    }

    /// A certificate with a fresh P-256 key, or with the RSA test key (ring cannot generate
    /// RSA keys).
    fn key(rsa: bool) -> Arc<CertifiedKey> {
        let pair = if rsa {
            rcgen::KeyPair::from_pem(include_str!("testdata/rsa2048.key")).unwrap()
        } else {
            rcgen::KeyPair::generate().unwrap()
        };
        let cert = rcgen::CertificateParams::new(vec!["x.test".to_owned()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        let der = rustls::pki_types::PrivateKeyDer::try_from(pair.serialize_der()).unwrap();
        Arc::new(
            CertifiedKey::from_der(vec![cert.der().clone()], der, &crate::tls::provider()).unwrap(),
        )
    }

    #[test]
    fn the_first_candidate_the_client_can_verify_wins() {
        let ecdsa = key(false);
        let rsa = key(true);
        let certs = [Arc::clone(&ecdsa), Arc::clone(&rsa)];
        let all = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
        ];
        let rsa_only = [
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
        ];
        let chosen = |offered: &[SignatureScheme]| pick(&certs, &[0, 1], offered).unwrap();
        assert!(Arc::ptr_eq(&chosen(&all), &ecdsa), "first listed");
        assert!(Arc::ptr_eq(&chosen(&rsa_only), &rsa), "an RSA-only client");
        assert!(
            Arc::ptr_eq(&chosen(&[SignatureScheme::ED25519]), &ecdsa),
            "none fits: first"
        );
        assert!(pick(&certs, &[], &all).is_none());
    }
}
