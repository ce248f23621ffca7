//! Fuzz target, differential: arbitrary bytes from a client, read by sluice's own HTTP/1.1
//! server (`proxy::h1::request::parse_request`) and by hyper's server, the reference (which
//! also serves every request sluice hands over).
//!
//! sluice serves pipelined requests one after another until one is not its own (`Handover`:
//! hyper takes it, with the buffer untouched) or asks to close. Every request it serves must
//! be one hyper reads too, at the same place in the stream: same method, target, version and
//! headers, and no body (hyper reads a body from `Content-Length` or `Transfer-Encoding`,
//! which sluice never serves; a request hyper gave a body would shift every request after it).
//! Beside hyper, the rules sluice claims for what it serves (RFC 9112): HTTP/1.1 only, no
//! framing, upgrade or expectation header, not `CONNECT`, and the head delimits itself: the
//! head alone parses the same, and each shorter prefix of it asks for more.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice::proxy::h1::request::{Parsed, parse_request, wants_close};
use sluice_fuzz::RequestSeen;

/// Pseudo-random prefixes of each served head tried, on top of the head alone.
const SPLITS: usize = 6;

fuzz_target!(|data: &[u8]| check(data));

fn check(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut served = Vec::new();
    loop {
        let before = buf.clone();
        match parse_request(&mut buf) {
            Parsed::Partial => break,
            Parsed::Handover => {
                assert_eq!(buf, before, "a handed-over buffer was changed");
                break;
            }
            Parsed::Request(request) => {
                let head = &before[..before.len() - buf.len()];
                let seen = RequestSeen::new(&request, true);
                rfc_rules(&seen, head);
                self_delimiting(head, &seen);
                served.push(seen);
                if wants_close(request.headers()) {
                    break;
                }
            }
        }
    }
    if served.is_empty() {
        return;
    }
    let reference = sluice_fuzz::hyper_requests(data);
    for (at, seen) in served.iter().enumerate() {
        let Some(theirs) = reference.get(at) else {
            panic!("sluice served request {at} ({seen:?}); hyper read only {reference:?}");
        };
        assert_eq!(
            seen, theirs,
            "request {at}: sluice and hyper read it differently"
        );
    }
}

fn rfc_rules(seen: &RequestSeen, head: &[u8]) {
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_ne!(seen.method, http::Method::CONNECT);
    for (name, _) in &seen.headers {
        assert!(
            !["content-length", "transfer-encoding", "upgrade", "expect"].contains(&name.as_str()),
            "served a request with {name}"
        );
    }
    assert!(
        head.ends_with(b"\n\r\n") || head.ends_with(b"\n\n"),
        "head does not end with an empty line: {head:?}"
    );
}

/// The head alone gives the same request and leaves nothing; any shorter prefix asks for more.
fn self_delimiting(head: &[u8], seen: &RequestSeen) {
    let mut alone = BytesMut::from(head);
    match parse_request(&mut alone) {
        Parsed::Request(request) => {
            assert_eq!(&RequestSeen::new(&request, true), seen);
            assert!(alone.is_empty());
        }
        other => panic!("the head alone gives {other:?}"),
    }
    for cut in sluice_fuzz::cuts(head, head.len(), SPLITS) {
        let mut prefix = BytesMut::from(&head[..cut]);
        let parsed = parse_request(&mut prefix);
        assert!(
            matches!(parsed, Parsed::Partial),
            "a prefix of {cut} bytes gives {parsed:?}"
        );
    }
}
