//! What a request head must be before anything of it goes to a backend, and the few fixes
//! every request gets first. Pure: a head and the listener's limits in, a verdict out.
//!
//! Checked (each a 4xx to the client, the connection closed, nothing sent upstream):
//! - sizes: the request line (414), one header line, all of them, their count (431), a
//!   declared body over the limit (413);
//! - HTTP/1.1 without exactly one valid `Host` (400, RFC 9112 §3.2);
//! - body framing a proxy must not guess at (RFC 9112 §6): `Transfer-Encoding` on HTTP/1.0,
//!   or any coding but a single `chunked` (400, or 501 for a coding sluice does not
//!   implement). hyper refuses the rest (bad chunk sizes, a bad `Content-Length`) while the
//!   body is read, which happens before a backend is picked. `Transfer-Encoding` together
//!   with `Content-Length` is refused here too, but hyper's server already applies RFC 9112
//!   §6.3 to such a head (drops the length, closes after the answer) before sluice sees it,
//!   so in practice that check guards only heads parsed elsewhere.
//!
//! Fixed:
//! - an absolute-form target (`GET http://a.example/x`) or HTTP/2's `:authority` names the
//!   host: it replaces any `Host` (RFC 9112 §3.2.2), for routing and for the backend;
//! - `Upgrade: h2c` is dropped with `HTTP2-Settings`, and the request served as plain
//!   HTTP/1.1: tunnelling it would let a client talk HTTP/2 to the backend past every route
//!   (h2c smuggling). nginx and HAProxy both still pass it.

use crate::config::RequestLimits;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

/// Why a request head is refused: the status, the client's text, and the metric's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub text: &'static str,
    /// The `reason` label of `sluice_client_errors_total`.
    pub reason: &'static str,
}

const fn refuse(status: StatusCode, text: &'static str, reason: &'static str) -> Refusal {
    Refusal {
        status,
        text,
        reason,
    }
}

pub const REQUEST_LINE_TOO_LONG: Refusal = refuse(
    StatusCode::URI_TOO_LONG,
    "request line too long\n",
    "request_line_too_long",
);
pub const HEADER_LINE_TOO_LONG: Refusal = refuse(
    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    "request header line too long\n",
    "header_line_too_long",
);
pub const HEADERS_TOO_LARGE: Refusal = refuse(
    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    "request headers too large\n",
    "headers_too_large",
);
pub const TOO_MANY_HEADERS: Refusal = refuse(
    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    "too many request headers\n",
    "too_many_headers",
);
pub const BAD_HOST: Refusal = refuse(
    StatusCode::BAD_REQUEST,
    "missing, repeated or invalid Host header\n",
    "bad_host",
);
pub const BAD_FRAMING: Refusal = refuse(
    StatusCode::BAD_REQUEST,
    "conflicting or invalid request body framing\n",
    "bad_framing",
);
pub const UNKNOWN_CODING: Refusal = refuse(
    StatusCode::NOT_IMPLEMENTED,
    "transfer coding not implemented\n",
    "unknown_transfer_coding",
);
pub const BODY_TOO_LARGE: Refusal = refuse(
    StatusCode::PAYLOAD_TOO_LARGE,
    "request body too large\n",
    "body_too_large",
);

/// Checks a request head against the listener's limits and HTTP's framing rules.
pub fn check(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    limits: &RequestLimits,
) -> Result<(), Refusal> {
    if request_line_length(method, uri) > limits.request_line {
        return Err(REQUEST_LINE_TOO_LONG);
    }
    if headers.len() > limits.header_count {
        return Err(TOO_MANY_HEADERS);
    }
    let mut total = 0;
    for (name, value) in headers {
        let line = name.as_str().len() + 2 + value.len();
        if line > limits.header_line {
            return Err(HEADER_LINE_TOO_LONG);
        }
        total += line + 2;
    }
    if total > limits.headers {
        return Err(HEADERS_TOO_LARGE);
    }
    if version == Version::HTTP_11 {
        check_host(headers, uri)?;
    }
    if version != Version::HTTP_2 {
        check_framing(headers, version)?;
    }
    if let Some(max) = limits.body
        && declared_length(headers).is_some_and(|length| length > max)
    {
        return Err(BODY_TOO_LARGE);
    }
    Ok(())
}

