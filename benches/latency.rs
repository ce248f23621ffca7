//! The cost the latency histogram adds to the data path (`sluice::latency`): one observation
//! alone, and `BackendState::record_latency` (peak-EWMA plus histogram) against the EWMA
//! update it already paid, on one thread and with a second thread recording into the same
//! backend (the counters then bounce between cores, as between worker threads).
//!
//! Run briefly: `cargo bench --bench latency -- --warm-up-time 1 --measurement-time 2`.
//! Target: the histogram adds under 10 ns to a response on one thread.

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::backend::{BackendId, BackendState};
use sluice::ewma;
use sluice::latency::Histogram;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn state() -> Arc<BackendState> {
    BackendState::new(BackendId {
        pool: "bench".into(),
        address: "127.0.0.1:9000".parse().expect("address"),
    })
}

/// Runs `body` while a second thread records into the same backend.
fn contended(state: &Arc<BackendState>, body: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (state, stop) = (Arc::clone(state), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut now = 0u64;
            while !stop.load(Ordering::Relaxed) {
                now += 10;
                state.record_latency(now % 5_000, now);
            }
        })
    };
    body();
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("latency");
    let histogram = Histogram::default();
    let mut rtt = 0u64;
    group.bench_function("histogram_record", |b| {
        b.iter(|| {
            rtt = (rtt + 7_919) % 2_000_000;
            histogram.record(black_box(rtt));
        })
    });
    // What record_latency did before the histogram: the EWMA's compare-and-swap alone.
    let word = AtomicU64::new(ewma::UNOBSERVED);
    let mut now = 0u64;
    group.bench_function("ewma_only", |b| {
        b.iter(|| {
            now += 10;
            let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                Some(ewma::observe(packed, black_box(now % 5_000), now))
            });
        })
    });
    let backend = state();
    group.bench_function("record_latency", |b| {
        b.iter(|| {
            now += 10;
            backend.record_latency(black_box(now % 5_000), now);
        })
    });
    contended(&backend, || {
        group.bench_function("record_latency_two_threads", |b| {
            b.iter(|| {
                now += 10;
                backend.record_latency(black_box(now % 5_000), now);
            })
        });
    });
    group.bench_function("quantiles_of_a_copy", |b| {
        b.iter(|| {
            let counts = backend.latency_histogram.counts();
            black_box((counts.quantile(0.5), counts.quantile(0.99)))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
