//! Fuzz target: arbitrary bytes into the PROXY protocol parser (`sluice::proxy_protocol`).
//!
//! Beyond "never panics", it checks what the socket reader in `proxy::accept` relies on:
//! `Incomplete` always asks for more than it has (else the reader would spin), a header's
//! length never exceeds the input, every prefix of the input either asks for more or gives
//! the whole input's answer (so the result does not depend on how TCP split the bytes), a
//! reader that reads exactly what is asked for never reads past the header, and a parsed
//! header re-encoded by `proxy_protocol::encode` parses back to the same addresses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::SendProxy;
use sluice::proxy_protocol::{Header, Parsed, encode, encode_unknown, parse};
use std::net::SocketAddr;

/// The largest header there is: the v2 fixed part and a 16-bit length.
const MAX_HEADER: usize = 16 + 0xffff;

fuzz_target!(|data: &[u8]| check(data));

fn check(data: &[u8]) {
    let whole = parse(data);
    match &whole {
        Ok(Parsed::Incomplete { needed }) => {
            assert!(
                *needed > data.len(),
                "asks for {needed}, has {}",
                data.len()
            );
            assert!(*needed <= MAX_HEADER, "asks for {needed}");
        }
        Ok(Parsed::Complete { header, consumed }) => {
            assert!(*consumed > 0 && *consumed <= data.len());
            // The header delimits itself: the bytes after it change nothing.
            assert_eq!(parse(&data[..*consumed]), whole);
            roundtrip(header);
        }
        Err(_) => {}
    }
    prefixes_agree(data, &whole);
}

/// Every split of the input: a prefix asks for more (never more than the header the whole
/// input holds) or already gives the whole input's answer.
fn prefixes_agree(data: &[u8], whole: &Result<Parsed, sluice::proxy_protocol::ParseError>) {
    let consumed = match whole {
        Ok(Parsed::Complete { consumed, .. }) => Some(*consumed),
        _ => None,
    };
    for cut in 0..data.len() {
        match parse(&data[..cut]) {
            Ok(Parsed::Incomplete { needed }) => {
                assert!(needed > cut, "prefix {cut} asks for {needed}");
                if let Some(consumed) = consumed {
                    assert!(needed <= consumed, "prefix {cut} asks past the header");
                }
            }
            other => {
                assert_eq!(&other, whole, "prefix of {cut} bytes disagrees");
                // Parsing only ever reads a header's own bytes, so a result is final.
                if let Ok(Parsed::Complete { consumed, .. }) = other {
                    assert!(consumed <= cut);
                }
            }
        }
    }
}

/// Encoding what was parsed, in both versions, and parsing that gives the same addresses
/// (IPv4-mapped IPv6 may come back as IPv4: the encoder writes one family for both), and
/// encoding is a fixed point after one round.
fn roundtrip(header: &Header) {
    for version in [SendProxy::V1, SendProxy::V2] {
        let Header::Proxied {
            source,
            destination,
        } = *header
        else {
            let bytes = encode_unknown(version);
            let expected = Parsed::Complete {
                header: Header::Local,
                consumed: bytes.len(),
            };
            assert_eq!(parse(&bytes), Ok(expected));
            continue;
        };
        let bytes = encode(version, source, destination);
        let Ok(Parsed::Complete {
            header:
                Header::Proxied {
                    source: s,
                    destination: d,
                },
            consumed,
        }) = parse(&bytes)
        else {
            panic!("{version:?} encoding of {header:?} does not parse: {bytes:?}");
        };
        assert_eq!(consumed, bytes.len());
        assert_same(source, s);
        assert_same(destination, d);
        assert_eq!(encode(version, s, d), bytes, "encoding is not stable");
    }
}

fn assert_same(original: SocketAddr, reparsed: SocketAddr) {
    assert_eq!(original.port(), reparsed.port());
    assert_eq!(original.ip().to_canonical(), reparsed.ip().to_canonical());
}
