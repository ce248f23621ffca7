//! The reload path on a config at scale (loadtest.py's `scale` scenario, benches/scale.py):
//! 10,000 backends in 1,000 pools behind 100 listeners, active checks on. Parsing the file,
//! `diff` (the reload plan), and `Snapshot::build` from nothing (start-up), from the running
//! snapshot with no change, and with one backend changed.
//!
//! Run briefly: `cargo bench --bench reload -- --warm-up-time 1 --measurement-time 3`.
//! Target: a reload of this config well under 100 ms, and one changed backend much cheaper
//! than the whole config (cost linear in what changed).

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::config::Config;
use sluice::config::diff::diff;
use sluice::state::Snapshot;
use std::fmt::Write;
use std::hint::black_box;
use std::sync::Arc;

const LISTENERS: usize = 100;
const POOLS: usize = 1000;
const PER_POOL: usize = 10;

/// The scale config; `moved` backends (pool, index) are on port 2 instead of port 1.
fn scale_config(moved: &[(usize, usize)]) -> String {
    let mut text = String::from("watch: false\nlisteners:\n");
    let per_listener = POOLS / LISTENERS;
    for listener in 0..LISTENERS {
        let first = listener * per_listener;
        let _ = writeln!(
            text,
            "  l{listener}:\n    bind: \"127.0.0.1:{}\"\n    pool: p{first}\n    routes:",
            19000 + listener
        );
        for pool in first..first + per_listener {
            let _ = writeln!(
                text,
                "      - {{ match: {{ path_prefix: /p{pool} }}, pool: p{pool} }}"
            );
        }
    }
    text.push_str("pools:\n");
    for pool in 0..POOLS {
        let backends: Vec<String> = (0..PER_POOL)
            .map(|index| {
                let n = pool * PER_POOL + index;
                let port = if moved.contains(&(pool, index)) { 2 } else { 1 };
                format!("127.0.{}.{}:{port}", n / 250 + 1, n % 250 + 1)
            })
            .collect();
        let _ = writeln!(
            text,
            "  p{pool}:\n    backends: [{}]\n    health_check: {{ path: /health, interval: 2s }}",
            backends.join(", ")
        );
    }
    text
}

fn parse(text: &str) -> Arc<Config> {
    Arc::new(Config::parse(text, "scale.yaml").expect("the scale config is valid"))
}

fn reload(c: &mut Criterion) {
    // Building a snapshot makes upstream clients, which want a runtime around them.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _entered = runtime.enter();
    let text = scale_config(&[]);
    let base = parse(&text);
    let same = parse(&text);
    let one = parse(&scale_config(&[(500, 3)]));
    let all_moved: Vec<(usize, usize)> = (0..POOLS)
        .flat_map(|pool| (0..PER_POOL).map(move |index| (pool, index)))
        .collect();
    let all = parse(&scale_config(&all_moved));
    let running = Snapshot::build(Arc::clone(&base), None);

    let mut group = c.benchmark_group("scale_10k_backends");
    group.sample_size(10);
    group.bench_function("parse", |b| b.iter(|| parse(black_box(&text))));
    group.bench_function("diff_one_backend", |b| {
        b.iter(|| diff(black_box(&base), black_box(&one)))
    });
    group.bench_function("diff_all_backends", |b| {
        b.iter(|| diff(black_box(&base), black_box(&all)))
    });
    group.bench_function("build_start", |b| {
        b.iter(|| Snapshot::build(Arc::clone(&base), None))
    });
    group.bench_function("build_no_change", |b| {
        b.iter(|| Snapshot::build(Arc::clone(&same), Some(&running)))
    });
    group.bench_function("build_one_backend", |b| {
        b.iter(|| Snapshot::build(Arc::clone(&one), Some(&running)))
    });
    group.bench_function("build_all_backends", |b| {
        b.iter(|| Snapshot::build(Arc::clone(&all), Some(&running)))
    });
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
