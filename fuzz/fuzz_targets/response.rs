//! Fuzz target, differential: arbitrary bytes as a backend's answer, read by sluice's HTTP/1
//! client (`upstream::h1::head::parse_final_response`, then the body in the framing it gives)
//! and by hyper's client, the reference.
//!
//! The first byte picks the request method (odd: `HEAD`, whose answer has no body; even:
//! `GET`); the rest is the stream from the backend. sluice must reach the same verdict fed
//! whole or in pieces, and must never accept a response hyper refuses: every message it
//! accepts, hyper reads with the same status, version, headers, body and trailers, ending on
//! the same byte; a stream sluice still waits on must not be a whole response to hyper. Where
//! sluice refuses what hyper accepts, it is stricter: allowed. See
//! `sluice_fuzz::check_response`.

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;

/// Pseudo-random split points tried on each input, on top of reading it whole.
const SPLITS: usize = 6;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let method = if pick & 1 == 1 {
        Method::HEAD
    } else {
        Method::GET
    };
    let cuts = sluice_fuzz::cuts(data, stream.len(), SPLITS);
    sluice_fuzz::check_response(&method, stream, &cuts);
});
