//! Request heads read by sluice's own HTTP/1.1 server, pure: the bytes of one head in, an
//! `http::Request` out, or the verdict that hyper should take the connection from here.
//!
//! Only the common request is served here: HTTP/1.1, no body (no `Content-Length`, no
//! `Transfer-Encoding`), no `Upgrade`, no `Expect`, not `CONNECT`. Everything else, and every
//! head that is malformed or merely unusual, is handed to hyper with its bytes unread, so
//! hyper answers it exactly as before (a 400 for garbage, streaming for bodies, upgrades for
//! WebSocket). This path never has to decide whether a request is smuggling one: a request
//! with any body framing at all is not its to serve.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

/// Heads larger than this go to hyper (whose own limit then applies).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Header lines per head served here; more go to hyper (which allows 100).
const MAX_HEADERS: usize = 64;
/// Headers the proxy adds on the way to the backend (`X-Request-Id`, `X-Forwarded-For`,
/// `-Proto`, `-Host`): room for them up front, as growing a `HeaderMap` reallocates both of
/// its tables (that showed in allocation counts). Not more: a small request's map then stays
/// at 8 slots (624 bytes), which glibc serves from its per-thread cache; 16 slots do not fit
/// it and cost more than the growth they avoid.
const ROOM_FOR_ADDED_HEADERS: usize = 4;

/// What the front of the read buffer holds.
#[derive(Debug)]
// Not boxed: the enum lives on the stack for one match, and a box cost an allocation per
// request.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// Not a whole head yet: read more.
    Partial,
    /// One whole body-less request, removed from the buffer.
    Request(Request<()>),
    /// Not served here; the buffer is untouched.
    Handover,
}

/// Parses the request head at the front of `buf`; see `Parsed`.
pub fn parse_request(buf: &mut BytesMut) -> Parsed {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    let length = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD_BYTES => length,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => return Parsed::Partial,
        _ => return Parsed::Handover,
    };
    if parsed.version != Some(1) {
        return Parsed::Handover;
    }
    let Some(method) = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .filter(|m| m != Method::CONNECT)
    else {
        return Parsed::Handover;
    };
    let Some(path) = parsed.path else {
        return Parsed::Handover;
    };
    let base = buf.as_ptr() as usize;
    let path_span = span(base, path.as_bytes());
    // Where each header sits in the head, so that names and values are cut from the frozen
    // head without a copy each (as hyper does).
    let mut spans = [((0, 0), (0, 0)); MAX_HEADERS];
    let count = parsed.headers.len();
    for (slot, line) in spans.iter_mut().zip(parsed.headers.iter()) {
        if body_or_upgrade(line.name) {
            return Parsed::Handover;
        }
        *slot = (span(base, line.name.as_bytes()), span(base, line.value));
    }
    let head = buf.split_to(length).freeze();
    match build(&head, method, path_span, &spans[..count]) {
        Some(request) => Parsed::Request(request),
        None => {
            // Put the head back for hyper: it is rare (a target `Uri` refuses, say), so the
            // copy does not matter.
            let rest = buf.split();
            buf.extend_from_slice(&head);
            buf.extend_from_slice(&rest);
            Parsed::Handover
        }
    }
}

type Span = (usize, usize);

fn span(base: usize, part: &[u8]) -> Span {
    let start = part.as_ptr() as usize - base;
    (start, start + part.len())
}

/// Headers that mean a body, a protocol switch or an interim response: hyper's business.
fn body_or_upgrade(name: &str) -> bool {
    ["content-length", "transfer-encoding", "upgrade", "expect"]
        .iter()
        .any(|handed| name.eq_ignore_ascii_case(handed))
}

fn build(
    head: &Bytes,
    method: Method,
    (path_start, path_end): Span,
    spans: &[(Span, Span)],
) -> Option<Request<()>> {
    let uri = Uri::from_maybe_shared(head.slice(path_start..path_end)).ok()?;
    let mut headers = HeaderMap::with_capacity(spans.len() + ROOM_FOR_ADDED_HEADERS);
    for &((name_start, name_end), (value_start, value_end)) in spans {
        let name = HeaderName::from_bytes(&head[name_start..name_end]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end)).ok()?;
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(request)
}

