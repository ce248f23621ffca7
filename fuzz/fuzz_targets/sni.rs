//! Fuzz target: arbitrary bytes into the TLS ClientHello parser that SNI passthrough uses
//! (`sluice::proxy::sni`).
//!
//! Beyond "never panics", it checks that the answer does not depend on how the bytes were
//! split: the input is fed the way `proxy::passthrough` reads it (exactly what `Incomplete`
//! asks for) and at pseudo-random split points, and each piece must either ask for more than
//! it has or give the same answer as the whole input. A name it returns must be one a route
//! can match: lowercase, no trailing dot, only DNS characters.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::proxy::sni::{Hello, MAX_HELLO, SniError, parse};

/// How many pseudo-random split points to try on each input, on top of the reader's own.
const SPLITS: usize = 8;

fuzz_target!(|data: &[u8]| check(data));

fn check(data: &[u8]) {
    let whole = parse(data);
    if let Ok(Hello::Complete { sni: Some(name) }) = &whole {
        assert!(!name.is_empty() && name.len() <= 253, "name {name:?}");
        assert!(!name.ends_with('.'), "name {name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
            "name {name:?}"
        );
    }
    if let Ok(Hello::Incomplete { needed }) = &whole {
        assert!(
            *needed > data.len(),
            "asks for {needed}, has {}",
            data.len()
        );
        assert!(*needed <= MAX_HELLO + 4 * 5, "asks for {needed}");
    }
    reader(data, &whole);
    let mut rng = seed(data);
    for _ in 0..SPLITS {
        if data.is_empty() {
            break;
        }
        rng = xorshift(rng);
        let cut = (rng % data.len() as u64) as usize;
        piece_agrees(&data[..cut], &whole);
    }
}

/// Feeds only as many bytes as the parser asks for, like the passthrough reader.
fn reader(data: &[u8], whole: &Result<Hello, SniError>) {
    let mut have = 0;
    loop {
        match parse(&data[..have]) {
            Ok(Hello::Incomplete { needed }) if needed > data.len() => {
                assert!(matches!(whole, Ok(Hello::Incomplete { .. })), "{whole:?}");
                return;
            }
            Ok(Hello::Incomplete { needed }) => {
                assert!(needed > have, "{have} bytes ask for {needed}");
                have = needed;
            }
            other => {
                assert_eq!(&other, whole, "stopped at {have} bytes");
                return;
            }
        }
    }
}

fn piece_agrees(piece: &[u8], whole: &Result<Hello, SniError>) {
    match parse(piece) {
        Ok(Hello::Incomplete { needed }) => assert!(needed > piece.len()),
        other => assert_eq!(&other, whole, "prefix of {} bytes", piece.len()),
    }
}

/// Split points come from the input itself (FNV-1a), so a crash replays exactly.
fn seed(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }) | 1
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}
