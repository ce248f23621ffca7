//! Response compression: whether a backend's response is compressed, with which coding, and
//! the header changes that go with it. The streaming encoder is in `encoder.rs`; the body
//! drives it frame by frame (`proxy::body`).
//!
//! Never compressed: an answer to HEAD; 1xx, 204, 206 and 304; a response that already has a
//! `Content-Encoding` (other than identity) or a `Content-Range`; `Cache-Control:
//! no-transform` (RFC 9111 §5.2.2.6); a type outside the list; a declared length under
//! `min_size` (an unknown length is compressed). A response that could be compressed gets
//! `Vary: Accept-Encoding` even when this client did not ask (so a cache does not hand the
//! plain one to a client that could take less, or the other way round). A compressed one loses
//! `Content-Length` (the body streams) and `Accept-Ranges` (ranges of the plain body do not
//! apply), and a strong `ETag` is made weak (the bytes changed, the meaning did not; RFC 9110
//! §8.8.1, as nginx does).
//!
//! The coding is the one the client weighs highest in `Accept-Encoding` (q-values), the
//! configured order deciding ties; none when the client sent no `Accept-Encoding`.

pub mod encoder;

use crate::config::compression::{Coding, Compression};
use crate::negotiate::coding_weight;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not a response that compression applies to: left as it is.
    Skip,
    /// Could be compressed, but this client takes none of the codings: `Vary` only.
    VaryOnly,
    Compress(Coding),
}

pub fn decide(
    config: &Compression,
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
) -> Decision {
    if !eligible(config, method, status, response) {
        return Decision::Skip;
    }
    let mut best: Option<(u16, Coding)> = None;
    for &coding in &config.algorithms {
        let weight = coding_weight(request, coding.token());
        if weight > 0 && best.is_none_or(|(w, _)| weight > w) {
            best = Some((weight, coding));
        }
    }
    match best {
        Some((_, coding)) => Decision::Compress(coding),
        None => Decision::VaryOnly,
    }
}

fn eligible(
    config: &Compression,
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
) -> bool {
    if method == Method::HEAD
        || status.is_informational()
        || matches!(status.as_u16(), 204 | 206 | 304)
        || headers.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    let encoded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return false;
    }
    let no_transform = headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|text| {
            text.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    });
    if no_transform {
        return false;
    }
    let too_small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .is_some_and(|length| length < config.min_size);
    if too_small {
        return false;
    }
    let Some(media) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|t| t.split(';').next().unwrap_or("").trim())
    else {
        return false;
    };
    config
        .types
        .iter()
        .any(|wanted| type_matches(wanted, media))
}

/// `text/*` matches any `text/...`; otherwise the whole `type/subtype`, case-insensitively.
fn type_matches(wanted: &str, media: &str) -> bool {
    match wanted.strip_suffix("/*") {
        Some(kind) => media
            .split_once('/')
            .is_some_and(|(k, _)| k.eq_ignore_ascii_case(kind)),
        None => media.eq_ignore_ascii_case(wanted),
    }
}

/// The header changes of `decision` (see the module comment).
pub fn rewrite_headers(headers: &mut HeaderMap, decision: Decision) {
    let coding = match decision {
        Decision::Skip => return,
        Decision::VaryOnly => None,
        Decision::Compress(coding) => Some(coding),
    };
    let varies = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|text| {
            text.split(',').any(|name| {
                let name = name.trim();
                name == "*" || name.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    let Some(coding) = coding else {
        return;
    };
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    if let Some(etag) = headers.get(header::ETAG)
        && etag.as_bytes().starts_with(b"\"")
    {
        let mut weak = Vec::with_capacity(etag.len() + 2);
        weak.extend_from_slice(b"W/");
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, value);
        }
    }
}

/// Decides for one backend response and, when it is compressed, rewrites its headers and
/// wraps its body. An encoder that cannot be made (zstd out of memory) leaves it plain.
pub fn apply(
    config: &Compression,
    method: &Method,
    request: &HeaderMap,
    response: &mut http::response::Parts,
    body: crate::proxy::body::ProxyBody,
    listener: &str,
) -> crate::proxy::body::ProxyBody {
    let mut decision = decide(config, method, request, response.status, &response.headers);
    let mut encoder = None;
    if let Decision::Compress(coding) = decision {
        match encoder::Encoder::new(coding, config) {
            Ok(mut made) => {
                let counters = crate::metrics::http_edge::compression(listener, coding.token());
                counters[0].increment(1);
                made.counters = Some(counters);
                encoder = Some(made);
            }
            Err(error) => {
                tracing::warn!(%error, coding = coding.token(), "response compressor not made; sent plain");
                decision = Decision::VaryOnly;
            }
        }
    }
    rewrite_headers(&mut response.headers, decision);
    match encoder {
        Some(encoder) => body.compressed(encoder),
        None => body,
    }
}

#[cfg(test)]
mod tests;
