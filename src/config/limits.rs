//! Validation of a listener's `limits:` (what a client's request may be: request line, header
//! lines, headers, body, and how much of a body is read before a backend is picked) and of
//! its `forwarded:` option (RFC 7239). Sizes are written as operators write them: `8KiB`,
//! `1MiB`, `64k`, or a bare number of bytes.
//!
//! Defaults are nginx's and HAProxy's where they agree, and the stricter one where not:
//! - request line 8 KiB (nginx `large_client_header_buffers 4 8k`: 414 beyond it);
//! - one header line 8 KiB (nginx, same buffers; HAProxy refuses a head over 16 KiB whole);
//! - all header lines 32 KiB (nginx's four 8 KiB buffers; Envoy 60 KiB);
//! - 100 header lines (Envoy's and hyper's 100, HAProxy's 101);
//! - body: no limit (HAProxy and Envoy have none; nginx's 1 MiB default is the most common
//!   surprise its users report, so an upload limit is the operator's choice to write);
//! - request buffer 64 KiB (nginx `client_body_buffer_size` is 8-16 KiB in memory, then disk;
//!   HAProxy `http-buffer-request` waits for one 16 KiB buffer);
//! - HTTP/2: 100 concurrent streams (HAProxy, nginx 128) and a 32 KiB header list (as all
//!   header lines on HTTP/1; hyper's default is 16 MiB).

use super::Validator;
use super::file::{RawForwarded, RawRequestLimits, SizeText};
use crate::error::ConfigError;
use serde_saphyr::Spanned;

/// What a request on a listener may be; beyond it the client gets the status in each comment
/// and the connection is closed, and no backend sees anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// `METHOD target HTTP/1.1` (or `:method` + `:path` on HTTP/2), in bytes: 414.
    pub request_line: usize,
    /// One `name: value` line: 431.
    pub header_line: usize,
    /// All header lines together: 431.
    pub headers: usize,
    /// Header lines: 431.
    pub header_count: usize,
    /// Request body bytes at most: 413. `None`: no limit.
    pub body: Option<u64>,
    /// A body up to this size is read whole (and its framing checked) before a backend is
    /// picked; a larger one is read this far and then streams. 0: bodies always stream.
    pub request_buffer: usize,
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 header list (HPACK-decoded) at most; bounds CONTINUATION frames too.
    pub h2_header_list: u32,
}

pub const DEFAULT_REQUEST_LINE: usize = 8 * 1024;
pub const DEFAULT_HEADER_LINE: usize = 8 * 1024;
pub const DEFAULT_HEADERS: usize = 32 * 1024;
pub const DEFAULT_HEADER_COUNT: usize = 100;
pub const DEFAULT_REQUEST_BUFFER: usize = 64 * 1024;
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
pub const DEFAULT_H2_HEADER_LIST: u32 = 32 * 1024;

/// A request line or header shorter than this would refuse ordinary browsers' requests.
const MIN_HEAD_SIZE: u64 = 256;
/// Larger heads than this are memory an attacker chooses per connection.
const MAX_HEAD_SIZE: u64 = 1024 * 1024;
/// Held in memory per request in progress: more belongs to the backend.
const MAX_REQUEST_BUFFER: u64 = 64 * 1024 * 1024;

impl Default for RequestLimits {
    fn default() -> RequestLimits {
        RequestLimits {
            request_line: DEFAULT_REQUEST_LINE,
            header_line: DEFAULT_HEADER_LINE,
            headers: DEFAULT_HEADERS,
            header_count: DEFAULT_HEADER_COUNT,
            body: None,
            request_buffer: DEFAULT_REQUEST_BUFFER,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2_header_list: DEFAULT_H2_HEADER_LIST,
        }
    }
}

impl RequestLimits {
    /// hyper's HTTP/1 read buffer bound: a whole head (request line and headers, with their
    /// line ends) must fit, and hyper wants at least 8 KiB. Beyond it hyper answers 431.
    pub fn http1_buffer(&self) -> usize {
        (self.request_line + self.headers + 4 * self.header_count + 1024).max(8192)
    }
}

/// RFC 7239 `Forwarded` on requests to the backends (beside `X-Forwarded-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedConfig {
    /// Also `by=` the address the client connected to (off by default: it tells the backend,
    /// and anything it passes the header on to, sluice's own address).
    pub by: bool,
}

/// Parses `8KiB`, `1MiB`, `2GiB`, `64k`, `1m`, `16KB`, `512B` or `512`. `k`/`m`/`g` are binary
/// (nginx's meaning); `KB`/`MB`/`GB` are decimal.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "invalid size {text:?}: expected a number of bytes, or one with a unit such as 64KiB or 1MiB"
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: out of range"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, or KB, MB, GB)"
            ));
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("invalid size {text:?}: out of range"))
}

