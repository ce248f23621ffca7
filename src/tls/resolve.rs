//! Choosing the certificate for a handshake by the client's SNI: an exact SAN name first, then
//! a wildcard SAN (`*.example.com` covers exactly one more label, as RFC 6125 says clients
//! check it), else the listener's default certificate (no SNI, an IP literal, an unknown name).
//!
//! The choice (`select`) is pure and unit-tested; the rustls trait is a thin shell over it.
//! When two certificates list the same name, the first listed wins.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct CertResolver {
    certs: Vec<Arc<CertifiedKey>>,
    names: NameIndex,
}

/// Name -> index of the certificate serving it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NameIndex {
    exact: HashMap<String, usize>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, usize>,
    default: usize,
}

impl NameIndex {
    /// `names[i]` are the SAN names of certificate `i`.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a [String]>, default: usize) -> NameIndex {
        let mut index = NameIndex {
            default,
            ..NameIndex::default()
        };
        for (i, list) in names.into_iter().enumerate() {
            for name in list {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(suffix) => index.wildcard.entry(suffix.to_owned()).or_insert(i),
                    None => index.exact.entry(name).or_insert(i),
                };
            }
        }
        index
    }

    /// The certificate for a client's SNI (already lowercase from rustls).
    pub fn select(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni else {
            return self.default;
        };
        let sni = sni.trim_end_matches('.');
        if let Some(&i) = self.exact.get(sni) {
            return i;
        }
        sni.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .copied()
            .unwrap_or(self.default)
    }

    /// Whether some certificate covers `name` (for `default_certificate: NAME`).
    pub fn covers(&self, name: &str) -> Option<usize> {
        let name = name.to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return Some(i);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }
}

impl CertResolver {
    pub fn new(
        certs: impl IntoIterator<Item = (Arc<CertifiedKey>, Vec<String>)>,
        default: usize,
    ) -> CertResolver {
        let (certs, names): (Vec<_>, Vec<_>) = certs.into_iter().unzip();
        CertResolver {
            names: NameIndex::new(names.iter().map(Vec::as_slice), default),
            certs,
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let index = self.names.select(hello.server_name());
        self.certs.get(index).cloned()
    }
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
        assert_eq!(names.select(Some("a.example.com")), 0);
        assert_eq!(
            names.select(Some("b.example.com")),
            2,
            "exact beats wildcard"
        );
        assert_eq!(names.select(Some("c.example.com")), 1);
        assert_eq!(names.select(Some("example.org")), 1);
        assert_eq!(
            names.select(Some("example.com")),
            0,
            "wildcard needs a label"
        );
        assert_eq!(names.select(Some("x.c.example.com")), 0, "one label only");
        assert_eq!(names.select(Some("other.net")), 0);
        assert_eq!(names.select(None), 0);
        assert_eq!(names.select(Some("a.example.com.")), 0);
    }

    #[test]
    fn first_listed_wins_and_default_is_configurable() {
        let names = index(&[&["x.test"], &["x.test", "y.test"]], 1);
        assert_eq!(names.select(Some("x.test")), 0);
        assert_eq!(names.select(Some("y.test")), 1);
        assert_eq!(names.select(None), 1);
        assert_eq!(names.covers("Y.test"), Some(1));
        assert_eq!(names.covers("z.test"), None);
    }
}
