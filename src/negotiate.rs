//! Content negotiation (RFC 9110 §12): how much a client wants a media type (`Accept`) or a
//! content coding (`Accept-Encoding`), from the q-values it sent. Pure: header values in,
//! weights out; nothing allocates.
//!
//! Rules: the most specific range that matches decides (`text/html` over `text/*` over
//! `*/*`); a missing header accepts everything (weight 1); `q=0` refuses. Weights are kept in
//! thousandths, as the grammar allows three decimals.

use http::header::{ACCEPT, ACCEPT_ENCODING};
use http::{HeaderMap, HeaderValue};

/// The weight (0-1000) `Accept` gives to `media` (`type/subtype`, lowercase).
pub fn media_weight(headers: &HeaderMap, media: &str) -> u16 {
    media_weight_of(headers.get_all(ACCEPT), media)
}

/// `media_weight` over the `Accept` values alone (`values` empty: no header).
pub fn media_weight_of<'v>(values: impl IntoIterator<Item = &'v HeaderValue>, media: &str) -> u16 {
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    let mut any = false;
    // (specificity, weight) of the best-matching range so far.
    let mut best: Option<(u8, u16)> = None;
    for value in values {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let (range, q) = range_and_q(item);
            if range.is_empty() {
                continue;
            }
            any = true;
            let specificity = if range.eq_ignore_ascii_case(media) {
                3
            } else if range
                .strip_suffix("/*")
                .is_some_and(|t| t.eq_ignore_ascii_case(kind))
            {
                2
            } else if range == "*/*" {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, q));
            }
        }
    }
    match best {
        Some((_, q)) => q,
        None if !any => 1000,
        None => 0,
    }
}

/// The weight (0-1000) `Accept-Encoding` gives to `coding` (`gzip`, `br`, `zstd`).
/// Without the header no coding is wanted (RFC 9110 §12.5.3 allows any, but a proxy that
/// compresses for clients that did not ask breaks them): 0.
pub fn coding_weight(headers: &HeaderMap, coding: &str) -> u16 {
    let mut star = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let (name, q) = range_and_q(item);
            if name.eq_ignore_ascii_case(coding)
                || (coding == "gzip" && name.eq_ignore_ascii_case("x-gzip"))
            {
                return q;
            }
            if name == "*" {
                star = Some(q);
            }
        }
    }
    star.unwrap_or(0)
}

/// `" text/html ; level=1; q=0.5"` -> `("text/html", 500)`.
fn range_and_q(item: &str) -> (&str, u16) {
    let mut parts = item.split(';');
    let range = parts.next().unwrap_or("").trim();
    let mut q = 1000;
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            q = parse_q(value.trim()).unwrap_or(0);
        }
    }
    (range, q)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_q(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, digit) in fraction.bytes().enumerate() {
        thousandths += u16::from(digit - b'0') * [100, 10, 1][i];
    }
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: http::header::HeaderName, value: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_static(value));
        map
    }

    #[test]
    fn the_most_specific_media_range_decides() {
        let h = headers(ACCEPT, "text/*;q=0.3, text/html;q=0.7, */*;q=0.5");
        assert_eq!(media_weight(&h, "text/html"), 700);
        assert_eq!(media_weight(&h, "text/plain"), 300);
        assert_eq!(media_weight(&h, "application/json"), 500);
        let json_only = headers(ACCEPT, "application/json");
        assert_eq!(media_weight(&json_only, "text/html"), 0);
        assert_eq!(media_weight(&HeaderMap::new(), "text/html"), 1000);
        let refused = headers(ACCEPT, "*/*, text/html;q=0");
        assert_eq!(media_weight(&refused, "text/html"), 0);
    }

    #[test]
    fn codings_follow_q_values_and_star() {
        let h = headers(ACCEPT_ENCODING, "gzip;q=0.8, br, zstd;q=0, *;q=0.1");
        assert_eq!(coding_weight(&h, "br"), 1000);
        assert_eq!(coding_weight(&h, "gzip"), 800);
        assert_eq!(coding_weight(&h, "zstd"), 0);
        assert_eq!(coding_weight(&h, "deflate"), 100);
        assert_eq!(coding_weight(&HeaderMap::new(), "gzip"), 0);
        let odd = headers(ACCEPT_ENCODING, "gzip;q=1.5, br;q=0.12345");
        assert_eq!(coding_weight(&odd, "gzip"), 0, "an invalid q refuses");
        assert_eq!(coding_weight(&odd, "br"), 0);
    }
}
