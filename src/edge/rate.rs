//! Rate limits: a token bucket per key, computed as GCRA (the generic cell rate algorithm),
//! and the bounded, sharded store of those buckets.
//!
//! Why GCRA: it is a token bucket (`burst` requests at once, refilled at the rate) whose whole
//! state is one number, the time at which the bucket will be full again (the "theoretical
//! arrival time"), so a key costs 8 bytes of state and a check is integer arithmetic, with no
//! refill loop and no floating point. `Retry-After` falls out of it exactly.
//!
//! Memory is bounded: each limiter keeps at most `max_keys` keys, least recently used
//! forgotten first, in batches. Each shard holds two generations of keys, `current` and
//! `previous`, plain hash maps of 16-byte entries: a key used is (re)written in `current`;
//! when `current` holds half the shard's share, `previous` is dropped whole and `current`
//! becomes `previous`. Every key dropped was last used before every key kept, which is LRU
//! eviction half a shard at a time, and a check touches one or two hash slots instead of an
//! LRU list's three or four linked nodes: with a million keys, most checks miss the CPU
//! caches, and each miss avoided is ~100 ns. (hashlink's `LruCache` measured 67 bytes a key
//! and ~870 ns a check of a random key among a million, against ~25 ns for a recent one.)
//! A forgotten key comes back with a full bucket, which is what it would have had after a
//! quiet spell anyway; size `max_keys` above twice the number of clients active within one
//! refill of the bucket and eviction never lets anyone through early. The store is split in
//! up to 64 shards, each behind its own mutex, chosen by the key's hash, so request threads
//! rarely wait for each other.
//!
//! Keys are 64-bit: an IPv4 client is its address, an IPv6 client its /64 (one subscriber's
//! allocation: keying by the full address would let one host use 2^64 fresh buckets), a
//! header or cookie value a keyed hash of it (SipHash with a per-limiter random key, so a
//! client cannot aim for another's bucket).
//!
//! Pure but for the mutexes: time (`now`, microseconds of `crate::clock`) is passed in.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// A token bucket as GCRA: `interval` between requests at the steady rate, and `tolerance`
/// (`interval * (burst - 1)`) of earliness allowed, both in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval: u64,
    tolerance: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Over the limit: the next request of this key would pass after this long.
    Refuse {
        retry_after: Duration,
    },
}

impl Gcra {
    pub fn new(count: u32, per: Duration, burst: u32) -> Gcra {
        let interval = (per.as_micros() as u64 / u64::from(count.max(1))).max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }

    /// Judges one request at `now` against the key's state (`None`: a full bucket) and
    /// returns the state to keep (unchanged when refused: a refused request takes no token).
    pub fn check(&self, state: Option<u64>, now: u64) -> (Decision, Option<u64>) {
        let tat = state.unwrap_or(now).max(now);
        let early = tat - now;
        if early > self.tolerance {
            let wait = early - self.tolerance;
            let decision = Decision::Refuse {
                retry_after: Duration::from_micros(wait),
            };
            return (decision, state);
        }
        (Decision::Allow, Some(tat + self.interval))
    }
}

/// How many whole seconds `Retry-After` says: rounded up, at least 1 (0 would invite an
/// immediate retry that is refused again).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_micros().div_ceil(1_000_000).max(1) as u64
}

/// Keys of one rule, bounded, least recently used forgotten first.
pub struct Limiter {
    gcra: Gcra,
    shards: Box<[Mutex<Generations>]>,
    shard_bits: u32,
    seed: Seeded,
    /// Keys header and cookie values (see the module header).
    values: std::hash::RandomState,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("gcra", &self.gcra)
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// At most this many shards; fewer for small `max_keys`, so that the bound stays exact
/// enough (each shard holds `max_keys / shards`).
const MAX_SHARDS: usize = 64;
const KEYS_PER_SHARD_AT_LEAST: usize = 1024;

impl Limiter {
    pub fn new(count: u32, per: Duration, burst: u32, max_keys: u32) -> Limiter {
        let max_keys = max_keys.max(1) as usize;
        let wanted = (max_keys / KEYS_PER_SHARD_AT_LEAST).clamp(1, MAX_SHARDS);
        // A power of two, so the shard is a shift of the hash.
        let shards = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        let per_shard = max_keys.div_ceil(shards);
        let seed = Seeded::random();
        Limiter {
            gcra: Gcra::new(count, per, burst),
            shards: (0..shards)
                .map(|_| Mutex::new(Generations::new(per_shard, seed)))
                .collect(),
            shard_bits: shards.trailing_zeros(),
            seed,
            values: std::hash::RandomState::new(),
        }
    }

