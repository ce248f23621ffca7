//! HTTP/1.1 message heads between sluice and a backend, pure: the request head written to the
//! backend and the response head read back, with the body framing both imply (RFC 9112).
//!
//! Response header values are slices of the bytes read from the socket (no copy per header),
//! as hyper does; names go through `HeaderName`'s table of standard names.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use std::mem::MaybeUninit;

/// Response heads larger than this are refused (nginx's default `proxy_buffer_size` is 4-8
/// KiB, HAProxy's `tune.bufsize` 16 KiB; 64 KiB leaves room for large cookies).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Response header lines per head; more is refused (hyper's client allows 100).
const MAX_HEADERS: usize = 128;

/// Why a backend's response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed response head from the backend ({0})")]
    Malformed(&'static str),
    #[error("response head over {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("the request target cannot be written on an HTTP/1 request line")]
    BadTarget,
}

/// How the request body follows the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body: headers are written as they are.
    Empty,
    /// Exactly this many bytes; `Content-Length` is written by sluice.
    Length(u64),
    /// Streamed without a known length: `Transfer-Encoding: chunked`.
    Chunked,
}

/// Writes `METHOD target HTTP/1.1`, the headers (already rewritten for the backend: no
/// hop-by-hop headers) and the framing header for the body into `out`.
pub fn encode_request(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
) -> Result<(), HeadError> {
    // The target came from a parsed URI, but a route's prefix strip could leave it empty, and
    // a space or control byte here would split the request line: refuse rather than smuggle.
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HeadError::BadTarget);
    }
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let framed_by_us = framing != RequestFraming::Empty;
    for (name, value) in headers {
        if framed_by_us && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING) {
            continue;
        }
        push_header(out, name, value);
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(length) => push_content_length(out, length),
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends one `name: value` header line (requests, responses and trailers alike).
pub fn push_header(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a `content-length` line for a body framed by sluice.
pub fn push_content_length(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, length);
    out.extend_from_slice(b"\r\n");
}

pub fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
}

/// Parses one response head from the front of `buf`, removing it from `buf`. `Ok(None)`: the
/// head is not complete yet (read more and call again).
pub fn parse_response(buf: &mut BytesMut) -> Result<Option<ResponseHead>, HeadError> {
    // Uninitialised slots, and spans sized to the headers found: a zeroed array of each for
    // 128 headers (8 KiB) was 12% of sluice's own instructions per keep-alive request
    // (callgrind), more than the allocation of a list of the right size.
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    );
    let length = match parsing {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Malformed("too many headers"));
        }
        Err(_) => return Err(HeadError::Malformed("not an HTTP/1 response")),
    };
    if length > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(HeadError::Malformed("bad status code"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where each header sits in the head (on the stack: no allocation per response), so
    // names and values can be cut from it without copying once it is split off the buffer.
    let base = buf.as_ptr() as usize;
    let count = parsed.headers.len();
    let mut spans = Vec::with_capacity(count);
    for line in parsed.headers.iter() {
        let name = line.name.as_ptr() as usize - base;
        let value = line.value.as_ptr() as usize - base;
        spans.push((
            name,
            name + line.name.len(),
            value,
            value + line.value.len(),
        ));
    }
    let head = buf.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(count + ROOM_FOR_ADDED_HEADERS);
    for (name_start, name_end, value_start, value_end) in spans {
        let name = HeaderName::from_bytes(&head[name_start..name_end])
            .map_err(|_| HeadError::Malformed("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| HeadError::Malformed("bad header value"))?;
        headers.append(name, value);
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
    }))
}

/// Reads the final response head to `method` from the front of `buf`, removing it and any 1xx
/// interim responses before it (`101 Switching Protocols` is final: the caller refuses it, as
/// sluice never asks for an upgrade on this path), with the body framing it implies.
/// `Ok(None)`: read more and call again.
pub fn parse_final_response(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<(ResponseHead, Framing)>, HeadError> {
    while let Some(head) = parse_response(buf)? {
        if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        let framing = response_framing(method, head.status, head.version, &head.headers)?;
        return Ok(Some((head, framing)));
    }
    Ok(None)
}

/// Headers the proxy adds to a response on its way back (`X-Request-Id`): room up front, as
/// growing a `HeaderMap` reallocates both of its tables (that showed in allocation counts of
/// the keep-alive path). Not more: a small response's map then stays at 8 slots, which glibc
/// serves from its per-thread cache (16 slots, 1,248 bytes, do not fit it).
const ROOM_FOR_ADDED_HEADERS: usize = 1;

/// How the response body is delimited (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection (no length, not chunked).
    UntilClose,
}

/// The body framing of a response to `method`.
pub fn response_framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<Framing, HeadError> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::None);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // RFC 9112 6.1: Transfer-Encoding is HTTP/1.1's; an HTTP/1.0 message carrying it was
        // likely passed on by something that did not decode it, and its framing "MUST" be
        // treated as faulty (hyper's client refuses it too).
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed(
                "transfer-encoding in an HTTP/1.0 response",
            ));
        }
        // Chunked must be the final coding; anything else is read until close. A length next
        // to it is ignored (and would be a smuggling attempt toward the client: not passed).
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let parsed = parse_length(item.trim_ascii())
                .ok_or(HeadError::Malformed("bad content-length"))?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(HeadError::Malformed("conflicting content-length"));
            }
            length = Some(parsed);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |total, &b| {
        b.is_ascii_digit().then(|| total * 10 + u64::from(b - b'0'))
    })
}

/// Whether the backend lets the connection carry another request after this response.
pub fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (version == Version::HTTP_11 || keep_alive)
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