/// Whether the client asked to close the connection after this request.
pub fn wants_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(text.as_bytes());
        let parsed = parse_request(&mut buf);
        (parsed, buf)
    }

    #[test]
    fn a_simple_get_is_served_and_the_next_request_stays_in_the_buffer() {
        let (parsed, rest) =
            parse("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\nGET /");
        let Parsed::Request(request) = parsed else {
            panic!("not served: {parsed:?}");
        };
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path_and_query().unwrap().as_str(), "/a?b=1");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["host"], "x");
        let values: Vec<_> = request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(&rest[..], b"GET /");
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: x\r\n").0,
            Parsed::Partial
        ));
        assert!(matches!(parse("GE").0, Parsed::Partial));
    }

    #[test]
    fn bodies_upgrades_and_unusual_requests_are_handed_over_untouched() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "GET / HTTP/1.1\r\n folded: x\r\n\r\n",
            "G\0T / HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let (parsed, rest) = parse(text);
            assert!(matches!(parsed, Parsed::Handover), "{text:?}: {parsed:?}");
            assert_eq!(&rest[..], text.as_bytes(), "{text:?}");
        }
    }

    #[test]
    fn a_head_too_large_or_with_too_many_headers_is_handed_over() {
        let long = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert!(matches!(parse(&long).0, Parsed::Handover));
        let unfinished = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(matches!(parse(&unfinished).0, Parsed::Handover));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(&text).0, Parsed::Handover));
    }

    #[test]
    fn connection_close_is_read_from_any_token() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!wants_close(&headers));
        headers.append(header::CONNECTION, HeaderValue::from_static("foo, Close"));
        assert!(wants_close(&headers));
    }

    /// Requests as clients write them: common and unusual methods, targets and versions,
    /// fields that are served here and fields that hand over, bare LF line endings, another
    /// request or noise after the head; one byte sometimes replaced.
    fn request_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        const LINES: [&str; 8] = [
            "GET / HTTP/1.1",
            "HEAD /a?b=c HTTP/1.1",
            "OPTIONS * HTTP/1.1",
            "GET http://example.com/x HTTP/1.1",
            "POST /form HTTP/1.1",
            "GET / HTTP/1.0",
            "CONNECT example.com:443 HTTP/1.1",
            "G@T / HTTP/1.1",
        ];
        const FIELDS: [&str; 10] = [
            "Host: example.com",
            "x-a: 1",
            "X-A: two words",
            "Connection: close",
            "Content-Length: 3",
            "transfer-encoding: chunked",
            "Upgrade: websocket",
            "Bad Name: x",
            " folded",
            "x-obs: caf\u{e9}",
        ];
        crate::wire_strategy::heads(&LINES, &FIELDS)
    }

    /// A verdict with what is left in the buffer, comparable.
    type Verdict = (
        Option<(Method, Uri, Version, HeaderMap)>,
        Option<()>,
        Vec<u8>,
    );

    fn verdict(input: &[u8]) -> Verdict {
        let mut buf = BytesMut::from(input);
        let (request, partial) = match parse_request(&mut buf) {
            Parsed::Partial => (None, Some(())),
            Parsed::Handover => (None, None),
            Parsed::Request(r) => (
                Some((
                    r.method().clone(),
                    r.uri().clone(),
                    r.version(),
                    r.headers().clone(),
                )),
                None,
            ),
        };
        (request, partial, buf.to_vec())
    }

    proptest::proptest! {
        /// Whatever TCP splits: each prefix of the bytes asks for more, or already gives the
        /// whole input's verdict (the same request and the same bytes after it, or a handover
        /// with the buffer untouched), never a different one. The fuzz target
        /// `fuzz/fuzz_targets/request.rs` also compares what is served with hyper's server.
        #[test]
        fn every_prefix_is_partial_or_the_whole_verdict(input in request_bytes()) {
            let whole = verdict(&input);
            if whole.0.is_none() {
                proptest::prop_assert_eq!(&whole.2[..], &input[..], "not served: untouched");
            }
            for cut in 0..input.len() {
                let (request, partial, rest) = verdict(&input[..cut]);
                if partial.is_some() {
                    proptest::prop_assert_eq!(&rest[..], &input[..cut]);
                    continue;
                }
                proptest::prop_assert_eq!(&request, &whole.0, "cut {}", cut);
                proptest::prop_assert!(whole.1.is_none(), "cut {}: final before the whole", cut);
                let consumed = input.len() - whole.2.len();
                proptest::prop_assert_eq!(&rest[..], &input[consumed..cut], "cut {}", cut);
            }
        }
    }
}