    /// Judges one request of `key` at `now` (microseconds) and takes its token when allowed.
    pub fn check(&self, key: u64, now: u64) -> Decision {
        let shard = if self.shard_bits == 0 {
            0
        } else {
            (self.seed.mix(key) >> (64 - self.shard_bits)) as usize
        };
        let mut keys = self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.check(&self.gcra, key, now)
    }

    /// Keys held now (all shards).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let keys = s.lock().unwrap_or_else(|p| p.into_inner());
                keys.current.len() + keys.previous.len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key of a header or cookie value.
    pub fn value_key(&self, value: &[u8]) -> u64 {
        let mut hasher = self.values.build_hasher();
        hasher.write(value);
        hasher.finish()
    }
}

/// One shard's keys: two generations (see the module header).
struct Generations {
    current: HashMap<u64, u64, Seeded>,
    previous: HashMap<u64, u64, Seeded>,
    /// `current` is turned into `previous` when it holds this many keys.
    generation: usize,
    seed: Seeded,
}

impl Generations {
    fn new(keys: usize, seed: Seeded) -> Generations {
        Generations {
            current: HashMap::with_hasher(seed),
            previous: HashMap::with_hasher(seed),
            generation: keys.div_ceil(2).max(1),
            seed,
        }
    }

    fn check(&mut self, gcra: &Gcra, key: u64, now: u64) -> Decision {
        // The common case, a key seen lately: one lookup, updated in place.
        if let Some(tat) = self.current.get_mut(&key) {
            let (decision, state) = gcra.check(Some(*tat), now);
            if let Some(state) = state {
                *tat = state;
            }
            return decision;
        }
        let old = self.previous.remove(&key);
        let (decision, state) = gcra.check(old, now);
        if let Some(state) = state.or(old) {
            if self.current.len() >= self.generation {
                let fresh = HashMap::with_capacity_and_hasher(self.generation, self.seed);
                self.previous = std::mem::replace(&mut self.current, fresh);
            }
            self.current.insert(key, state);
        }
        decision
    }
}

/// The key of a client address: IPv4 whole, IPv6 by its /64 (see the module header). The
/// IPv4 keys sit under `ffff:ffff::/32`, multicast space no client is ever in.
pub fn ip_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => 0xffff_ffff_0000_0000 | u64::from(v4.to_bits()),
        IpAddr::V6(v6) => (v6.to_bits() >> 64) as u64,
    }
}

/// A keyed multiply-xorshift mix: cheap for the 8-byte keys, and seeded per limiter from the
/// process's random source so that nobody can aim keys at one shard or one hash chain.
#[derive(Debug, Clone, Copy)]
struct Seeded(u64);

impl Seeded {
    fn random() -> Seeded {
        let mut hasher = std::hash::RandomState::new().build_hasher();
        hasher.write_u8(0);
        Seeded(hasher.finish() | 1)
    }

