//! Edge protection's per-request work: a rate-limit check with one million keys present (a
//! recent key, and a random one of the million, which misses the CPU caches as an attack
//! spread over many addresses does), and the client-address resolution (no trusted proxies;
//! a trusted proxy with a three-hop X-Forwarded-For). Prints the heap held by one million
//! keys first (RSS before and after filling, malloc_trim'd).
//!
//! Run briefly: `cargo bench --bench edge -- --warm-up-time 1 --measurement-time 2`.
//! Target: a check well under 100 ns.

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderValue;
use sluice::config::Cidr;
use sluice::edge::client_address::resolve;
use sluice::edge::rate::{Limiter, ip_key};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const KEYS: u32 = 1_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn filled() -> Limiter {
    sluice::memory::release_free_pages();
    let before = rss_bytes();
    // A rate nobody reaches, so that every check is the allowed path that updates the key;
    // room for twice the keys, so that all of them are held (a shard keeps between one and
    // two generations of its share).
    let limiter = Limiter::new(1_000_000, Duration::from_secs(1), 1_000_000, 2 * KEYS);
    for i in 0..KEYS {
        limiter.check(ip_key(client(i)), 1_000_000);
    }
    sluice::memory::release_free_pages();
    let after = rss_bytes();
    eprintln!(
        "rate limit: {} keys held, {:.1} MiB of RSS, {} bytes a key",
        limiter.len(),
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) / limiter.len().max(1) as u64
    );
    limiter
}

fn rate_limit(c: &mut Criterion) {
    let limiter = filled();
    let mut group = c.benchmark_group("rate_limit_1m_keys");
    let hot = ip_key(client(4242));
    let mut now = 2_000_000u64;
    group.bench_function("recent_key", |b| {
        b.iter(|| {
            now += 1;
            black_box(limiter.check(black_box(hot), now))
        })
    });
    let mut rng = fastrand::Rng::with_seed(7);
    group.bench_function("random_key", |b| {
        b.iter(|| {
            now += 1;
            let key = ip_key(client(rng.u32(0..KEYS)));
            black_box(limiter.check(key, now))
        })
    });
    group.finish();
}

fn client_address(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_address");
    let none: [HeaderValue; 0] = [];
    let peer: IpAddr = "203.0.113.9".parse().unwrap();
    group.bench_function("untrusted_peer", |b| {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        b.iter(|| black_box(resolve(Some(black_box(peer)), none.iter(), &trusted)))
    });
    let proxy: IpAddr = "10.0.0.2".parse().unwrap();
    let chain = [HeaderValue::from_static("198.51.100.7, 10.1.1.1, 10.2.2.2")];
    let trusted = [
        Cidr::parse("10.0.0.0/8").unwrap(),
        Cidr::parse("2001:db8::/32").unwrap(),
    ];
    group.bench_function("trusted_proxy_three_hops", |b| {
        b.iter(|| black_box(resolve(Some(black_box(proxy)), chain.iter(), &trusted)))
    });
    group.finish();
}

criterion_group!(benches, rate_limit, client_address);
criterion_main!(benches);
