//! `Balancer::pick` per algorithm over 3, 30 and 300 backends, on one thread and with a second
//! thread picking from the same balancer at the same time (the shared cursor and counters then
//! bounce between cores, as they do between worker threads in the proxy).
//!
//! Run briefly: `cargo bench --bench balance -- --warm-up-time 1 --measurement-time 2`.
//! Targets: every algorithm under 1 µs at 300 backends; round robin and p2c under 50 ns.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sluice::backend::{Backend, BackendId, BackendState, InFlight};
use sluice::balance::{Balancer, PickContext, hash_bytes, request_key};
use sluice::config::{Algorithm, HashKey, HashOptions, P2cLoad, P2cOptions};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const SIZES: [usize; 3] = [3, 30, 300];

struct Case {
    name: &'static str,
    algorithm: Algorithm,
    /// Weight of backend `i` of `n`.
    weight: fn(usize) -> u32,
}

fn cases() -> Vec<Case> {
    let hash = |bounded_load| {
        Algorithm::Hash(HashOptions {
            key: HashKey::SourceIp,
            bounded_load,
            fallback: Box::new(Algorithm::RoundRobin),
        })
    };
    let p2c = |load| Algorithm::P2c(P2cOptions { load });
    let mixed: fn(usize) -> u32 = |i| 1 + (i % 5) as u32;
    vec![
        Case {
            name: "round_robin",
            algorithm: Algorithm::RoundRobin,
            weight: mixed,
        },
        // Weights whose reduced sum is over the precomputed-cycle limit: the mutex path.
        Case {
            name: "round_robin_classic",
            algorithm: Algorithm::RoundRobin,
            weight: |i| 10_000 - i as u32,
        },
        Case {
            name: "random",
            algorithm: Algorithm::Random,
            weight: mixed,
        },
        Case {
            name: "least_conn",
            algorithm: Algorithm::LeastConn,
            weight: mixed,
        },
        Case {
            name: "p2c",
            algorithm: p2c(P2cLoad::InFlight),
            weight: mixed,
        },
        Case {
            name: "p2c_ewma",
            algorithm: p2c(P2cLoad::Ewma),
            weight: mixed,
        },
        Case {
            name: "hash",
            algorithm: hash(None),
            weight: mixed,
        },
        Case {
            name: "hash_bounded",
            algorithm: hash(Some(1.25)),
            weight: mixed,
        },
        Case {
            name: "first",
            algorithm: Algorithm::First,
            weight: mixed,
        },
    ]
}

/// A pool under some load: backend `i` has `i % 7` requests in flight and a latency estimate.
/// For `first`, every backend but the last is at its `max_connections` (its worst case: a
/// full scan); for the others nobody is full.
fn pool(case: &Case, size: usize) -> (Vec<Backend>, Vec<InFlight>) {
    let mut guards = Vec::new();
    let backends = (0..size)
        .map(|i| {
            let address: sluice::config::BackendAddress =
                SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 80)).into();
            let state = BackendState::new(BackendId {
                pool: "bench".into(),
                address: address.clone(),
            });
            let in_flight = i % 7;
            guards.extend((0..in_flight).map(|_| state.acquire()));
            state.record_latency(1_000 + 100 * i as u64, 0);
            let max_connections = match case.name {
                "first" if i + 1 < size => Some(in_flight.max(1) as u32),
                _ => None,
            };
            if max_connections == Some(1) && in_flight == 0 {
                guards.push(state.acquire());
            }
            Backend {
                address,
                weight: (case.weight)(i),
                max_connections,
                breaker: None,
                state,
            }
        })
        .collect();
    (backends, guards)
}

fn keys() -> Vec<u64> {
    (0..1024u64).map(|k| hash_bytes(&k.to_be_bytes())).collect()
}

fn bench_picks(c: &mut Criterion) {
    let keys = keys();
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("pick_{threads}_thread"));
        for case in cases() {
            for size in SIZES {
                let (backends, _guards) = pool(&case, size);
                let balancer = Balancer::new(&case.algorithm, &backends);
                let pick = |rng: &mut fastrand::Rng, turn: usize| {
                    let context = PickContext {
                        key: Some(keys[turn & 1023]),
                        sticky: None,
                        now_micros: 1_000_000,
                    };
                    balancer.pick(black_box(&backends), &context, rng)
                };
                group.bench_function(BenchmarkId::new(case.name, size), |b| {
                    let stop = AtomicBool::new(false);
                    std::thread::scope(|scope| {
                        if threads == 2 {
                            scope.spawn(|| {
                                let mut rng = fastrand::Rng::with_seed(2);
                                let mut turn = 0;
                                while !stop.load(Ordering::Relaxed) {
                                    turn += 1;
                                    black_box(pick(&mut rng, turn));
                                }
                            });
                        }
                        let mut rng = fastrand::Rng::with_seed(1);
                        let mut turn = 0;
                        b.iter(|| {
                            turn += 1;
                            pick(&mut rng, turn)
                        });
                        stop.store(true, Ordering::Relaxed);
                    });
                });
            }
        }
        group.finish();
    }
}

/// Round robin over 10,000 discovered backends (etcd churn, issue #27): building the selector
/// on every change, and one pick, for weights 1-5 (a precomputed cycle) and for distinct
/// weights whose sum is too large to tabulate (the lazy per-weight-class schedule).
fn bench_round_robin_big(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_robin_10000");
    let cases = [
        Case {
            name: "weights_1_5",
            algorithm: Algorithm::RoundRobin,
            weight: |i| 1 + (i % 5) as u32,
        },
        Case {
            name: "weights_distinct",
            algorithm: Algorithm::RoundRobin,
            weight: |i| 1_000_000 - i as u32,
        },
    ];
    for case in cases {
        let (backends, _guards) = pool(&case, 10_000);
        group.bench_function(BenchmarkId::new("build", case.name), |b| {
            b.iter(|| Balancer::new(&case.algorithm, black_box(&backends)))
        });
        let balancer = Balancer::new(&case.algorithm, &backends);
        let context = PickContext {
            key: None,
            sticky: None,
            now_micros: 1_000_000,
        };
        let mut rng = fastrand::Rng::with_seed(1);
        group.bench_function(BenchmarkId::new("pick", case.name), |b| {
            b.iter(|| balancer.pick(black_box(&backends), &context, &mut rng))
        });
    }
    group.finish();
}

/// What the HTTP proxy adds per request before `pick`: finding and hashing the key.
fn bench_keys(c: &mut Criterion) {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-user", "user-4f1c2a9e".parse().unwrap());
    headers.insert(
        http::header::COOKIE,
        "theme=dark; sid=9b2c4e1f7a3d; lang=en".parse().unwrap(),
    );
    let uri: http::Uri = "/api/v1/items?page=2&user=alice".parse().unwrap();
    let client: SocketAddr = "192.0.2.7:51000".parse().unwrap();
    let mut group = c.benchmark_group("request_key");
    for spec in [
        "source_ip",
        "header:X-User",
        "cookie:sid",
        "path",
        "query:user",
    ] {
        let key = sluice::config::parse_hash_key(spec).unwrap();
        group.bench_function(spec, |b| {
            b.iter(|| request_key(black_box(&key), &headers, &uri, Some(client)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench_picks, bench_round_robin_big, bench_keys
}
criterion_main!(benches);