    fn mix(&self, key: u64) -> u64 {
        let folded =
            u128::from(key ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        ((folded >> 64) as u64) ^ (folded as u64)
    }
}

impl BuildHasher for Seeded {
    type Hasher = SeededHasher;
    fn build_hasher(&self) -> SeededHasher {
        SeededHasher {
            seed: *self,
            state: 0,
        }
    }
}

pub struct SeededHasher {
    seed: Seeded,
    state: u64,
}

impl Hasher for SeededHasher {
    fn finish(&self) -> u64 {
        self.seed.mix(self.state)
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here (`write_u64`); anything else folds in bytewise.
        for &b in bytes {
            self.state = self.state.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.state ^= value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn burst_then_the_steady_rate() {
        // 5/s, burst 10: ten at once, then one every 200 ms.
        let gcra = Gcra::new(5, Duration::from_secs(1), 10);
        let mut state = None;
        let now = 100 * SECOND;
        for i in 0..10 {
            let (decision, next) = gcra.check(state, now);
            assert_eq!(decision, Decision::Allow, "request {i}");
            state = next;
        }
        let (decision, kept) = gcra.check(state, now);
        assert_eq!(
            decision,
            Decision::Refuse {
                retry_after: Duration::from_millis(200)
            }
        );
        assert_eq!(kept, state, "a refused request takes no token");
        let (decision, _) = gcra.check(state, now + 199_999);
        assert!(matches!(decision, Decision::Refuse { .. }));
        let (decision, state) = gcra.check(state, now + 200_000);
        assert_eq!(decision, Decision::Allow);
        // After a quiet spell the bucket is full again, not fuller.
        let later = now + 60 * SECOND;
        let mut state = state;
        for _ in 0..10 {
            let (decision, next) = gcra.check(state, later);
            assert_eq!(decision, Decision::Allow);
            state = next;
        }
        assert!(matches!(
            gcra.check(state, later).0,
            Decision::Refuse { .. }
        ));
    }

    #[test]
    fn per_minute_rates_and_retry_after() {
        let gcra = Gcra::new(600, Duration::from_secs(60), 1);
        let (_, state) = gcra.check(None, SECOND);
        let Decision::Refuse { retry_after } = gcra.check(state, SECOND).0 else {
            panic!("burst 1 allows one at once");
        };
        assert_eq!(retry_after, Duration::from_millis(100));
        assert_eq!(retry_after_seconds(retry_after), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
    }

    #[test]
    fn keys_are_separate_and_bounded_with_lru_eviction() {
        let limiter = Limiter::new(1, Duration::from_secs(60), 1, 2);
        let now = SECOND;
        assert_eq!(limiter.check(1, now), Decision::Allow);
        assert_eq!(limiter.check(2, now), Decision::Allow);
        assert!(matches!(limiter.check(1, now), Decision::Refuse { .. }));
        // Key 3 evicts the least recently used: 2 (1 was just looked at).
        assert_eq!(limiter.check(3, now), Decision::Allow);
        assert_eq!(limiter.len(), 2);
        assert!(matches!(limiter.check(1, now), Decision::Refuse { .. }));
        assert_eq!(
            limiter.check(2, now),
            Decision::Allow,
            "forgotten: a full bucket"
        );
    }

    #[test]
    fn large_limiters_are_sharded_and_hold_their_bound() {
        let limiter = Limiter::new(1, Duration::from_secs(1), 1, 100_000);
        assert_eq!(limiter.shards.len(), 64);
        for key in 0..300_000u64 {
            limiter.check(key, SECOND);
        }
        let held = limiter.len();
        // Each shard holds between one and two generations of 782 keys.
        assert!((50_000..=100_096).contains(&held), "{held}");
        // The most recent keys are all still there (their buckets are empty: refused).
        for key in 299_000..300_000u64 {
            assert!(
                matches!(limiter.check(key, SECOND), Decision::Refuse { .. }),
                "{key}"
            );
        }
    }

    #[test]
    fn ipv6_clients_share_their_64_and_ipv4_keys_stay_apart() {
        let a = ip_key("2001:db8:1:2::1".parse().unwrap());
        let b = ip_key("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = ip_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            ip_key("192.0.2.1".parse().unwrap()),
            ip_key("::ffff:192.0.2.1".parse().unwrap())
        );
        assert_ne!(
            ip_key("192.0.2.1".parse().unwrap()),
            ip_key("192.0.2.2".parse().unwrap())
        );
    }
}
