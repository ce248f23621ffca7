//! Criterion benchmarks for the HTTP/1 heads on the keep-alive path: parsing the client's
//! request and writing its response head (sluice's own server, `proxy::h1`), writing the
//! request to the backend and parsing the backend's response head (the client,
//! `upstream::h1::head`). Each runs once per proxied request.

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use sluice::proxy::h1::request::{Parsed, parse_request};
use sluice::proxy::h1::response::{BodyHint, encode_head};
use sluice::upstream::h1::head::{RequestFraming, encode_request, parse_response};
use std::hint::black_box;

const BROWSER_REQUEST: &[u8] = b"GET /catalog/item?id=4711&ref=home HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\
Cookie: session=0123456789abcdef; theme=dark\r\n\r\n";

const BACKEND_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Length: 5120\r\n\
Cache-Control: private, max-age=0\r\n\
Date: Wed, 25 Nov 2026 03:00:00 GMT\r\n\
Server: app/1.0\r\n\r\n";

fn request_headers() -> HeaderMap {
    let mut buf = BytesMut::from(BROWSER_REQUEST);
    match parse_request(&mut buf) {
        Parsed::Request(request) => request.headers().clone(),
        other => panic!("the benchmark's request did not parse: {other:?}"),
    }
}

fn response_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "5120"),
        ("cache-control", "private, max-age=0"),
        ("server", "app/1.0"),
        ("x-request-id", "0123456789abcdef0123456789abcdef"),
    ] {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

fn bench_server(c: &mut Criterion) {
    c.bench_function("h1_server/parse_request/browser", |b| {
        b.iter_batched_ref(
            || BytesMut::from(BROWSER_REQUEST),
            |buf| parse_request(black_box(buf)),
            BatchSize::SmallInput,
        )
    });
    let template = response_headers();
    let hint = BodyHint {
        end_stream: false,
        exact: Some(5120),
    };
    c.bench_function("h1_server/encode_head/typical", |b| {
        b.iter_batched_ref(
            || (Vec::with_capacity(512), template.clone()),
            |(out, headers)| encode_head(out, StatusCode::OK, headers, hint, false, false),
            BatchSize::SmallInput,
        )
    });
}

fn bench_client(c: &mut Criterion) {
    let headers = request_headers();
    let mut out = Vec::with_capacity(1024);
    c.bench_function("h1_client/encode_request/browser", |b| {
        b.iter(|| {
            out.clear();
            encode_request(
                &mut out,
                &Method::GET,
                black_box("/catalog/item?id=4711&ref=home"),
                black_box(&headers),
                RequestFraming::Empty,
            )
        })
    });
    c.bench_function("h1_client/parse_response/typical", |b| {
        b.iter_batched_ref(
            || BytesMut::from(BACKEND_RESPONSE),
            |buf| parse_response(black_box(buf)),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench_server, bench_client);
criterion_main!(benches);
