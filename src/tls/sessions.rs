//! A listener's TLS 1.2 session cache, carried across reloads: a reload builds a new rustls
//! `ServerConfig`, and without this every returning client did a full handshake after each
//! one. The cache is a swappable handle; `carry` points the new config's handle at the old
//! cache (and the ticketer's at the old keys, `Ticketer::carry`) when the listener's
//! resumption settings did not change. Like backend state, it is carried by identity: the
//! listener's name.

use arc_swap::ArcSwap;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use std::sync::Arc;

pub struct SessionCache {
    inner: ArcSwap<ServerSessionMemoryCache>,
}

impl SessionCache {
    pub fn new(size: usize) -> Arc<SessionCache> {
        Arc::new(SessionCache {
            inner: ArcSwap::new(ServerSessionMemoryCache::new(size)),
        })
    }

    /// Serves `old`'s sessions from now on (this cache's own, still empty, are dropped).
    pub fn carry(&self, old: &SessionCache) {
        self.inner.store(old.inner.load_full());
    }
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache").finish_non_exhaustive()
    }
}

impl StoresServerSessions for SessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.load().put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.load().get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.load().take(key)
    }
    fn can_cache(&self) -> bool {
        self.inner.load().can_cache()
    }
}
