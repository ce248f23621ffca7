//! Fuzz target, differential: arbitrary bytes as a chunked response body (RFC 9112 7.1), read
//! by sluice's `upstream::h1::chunked::ChunkedDecoder` and by hyper's client, the reference.
//!
//! The bytes follow a fixed `200 OK` head with `Transfer-Encoding: chunked`, so every input
//! exercises the decoder. sluice must give the same verdict, decoded bytes and trailers fed
//! whole or in pieces (at many split points: the decoder keeps state between reads), and must
//! never accept a body hyper refuses: what it decodes, hyper decodes the same, ending on the
//! same byte; a body sluice still waits on is not a whole one to hyper either.

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
/// Pseudo-random split points tried on each input, on top of reading it whole.
const SPLITS: usize = 12;

fuzz_target!(|data: &[u8]| {
    let stream = [HEAD, data].concat();
    // Split points within the body (the head is tested by the `response` target).
    let cuts: Vec<usize> = sluice_fuzz::cuts(data, data.len() + 1, SPLITS)
        .into_iter()
        .map(|cut| HEAD.len() + cut)
        .collect();
    sluice_fuzz::check_response(&Method::GET, &stream, &cuts);
});