/// The request line as the client wrote it (`METHOD SP target SP HTTP/1.1`); for HTTP/2, the
/// same from `:method` and `:path`.
fn request_line_length(method: &Method, uri: &Uri) -> usize {
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len());
    method.as_str().len() + 1 + target + 1 + "HTTP/1.1".len()
}

/// RFC 9112 §3.2: exactly one `Host`, a valid `host[:port]`, no user info.
fn check_host(headers: &HeaderMap, uri: &Uri) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err(BAD_HOST);
    };
    if !valid_authority(host.as_bytes()) {
        return Err(BAD_HOST);
    }
    if let Some(authority) = uri.authority()
        && !valid_authority(authority.as_str().as_bytes())
    {
        return Err(BAD_HOST);
    }
    Ok(())
}

/// `host[:port]`: a name (letters, digits, `.-_~`) or a bracketed IPv6 address, and a
/// decimal port; no user info and nothing a header or a path could be smuggled in.
fn valid_authority(text: &[u8]) -> bool {
    let (host, port) = match text.iter().rposition(|&b| b == b':') {
        Some(colon) if !text[colon..].contains(&b']') => (&text[..colon], Some(&text[colon + 1..])),
        _ => (text, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(p).is_ok_and(|p| p.parse::<u16>().is_ok())
    });
    let host_ok = match host {
        [b'[', inner @ .., b']'] => {
            !inner.is_empty()
                && inner
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        _ => {
            !host.is_empty()
                && host
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~'))
        }
    };
    host_ok && port_ok
}

/// RFC 9112 §6.1 and §6.3: a single final `chunked` coding and no `Content-Length` beside
/// it, and no `Transfer-Encoding` at all on HTTP/1.0 (which has none).
fn check_framing(headers: &HeaderMap, version: Version) -> Result<(), Refusal> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_none() {
        return Ok(());
    }
    if version == Version::HTTP_10 || headers.contains_key(header::CONTENT_LENGTH) {
        return Err(BAD_FRAMING);
    }
    let mut chunked = 0;
    for value in codings {
        let Ok(text) = value.to_str() else {
            return Err(BAD_FRAMING);
        };
        for coding in text.split(',').map(str::trim) {
            if coding.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else if coding.is_empty() {
                return Err(BAD_FRAMING);
            } else {
                // gzip, deflate, compress: nothing sluice decodes, and forwarding the body
                // without them would change its meaning.
                return Err(UNKNOWN_CODING);
            }
        }
    }
    if chunked == 1 {
        Ok(())
    } else {
        Err(BAD_FRAMING)
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The fixes every request gets before routing: the target's authority replaces `Host`, and
/// an `h2c` upgrade is dropped. Call after `check`.
pub fn normalize(uri: &Uri, headers: &mut HeaderMap) {
    if let Some(value) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, value);
    }
    let h2c = headers.get_all(header::UPGRADE).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("h2c"))
        })
    });
    if h2c {
        headers.remove(header::UPGRADE);
        headers.remove("http2-settings");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, lines: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
        let mut headers = HeaderMap::new();
        for (name, value) in lines {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        (Method::GET, target.parse().unwrap(), headers)
    }

    fn verdict(target: &str, version: Version, lines: &[(&str, &str)]) -> Result<(), Refusal> {
        let (method, uri, headers) = head(target, lines);
        check(&method, &uri, version, &headers, &RequestLimits::default())
    }

    const HOST: (&str, &str) = ("host", "a.example");

    #[test]
    fn an_ordinary_request_passes() {
        assert_eq!(verdict("/x?y=1", Version::HTTP_11, &[HOST]), Ok(()));
        assert_eq!(verdict("/", Version::HTTP_10, &[]), Ok(()));
        assert_eq!(verdict("/", Version::HTTP_2, &[]), Ok(()));
        let chunked = [HOST, ("transfer-encoding", "Chunked")];
        assert_eq!(verdict("/", Version::HTTP_11, &chunked), Ok(()));
    }

    #[test]
    fn sizes_over_the_limits_get_414_and_431() {
        let limits = RequestLimits::default();
        let long_target = format!("/{}", "a".repeat(limits.request_line));
        assert_eq!(
            verdict(&long_target, Version::HTTP_11, &[HOST]),
            Err(REQUEST_LINE_TOO_LONG)
        );
        let fits = format!("/{}", "a".repeat(limits.request_line - 20));
        assert_eq!(verdict(&fits, Version::HTTP_11, &[HOST]), Ok(()));
        let long_value = "v".repeat(limits.header_line);
        assert_eq!(
            verdict("/", Version::HTTP_11, &[HOST, ("x-big", &long_value)]),
            Err(HEADER_LINE_TOO_LONG)
        );
        let value = "v".repeat(limits.header_line - 100);
        let many: Vec<(&str, &str)> = std::iter::once(HOST)
            .chain((0..5).map(|_| ("x-part", value.as_str())))
            .collect();
        assert_eq!(
            verdict("/", Version::HTTP_11, &many),
            Err(HEADERS_TOO_LARGE)
        );
        let count: Vec<(&str, &str)> = std::iter::once(HOST)
            .chain((0..limits.header_count).map(|_| ("x-n", "1")))
            .collect();
        assert_eq!(
            verdict("/", Version::HTTP_11, &count),
            Err(TOO_MANY_HEADERS)
        );
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        assert_eq!(verdict("/", Version::HTTP_11, &[]), Err(BAD_HOST));
        assert_eq!(
            verdict("/", Version::HTTP_11, &[HOST, ("host", "b.example")]),
            Err(BAD_HOST)
        );
        for bad in [
            "",
            "user@a.example",
            "a.example/x",
            "a example",
            "a.example:port",
        ] {
            assert_eq!(
                verdict("/", Version::HTTP_11, &[("host", bad)]),
                Err(BAD_HOST),
                "{bad:?}"
            );
        }
        for good in [
            "a.example:8080",
            "[::1]:80",
            "127.0.0.1",
            "xn--bcher-kva.example",
        ] {
            assert_eq!(
                verdict("/", Version::HTTP_11, &[("host", good)]),
                Ok(()),
                "{good}"
            );
        }
        let absolute_with_userinfo = verdict("http://u@b.example/", Version::HTTP_11, &[HOST]);
        assert_eq!(absolute_with_userinfo, Err(BAD_HOST));
    }

    #[test]
    fn body_framing_a_proxy_must_not_guess_is_refused() {
        let both = [
            HOST,
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
        ];
        assert_eq!(verdict("/", Version::HTTP_11, &both), Err(BAD_FRAMING));
        let twice = [HOST, ("transfer-encoding", "chunked, chunked")];
        assert_eq!(verdict("/", Version::HTTP_11, &twice), Err(BAD_FRAMING));
        let two_lines = [
            HOST,
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(verdict("/", Version::HTTP_11, &two_lines), Err(BAD_FRAMING));
        let empty = [HOST, ("transfer-encoding", "")];
        assert_eq!(verdict("/", Version::HTTP_11, &empty), Err(BAD_FRAMING));
        let gzip = [HOST, ("transfer-encoding", "gzip, chunked")];
        assert_eq!(verdict("/", Version::HTTP_11, &gzip), Err(UNKNOWN_CODING));
        let http10 = [("transfer-encoding", "chunked")];
        assert_eq!(verdict("/", Version::HTTP_10, &http10), Err(BAD_FRAMING));
    }

    #[test]
    fn a_declared_body_over_the_limit_is_413() {
        let (method, uri, headers) = head("/", &[HOST, ("content-length", "1001")]);
        let limits = RequestLimits {
            body: Some(1000),
            ..RequestLimits::default()
        };
        let verdict = check(&method, &uri, Version::HTTP_11, &headers, &limits);
        assert_eq!(verdict, Err(BODY_TOO_LARGE));
    }

    #[test]
    fn the_targets_authority_replaces_host() {
        let (_, uri, mut headers) = head("http://a.example/x", &[("host", "b.example")]);
        normalize(&uri, &mut headers);
        assert_eq!(headers[header::HOST], "a.example");
        let (_, uri, mut headers) = head("/x", &[("host", "b.example")]);
        normalize(&uri, &mut headers);
        assert_eq!(headers[header::HOST], "b.example");
    }

    #[test]
    fn an_h2c_upgrade_is_dropped_and_others_kept() {
        let (_, uri, mut headers) = head(
            "/",
            &[
                HOST,
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
                ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
            ],
        );
        normalize(&uri, &mut headers);
        assert!(!headers.contains_key(header::UPGRADE));
        assert!(!headers.contains_key("http2-settings"));
        let (_, uri, mut headers) = head("/", &[HOST, ("upgrade", "websocket")]);
        normalize(&uri, &mut headers);
        assert_eq!(headers[header::UPGRADE], "websocket");
    }
}
