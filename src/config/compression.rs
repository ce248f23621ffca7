//! `compression:` on a listener or a route: which responses sluice compresses, with which
//! codings (gzip, br, zstd) and levels. The YAML mirror, the validated type and its
//! validation. A route's `compression` replaces its listener's whole (`enabled: false` turns
//! it off for that route).
//!
//! Defaults, what a careful operator would pick: all three codings, preferring zstd then br
//! then gzip when the client likes them equally; responses of 1 KiB or more (below that the
//! saving is a few bytes and costs a compressor's state); the text types that compress well;
//! levels gzip 6 (zlib's default), br 4 and zstd 3 (fast enough for dynamic content, the
//! levels CDNs use on the fly).

use super::Validator;
use super::file::{SizeText, Text};
use super::parse_size;
use crate::error::ConfigError;
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    pub enabled: Option<bool>,
    /// Preferred first on a tie of the client's q-values.
    pub algorithms: Option<Spanned<Vec<Text>>>,
    pub min_size: Option<Spanned<SizeText>>,
    /// `text/html`, or `text/*` for a whole type.
    pub types: Option<Spanned<Vec<Text>>>,
    pub levels: Option<Spanned<RawLevels>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLevels {
    pub gzip: Option<Spanned<u32>>,
    pub br: Option<Spanned<u32>>,
    pub zstd: Option<Spanned<i32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Br,
    Zstd,
}

impl Coding {
    /// The token in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// Never empty.
    pub algorithms: Vec<Coding>,
    pub min_size: u64,
    /// Lowercase `type/subtype`, or `type/*`.
    pub types: Vec<String>,
    pub gzip_level: u32,
    pub br_level: u32,
    pub zstd_level: i32,
}

pub const DEFAULT_MIN_SIZE: u64 = 1024;
pub const DEFAULT_TYPES: [&str; 9] = [
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/wasm",
    "application/manifest+json",
    "application/ld+json",
    "image/svg+xml",
    "application/grpc-web-text",
];

impl Validator<'_> {
    /// `None`: not set here (a route then takes its listener's). `Some(None)`: turned off.
    pub(super) fn compression(
        &self,
        path: &str,
        raw: Option<&Spanned<RawCompression>>,
    ) -> Result<Option<Option<Compression>>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let path = format!("{path}.compression");
        let value = &raw.value;
        if value.enabled == Some(false) {
            return Ok(Some(None));
        }
        let algorithms = match &value.algorithms {
            None => vec![Coding::Zstd, Coding::Br, Coding::Gzip],
            Some(list) => {
                let mut out = Vec::new();
                for (index, text) in list.value.iter().enumerate() {
                    let coding = match text.value.trim().to_ascii_lowercase().as_str() {
                        "gzip" => Coding::Gzip,
                        "br" | "brotli" => Coding::Br,
                        "zstd" => Coding::Zstd,
                        other => {
                            return Err(self.error_at(
                                text.referenced,
                                format!("{path}.algorithms[{index}]"),
                                format!("unknown algorithm {other:?}: expected gzip, br or zstd"),
                            ));
                        }
                    };
                    if !out.contains(&coding) {
                        out.push(coding);
                    }
                }
                if out.is_empty() {
                    return Err(self.error_at(
                        list.referenced,
                        format!("{path}.algorithms"),
                        "empty: list gzip, br or zstd (or set enabled: false)".into(),
                    ));
                }
                out
            }
        };
        let min_size = match &value.min_size {
            None => DEFAULT_MIN_SIZE,
            Some(size) => parse_size(&size.value.0)
                .map_err(|m| self.error_at(size.referenced, format!("{path}.min_size"), m))?,
        };
        let types = match &value.types {
            None => DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            Some(list) => {
                let mut out = Vec::new();
                for (index, text) in list.value.iter().enumerate() {
                    let media = text.value.trim().to_ascii_lowercase();
                    let valid = media.split_once('/').is_some_and(|(kind, sub)| {
                        !kind.is_empty()
                            && kind != "*"
                            && !sub.is_empty()
                            && media.bytes().all(|b| b.is_ascii_graphic() && b != b';')
                    });
                    if !valid {
                        return Err(self.error_at(
                            text.referenced,
                            format!("{path}.types[{index}]"),
                            format!(
                                "invalid media type {:?}: expected type/subtype or type/*",
                                text.value
                            ),
                        ));
                    }
                    out.push(media);
                }
                out
            }
        };
        let levels = value.levels.as_ref().map(|l| &l.value);
        let level = |given: Option<&Spanned<u32>>,
                     field: &str,
                     range: std::ops::RangeInclusive<u32>,
                     default: u32| {
            match given {
                None => Ok(default),
                Some(level) if range.contains(&level.value) => Ok(level.value),
                Some(level) => Err(self.error_at(
                    level.referenced,
                    format!("{path}.levels.{field}"),
                    format!(
                        "{} is out of range: {field} levels are {} to {}",
                        level.value,
                        range.start(),
                        range.end()
                    ),
                )),
            }
        };
        let gzip_level = level(levels.and_then(|l| l.gzip.as_ref()), "gzip", 1..=9, 6)?;
        let br_level = level(levels.and_then(|l| l.br.as_ref()), "br", 0..=11, 4)?;
        let zstd_level = match levels.and_then(|l| l.zstd.as_ref()) {
            None => 3,
            Some(level) if (1..=19).contains(&level.value) => level.value,
            Some(level) => {
                return Err(self.error_at(
                    level.referenced,
                    format!("{path}.levels.zstd"),
                    format!(
                        "{} is out of range: zstd levels are 1 to 19 (20-22 need a window too large for a proxy)",
                        level.value
                    ),
                ));
            }
        };
        Ok(Some(Some(Compression {
            algorithms,
            min_size,
            types,
            gzip_level,
            br_level,
            zstd_level,
        })))
    }
}