impl Validator<'_> {
    pub(super) fn request_limits(
        &self,
        listener: &str,
        raw: Option<&Spanned<RawRequestLimits>>,
    ) -> Result<RequestLimits, ConfigError> {
        let defaults = RequestLimits::default();
        let Some(raw) = raw else {
            return Ok(defaults);
        };
        let path = format!("listeners.{listener}.limits");
        let size = |value: &Option<Spanned<SizeText>>, field: &str, range: (u64, u64)| {
            let Some(value) = value else {
                return Ok(None);
            };
            let field_path = format!("{path}.{field}");
            let bytes = parse_size(&value.value.0)
                .map_err(|m| self.error_at(value.referenced, field_path.clone(), m))?;
            if bytes < range.0 || bytes > range.1 {
                return Err(self.error_at(
                    value.referenced,
                    field_path,
                    format!("must be between {} and {} bytes", range.0, range.1),
                ));
            }
            Ok(Some(bytes))
        };
        let head = (MIN_HEAD_SIZE, MAX_HEAD_SIZE);
        let request_line = size(&raw.value.request_line, "request_line", head)?;
        let header_line = size(&raw.value.header_line, "header_line", head)?;
        let headers = size(&raw.value.headers, "headers", head)?;
        let body = size(&raw.value.body, "body", (1, u64::MAX))?;
        let request_buffer = size(
            &raw.value.request_buffer,
            "request_buffer",
            (0, MAX_REQUEST_BUFFER),
        )?;
        let h2_header_list = size(&raw.value.h2_header_list, "h2_header_list", head)?;
        let count = |value: &Option<Spanned<u32>>, field: &str, max: u32| match value {
            None => Ok(None),
            Some(n) if n.value == 0 || n.value > max => Err(self.error_at(
                n.referenced,
                format!("{path}.{field}"),
                format!("must be between 1 and {max}"),
            )),
            Some(n) => Ok(Some(n.value)),
        };
        let header_count = count(&raw.value.header_count, "header_count", 10_000)?;
        let streams = count(
            &raw.value.h2_max_concurrent_streams,
            "h2_max_concurrent_streams",
            10_000,
        )?;
        let limits = RequestLimits {
            request_line: request_line.map_or(defaults.request_line, |n| n as usize),
            header_line: header_line.map_or(defaults.header_line, |n| n as usize),
            headers: headers.map_or(defaults.headers, |n| n as usize),
            header_count: header_count.map_or(defaults.header_count, |n| n as usize),
            body,
            request_buffer: request_buffer.map_or(defaults.request_buffer, |n| n as usize),
            h2_max_concurrent_streams: streams.unwrap_or(defaults.h2_max_concurrent_streams),
            h2_header_list: h2_header_list.map_or(defaults.h2_header_list, |n| n as u32),
        };
        // One header line longer than all of them together could never be accepted: say so,
        // and say which of the two values is a default.
        if limits.header_line > limits.headers {
            let written = |given: Option<u64>| {
                if given.is_some() {
                    ""
                } else {
                    " (the default)"
                }
            };
            let at = raw
                .value
                .header_line
                .as_ref()
                .or(raw.value.headers.as_ref())
                .map_or(raw.referenced, |v| v.referenced);
            return Err(self.error_at(
                at,
                format!("{path}.header_line"),
                format!(
                    "header_line {}{} is larger than headers {}{}, which bounds all header lines together: raise headers or lower header_line",
                    limits.header_line,
                    written(header_line),
                    limits.headers,
                    written(headers),
                ),
            ));
        }
        Ok(limits)
    }

    pub(super) fn forwarded(&self, raw: Option<&RawForwarded>) -> Option<ForwardedConfig> {
        match raw? {
            RawForwarded::Enabled(false) => None,
            RawForwarded::Enabled(true) => Some(ForwardedConfig { by: false }),
            RawForwarded::Options { by } => Some(ForwardedConfig {
                by: by.unwrap_or(false),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("8KiB"), Ok(8192));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("10 MiB"), Ok(10 << 20));
        assert_eq!(parse_size("16KB"), Ok(16_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("KiB").is_err());
        assert!(
            parse_size("8 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999GiB").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn http1_buffer_holds_a_whole_head_and_never_less_than_hyper_allows() {
        let limits = RequestLimits::default();
        assert!(limits.http1_buffer() >= limits.request_line + limits.headers);
        let small = RequestLimits {
            request_line: 256,
            headers: 256,
            header_count: 1,
            ..RequestLimits::default()
        };
        assert_eq!(small.http1_buffer(), 8192);
    }
}
