//! Response heads written by sluice's own HTTP/1.1 server, pure: the status line, the headers,
//! and how the body is framed, with the rules hyper's server follows so that a client sees
//! the same bytes whichever of the two served it (RFC 9112 6).

use super::request::wants_close;
use crate::upstream::h1::head::{push_content_length, push_header};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use std::cell::Cell;

/// How the body follows the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// No body is sent (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, ended by the last chunk (with trailers if any).
    Chunked,
}

/// What the body says of itself before it is read.
#[derive(Debug, Clone, Copy)]
pub struct BodyHint {
    pub end_stream: bool,
    pub exact: Option<u64>,
}

/// About how many bytes `encode_head` writes for these headers: theirs, plus room for the
/// status line and the headers sluice adds (`date`, `content-length`, `connection`).
pub fn head_size_hint(headers: &HeaderMap) -> usize {
    const STATUS_AND_ADDED: usize = 128;
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + STATUS_AND_ADDED
}

/// Writes the head of a response to `out` and says how its body must be framed. `close`: the
/// connection closes after this response (the client asked, or sluice is stopping).
pub fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &mut HeaderMap,
    hint: BodyHint,
    head_request: bool,
    close: bool,
) -> BodyPlan {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // Framing is sluice's to decide on this hop; a stray header from elsewhere must not
    // contradict it.
    headers.remove(header::TRANSFER_ENCODING);
    let plan = framing(status, headers, hint, head_request);
    for (name, value) in headers.iter() {
        push_header(out, name, value);
    }
    match plan {
        BodyPlan::Length(length) if !headers.contains_key(header::CONTENT_LENGTH) => {
            push_content_length(out, length);
        }
        BodyPlan::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if close && !wants_close(headers) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    plan
}

fn framing(
    status: StatusCode,
    headers: &mut HeaderMap,
    hint: BodyHint,
    head_request: bool,
) -> BodyPlan {
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        headers.remove(header::CONTENT_LENGTH);
        return BodyPlan::None;
    }
    if status == StatusCode::NOT_MODIFIED {
        return BodyPlan::None;
    }
    let declared = match headers.get(header::CONTENT_LENGTH) {
        Some(value) if headers.get_all(header::CONTENT_LENGTH).iter().count() == 1 => {
            std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
        }
        _ => None,
    };
    let plan = match declared {
        Some(length) => BodyPlan::Length(length),
        None => {
            // A missing or unusable Content-Length: sluice frames the body itself.
            headers.remove(header::CONTENT_LENGTH);
            if hint.end_stream {
                BodyPlan::Length(0)
            } else {
                hint.exact.map_or(BodyPlan::Chunked, BodyPlan::Length)
            }
        }
    };
    if head_request {
        // The headers say what a GET would have got; no body follows.
        if let BodyPlan::Length(length) = plan
            && !headers.contains_key(header::CONTENT_LENGTH)
        {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        return BodyPlan::None;
    }
    plan
}

/// Length of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
const DATE_LEN: usize = 29;

thread_local! {
    /// The `Date` value of the current second: formatted once a second per thread.
    static DATE: Cell<(u64, [u8; DATE_LEN])> = const { Cell::new((u64::MAX, [0; DATE_LEN])) };
}

// The `Date` header is a wall-clock timestamp (RFC 9110 6.6.1), not a measure of time passing.
#[allow(clippy::disallowed_types)]
fn push_date(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (cached_second, mut text) = DATE.get();
    if cached_second != second {
        let formatted = httpdate::fmt_http_date(now);
        if formatted.len() == DATE_LEN {
            text.copy_from_slice(formatted.as_bytes());
            DATE.set((second, text));
        } else {
            out.extend_from_slice(formatted.as_bytes());
            return;
        }
    }
    out.extend_from_slice(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: BodyHint = BodyHint {
        end_stream: false,
        exact: None,
    };

    fn encode(
        status: u16,
        headers: &[(&str, &str)],
        hint: BodyHint,
        head_request: bool,
        close: bool,
    ) -> (String, BodyPlan) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut out = Vec::new();
        let status = StatusCode::from_u16(status).unwrap();
        let plan = encode_head(&mut out, status, &mut map, hint, head_request, close);
        (String::from_utf8(out).unwrap(), plan)
    }

    #[test]
    fn a_declared_length_is_kept_and_frames_the_body() {
        let (text, plan) = encode(
            200,
            &[("content-length", "13"), ("date", "d")],
            STREAM,
            false,
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-length: 13\r\ndate: d\r\n\r\n"
        );
        assert_eq!(plan, BodyPlan::Length(13));
    }

    #[test]
    fn an_unknown_length_is_chunked_and_a_known_one_is_declared() {
        let (text, plan) = encode(200, &[("date", "d")], STREAM, false, false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: d\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(plan, BodyPlan::Chunked);
        let exact = BodyHint {
            end_stream: false,
            exact: Some(5),
        };
        let (text, plan) = encode(503, &[("date", "d")], exact, false, false);
        assert_eq!(
            text,
            "HTTP/1.1 503 Service Unavailable\r\ndate: d\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(plan, BodyPlan::Length(5));
        let empty = BodyHint {
            end_stream: true,
            exact: Some(0),
        };
        let (text, _) = encode(200, &[("date", "d")], empty, false, false);
        assert!(text.contains("content-length: 0\r\n"), "{text}");
    }

    #[test]
    fn a_stray_transfer_encoding_or_a_bad_length_is_replaced_by_our_framing() {
        let (text, plan) = encode(
            200,
            &[
                ("transfer-encoding", "gzip"),
                ("content-length", "x"),
                ("date", "d"),
            ],
            STREAM,
            false,
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: d\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(plan, BodyPlan::Chunked);
        let (_, plan) = encode(
            200,
            &[("content-length", "3"), ("content-length", "4")],
            STREAM,
            false,
            false,
        );
        assert_eq!(plan, BodyPlan::Chunked);
    }

    #[test]
    fn head_204_and_304_responses_have_no_body() {
        let (text, plan) = encode(
            200,
            &[("content-length", "13"), ("date", "d")],
            STREAM,
            true,
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-length: 13\r\ndate: d\r\n\r\n"
        );
        assert_eq!(plan, BodyPlan::None);
        let (text, plan) = encode(200, &[("date", "d")], STREAM, true, false);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ndate: d\r\n\r\n");
        assert_eq!(plan, BodyPlan::None);
        let (text, plan) = encode(
            204,
            &[("content-length", "0"), ("date", "d")],
            STREAM,
            false,
            false,
        );
        assert_eq!(text, "HTTP/1.1 204 No Content\r\ndate: d\r\n\r\n");
        assert_eq!(plan, BodyPlan::None);
        let (_, plan) = encode(304, &[("content-length", "10")], STREAM, false, false);
        assert_eq!(plan, BodyPlan::None);
    }

    #[test]
    fn date_and_connection_close_are_added_when_missing() {
        let (text, _) = encode(200, &[("content-length", "0")], STREAM, false, true);
        let date = text
            .lines()
            .find_map(|line| line.strip_prefix("date: "))
            .expect("a date header");
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
        let (text, _) = encode(
            200,
            &[("connection", "close"), ("date", "d")],
            STREAM,
            false,
            true,
        );
        assert_eq!(text.matches("close").count(), 1, "{text}");
    }
}
