//! Criterion benchmarks for the per-request head work of every L7 request: the admission check
//! against the listener's limits, and the header rewrite.

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use sluice::headers::{ClientIp, rewrite_request_headers};
use std::hint::black_box;
use std::net::IpAddr;

fn typical_browser_request() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "shop.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("connection", "keep-alive"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
        ("x-forwarded-for", "203.0.113.9"),
    ] {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

fn bench_rewrite(c: &mut Criterion) {
    let template = typical_browser_request();
    let address: IpAddr = "192.0.2.10".parse().expect("literal address");
    let client = ClientIp::new(address);
    c.bench_function("rewrite_request_headers/browser", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |headers| rewrite_request_headers(black_box(headers), Some(&client), "http", None),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn bench_admission(c: &mut Criterion) {
    let headers = typical_browser_request();
    let limits = sluice::config::RequestLimits::default();
    let method = http::Method::GET;
    let uri: http::Uri = "/catalog/shoes?size=42&color=red"
        .parse()
        .expect("literal URI");
    c.bench_function("admission_check/browser", |b| {
        b.iter(|| {
            sluice::proxy::admission::check(
                black_box(&method),
                black_box(&uri),
                http::Version::HTTP_11,
                black_box(&headers),
                &limits,
            )
        })
    });
}

criterion_group!(benches, bench_rewrite, bench_admission);
criterion_main!(benches);
