//! Resumption bound to the client-auth trust it was verified under: every session a listener
//! stores (its cache) or hands out (its tickets) is stamped with a digest of the CA bundle and
//! CRL in force, and a session whose stamp is not the current one is not resumed.
//!
//! Why: rustls does not verify the client certificate again on resumption, so without this a
//! client revoked by a new CRL (swapped without a reload, `client_auth.rs`) or dropped by a new
//! CA bundle keeps its access for a ticket lifetime by resuming, and a reload carries the
//! sessions too (`sessions.rs`, `Ticketer::carry`). A stamp rather than clearing the cache
//! and rotating the ticket keys: keys from a shared file (`tls.session_tickets.keys`) cannot
//! be rotated by one instance, and a cache cleared at the swap still takes sessions from
//! handshakes verified just before it. The stamp is a digest of the files' content, not a
//! counter, so a fleet with the same files and a shared key file still resumes across
//! instances, and a reload that leaves the files alone keeps every session.
//!
//! A refused session costs the client one full handshake, where the verifier in force decides.
//! Listeners without client auth stamp 0, so enabling client auth also ends resumption of
//! sessions made without a certificate. Imports nothing of ours but `client_auth`.

use super::client_auth::ClientAuthStore;
use rustls::server::{ProducesTickets, StoresServerSessions};
use std::sync::Arc;

const STAMP_LEN: usize = 8;

/// The stamp of the trust in force: the verifier's, or 0 without client auth.
#[derive(Debug, Clone)]
pub struct Trust(Option<Arc<ClientAuthStore>>);

impl Trust {
    pub fn new(client_auth: Option<Arc<ClientAuthStore>>) -> Trust {
        Trust(client_auth)
    }

    fn stamp(&self) -> [u8; STAMP_LEN] {
        self.0
            .as_ref()
            .map_or(0, |store| store.stamp())
            .to_be_bytes()
    }

    fn stamped(&self, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(STAMP_LEN + value.len());
        out.extend_from_slice(&self.stamp());
        out.extend_from_slice(value);
        out
    }

    /// The value without its stamp, if the stamp is the one in force.
    fn unstamped(&self, mut value: Vec<u8>) -> Option<Vec<u8>> {
        if value.get(..STAMP_LEN)? != self.stamp() {
            return None;
        }
        value.drain(..STAMP_LEN);
        Some(value)
    }
}

/// The digest a `ClientAuthStore` publishes for the files it verifies with (and whether a
/// certificate is required: a listener turned from optional to required must not resume the
/// sessions of clients that had none).
pub fn digest(content: &[u8], required: bool) -> u64 {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(&[u8::from(required)]);
    context.update(content);
    let digest = context.finish();
    let mut stamp = [0u8; STAMP_LEN];
    stamp.copy_from_slice(&digest.as_ref()[..STAMP_LEN]);
    // 0 is the stamp of "no client auth".
    u64::from_be_bytes(stamp).max(1)
}

/// A session store whose entries carry the trust stamp.
#[derive(Debug)]
pub struct StampedSessions {
    pub inner: Arc<dyn StoresServerSessions>,
    pub trust: Trust,
}

impl StoresServerSessions for StampedSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, self.trust.stamped(&value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let value = self.inner.get(key)?;
        let fresh = self.trust.unstamped(value);
        if fresh.is_none() {
            // Made under other trust: drop it, it will never be served again.
            self.inner.take(key);
        }
        fresh
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.trust.unstamped(self.inner.take(key)?)
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// A ticketer whose tickets carry the trust stamp inside their encryption.
#[derive(Debug)]
pub struct StampedTickets {
    pub inner: Arc<dyn ProducesTickets>,
    pub trust: Trust,
}

impl ProducesTickets for StampedTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&self.trust.stamped(plain))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.trust.unstamped(self.inner.decrypt(cipher)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ServerSessionMemoryCache;

    #[test]
    fn digests_differ_by_content_and_mode_and_are_never_zero() {
        assert_ne!(digest(b"ca", true), digest(b"ca2", true));
        assert_ne!(digest(b"ca", true), digest(b"ca", false));
        assert_eq!(digest(b"ca", true), digest(b"ca", true));
        assert_ne!(digest(b"", false), 0);
    }

    #[test]
    fn a_session_stored_under_other_trust_is_not_served_and_is_dropped() {
        let inner: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(8);
        let plain = StampedSessions {
            inner: Arc::clone(&inner),
            trust: Trust::new(None),
        };
        assert!(plain.put(b"k".to_vec(), b"v".to_vec()));
        assert_eq!(plain.get(b"k").as_deref(), Some(&b"v"[..]));
        // The same store seen with a stamp that is not 0 (client auth now on).
        let other = StampedSessions {
            inner: Arc::clone(&inner),
            trust: Trust(None),
        };
        inner.put(
            b"x".to_vec(),
            [&[0, 0, 0, 0, 0, 0, 0, 9][..], b"v"].concat(),
        );
        assert_eq!(other.get(b"x"), None);
        assert_eq!(inner.get(b"x"), None, "dropped");
        assert_eq!(other.take(b"k").as_deref(), Some(&b"v"[..]));
        inner.put(b"short".to_vec(), b"v".to_vec());
        assert_eq!(other.get(b"short"), None);
    }
}
