//! Open connections per client address on one listener (nginx's `limit_conn`, HAProxy's
//! `src_conn_cur`): a count per address, held by an RAII guard for the connection's life,
//! so the count is right however the connection ends. An address is forgotten when its last
//! connection closes, so memory follows the open connections, which `max_connections` and
//! the descriptor limit bound already.
//!
//! The count is by the connection's address (its PROXY header's when there is one): a
//! connection is limited before any request on it is read. Peers that are trusted proxies
//! (`client_address.trusted_proxies`) are not limited: they carry many clients' requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

#[derive(Debug, Default)]
pub struct ConnCounts {
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
}

/// One open connection of a client; dropping it gives the place back.
#[derive(Debug)]
pub struct ClientConn {
    counts: Arc<ConnCounts>,
    ip: IpAddr,
}

impl ConnCounts {
    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let folded = match ip {
            IpAddr::V4(v4) => u64::from(v4.to_bits()),
            IpAddr::V6(v6) => {
                let bits = v6.to_bits();
                (bits as u64) ^ ((bits >> 64) as u64)
            }
        };
        let spread = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60;
        &self.shards[spread as usize % SHARDS]
    }

    /// Takes a place for a new connection of `ip`, or `None` when it has `max` open already.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<ClientConn> {
        let ip = ip.to_canonical();
        let mut counts = self.shard(ip).lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            if *count == 0 {
                counts.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(ClientConn {
            counts: Arc::clone(self),
            ip,
        })
    }

    /// Open connections of `ip` now.
    pub fn open(&self, ip: IpAddr) -> u32 {
        let ip = ip.to_canonical();
        let counts = self.shard(ip).lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }

    /// Addresses with at least one open connection.
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .shard(self.ip)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_open_connections_and_forgets_closed_clients() {
        let counts = Arc::new(ConnCounts::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let first = counts.try_open(ip, 2).unwrap();
        let second = counts
            .try_open("::ffff:192.0.2.1".parse().unwrap(), 2)
            .unwrap();
        assert!(counts.try_open(ip, 2).is_none());
        assert!(counts.try_open("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(first);
        let third = counts.try_open(ip, 2).unwrap();
        assert_eq!(counts.open(ip), 2);
        drop((second, third));
        assert_eq!(counts.open(ip), 0);
        assert_eq!(counts.clients(), 0, "closed clients are forgotten");
    }
}
