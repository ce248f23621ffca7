//! Validated selection settings of a pool: `algorithm:`, its options block (`hash:`, `p2c:`)
//! and `sticky:`, converted from the YAML mirror with positioned errors.
//!
//! Pure config types only; what the algorithms do with them lives in `crate::balance`. An
//! options block is refused under any other algorithm, so a forgotten `algorithm: hash` does not
//! silently run round robin with a `hash:` block nobody reads.

use super::Validator;
use super::file::{RawHash, RawP2c, RawPool, RawSticky, Text};
use crate::error::ConfigError;
use serde_saphyr::Spanned;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    /// Smooth weighted round robin (nginx's interleaving).
    RoundRobin,
    /// Weighted random.
    Random,
    /// Fewest in-flight relative to weight; ties rotate.
    LeastConn,
    /// Power of two random choices.
    P2c(P2cOptions),
    /// Consistent hashing on a request key.
    Hash(HashOptions),
    /// First backend in config order that is available (packing; pair with `max_connections`).
    First,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct P2cOptions {
    pub load: P2cLoad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum P2cLoad {
    /// In-flight connections or requests.
    #[default]
    InFlight,
    /// Peak-EWMA of response latency times (in-flight + 1), as Finagle, linkerd and tower do.
    Ewma,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HashOptions {
    pub key: HashKey,
    /// Consistent hashing with bounded loads: no backend takes more than this factor times the
    /// average in-flight (HAProxy `hash-balance-factor` / 100). `None`: unbounded.
    pub bounded_load: Option<f64>,
    /// Used when a request has no key (missing header, cookie or parameter; any non-IP key on
    /// TCP). Never `Hash` itself.
    pub fallback: Box<Algorithm>,
}

/// What a hash pool hashes. Only `SourceIp` exists on TCP; the others fall back there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    SourceIp,
    Header(http::HeaderName),
    Cookie(String),
    /// The URI path, without the query string.
    Path,
    /// One query parameter's raw (not percent-decoded) value.
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    pub cookie: String,
    /// `Max-Age` of the issued cookie; `None`: a session cookie.
    pub ttl: Option<Duration>,
    pub same_site: SameSite,
    /// `None`: `Secure` on requests that came over TLS; `Some`: always or never.
    pub secure: Option<bool>,
}

/// The cookie's `SameSite` attribute. Lax by default: what browsers assume without one, said
/// explicitly so every browser treats the cookie alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    #[default]
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

impl Algorithm {
    pub const NAMES: &'static [&'static str] = &[
        "round_robin",
        "random",
        "least_conn",
        "p2c",
        "hash",
        "first",
    ];

    /// The algorithm by name with default options.
    fn from_name(name: &str) -> Option<Algorithm> {
        Some(match name {
            "round_robin" => Algorithm::RoundRobin,
            "random" => Algorithm::Random,
            "least_conn" => Algorithm::LeastConn,
            "p2c" => Algorithm::P2c(P2cOptions::default()),
            "hash" => Algorithm::Hash(HashOptions {
                key: HashKey::SourceIp,
                bounded_load: None,
                fallback: Box::new(Algorithm::RoundRobin),
            }),
            "first" => Algorithm::First,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::Random => "random",
            Algorithm::LeastConn => "least_conn",
            Algorithm::P2c(_) => "p2c",
            Algorithm::Hash(_) => "hash",
            Algorithm::First => "first",
        }
    }
}

const KEY_SOURCES: &str = "source_ip, header:NAME, cookie:NAME, path, query:NAME";

/// Parses `source_ip`, `header:NAME`, `cookie:NAME`, `path`, `query:NAME`.
pub fn parse_hash_key(text: &str) -> Result<HashKey, String> {
    let text = text.trim();
    let (source, name) = match text.split_once(':') {
        Some((source, name)) => (source, Some(name.trim())),
        None => (text, None),
    };
    let needs_name = |what: &str| format!("{source}: needs a {what} name, e.g. {source}:X-User");
    match (source, name) {
        ("source_ip", None) => Ok(HashKey::SourceIp),
        ("path", None) => Ok(HashKey::Path),
        ("source_ip" | "path", Some(_)) => Err(format!("{source} takes no name, got {text:?}")),
        ("header", Some(name)) if !name.is_empty() => http::HeaderName::from_bytes(name.as_bytes())
            .map(HashKey::Header)
            .map_err(|_| format!("invalid header name {name:?}")),
        ("cookie", Some(name)) if !name.is_empty() => {
            check_cookie_name(name).map(|()| HashKey::Cookie(name.to_owned()))
        }
        ("query", Some(name)) if !name.is_empty() && !name.contains(['&', '=', '#']) => {
            Ok(HashKey::Query(name.to_owned()))
        }
        ("header", _) => Err(needs_name("header")),
        ("cookie", _) => Err(needs_name("cookie")),
        ("query", _) => Err(needs_name("parameter")),
        _ => Err(format!(
            "unknown key source {text:?} (expected {KEY_SOURCES})"
        )),
    }
}

/// RFC 6265: a cookie name is an HTTP token.
fn check_cookie_name(name: &str) -> Result<(), String> {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if token {
        Ok(())
    } else {
        Err(format!(
            "invalid cookie name {name:?}: use letters, digits and !#$%&'*+-.^_`|~"
        ))
    }
}

impl Validator<'_> {
    /// `algorithm:` plus its options block; refuses a block that belongs to another algorithm.
    pub(super) fn algorithm(&self, path: &str, raw: &RawPool) -> Result<Algorithm, ConfigError> {
        let mut algorithm = match &raw.algorithm {
            None => Algorithm::RoundRobin,
            Some(text) => self.algorithm_name(text, &format!("{path}.algorithm"))?,
        };
        self.only_under(
            path,
            "hash",
            raw.hash.as_ref().map(|h| h.referenced),
            &algorithm,
        )?;
        self.only_under(
            path,
            "p2c",
            raw.p2c.as_ref().map(|p| p.referenced),
            &algorithm,
        )?;
        match &mut algorithm {
            Algorithm::Hash(options) => {
                if let Some(raw_hash) = &raw.hash {
                    *options = self.hash_options(&format!("{path}.hash"), raw_hash)?;
                }
            }
            Algorithm::P2c(options) => {
                if let Some(raw_p2c) = &raw.p2c {
                    *options = self.p2c_options(&format!("{path}.p2c"), &raw_p2c.value)?;
                }
            }
            _ => {}
        }
        Ok(algorithm)
    }

    fn algorithm_name(&self, text: &Text, path: &str) -> Result<Algorithm, ConfigError> {
        Algorithm::from_name(text.value.trim()).ok_or_else(|| {
            self.error_at(
                text.referenced,
                path.to_owned(),
                format!(
                    "unknown algorithm {:?} (expected one of: {})",
                    text.value,
                    Algorithm::NAMES.join(", ")
                ),
            )
        })
    }

    fn only_under(
        &self,
        path: &str,
        block: &str,
        location: Option<serde_saphyr::Location>,
        algorithm: &Algorithm,
    ) -> Result<(), ConfigError> {
        match location {
            Some(location) if algorithm.name() != block => Err(self.error_at(
                location,
                format!("{path}.{block}"),
                format!(
                    "options for {block}, but the algorithm is {} (set `algorithm: {block}` or \
                     remove this block)",
                    algorithm.name()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn hash_options(&self, path: &str, raw: &Spanned<RawHash>) -> Result<HashOptions, ConfigError> {
        let key = match &raw.value.key {
            None => HashKey::SourceIp,
            Some(text) => parse_hash_key(&text.value).map_err(|message| {
                self.error_at(text.referenced, format!("{path}.key"), message)
            })?,
        };
        let bounded_load = match &raw.value.bounded_load {
            None => None,
            // The bound is factor x average, and some backend is always at or under the
            // average, so any factor >= 1 is satisfiable; above 100 it never binds.
            Some(factor) if factor.value.is_finite() && (1.0..=100.0).contains(&factor.value) => {
                Some(factor.value)
            }
            Some(factor) => {
                return Err(self.error_at(
                    factor.referenced,
                    format!("{path}.bounded_load"),
                    format!(
                        "must be a factor between 1.0 and 100 (1.25 = at most 25% over the \
                         average), got {}",
                        factor.value
                    ),
                ));
            }
        };
        let fallback = match &raw.value.fallback {
            None => Algorithm::RoundRobin,
            Some(text) => {
                let fallback_path = format!("{path}.fallback");
                let algorithm = self.algorithm_name(text, &fallback_path)?;
                if matches!(algorithm, Algorithm::Hash(_)) {
                    return Err(self.error_at(
                        text.referenced,
                        fallback_path,
                        "the fallback serves requests without a key, so it cannot be hash".into(),
                    ));
                }
                algorithm
            }
        };
        Ok(HashOptions {
            key,
            bounded_load,
            fallback: Box::new(fallback),
        })
    }

    fn p2c_options(&self, path: &str, raw: &RawP2c) -> Result<P2cOptions, ConfigError> {
        let load = match &raw.load {
            None => P2cLoad::InFlight,
            Some(text) => match text.value.trim() {
                "in_flight" => P2cLoad::InFlight,
                "ewma" => P2cLoad::Ewma,
                other => {
                    return Err(self.error_at(
                        text.referenced,
                        format!("{path}.load"),
                        format!("unknown load {other:?} (expected in_flight or ewma)"),
                    ));
                }
            },
        };
        Ok(P2cOptions { load })
    }

    pub(super) fn sticky(
        &self,
        path: &str,
        raw: Option<&Spanned<RawSticky>>,
    ) -> Result<Option<StickyConfig>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let cookie = raw.value.cookie.value.trim();
        check_cookie_name(cookie).map_err(|message| {
            self.error_at(
                raw.value.cookie.referenced,
                format!("{path}.sticky.cookie"),
                message,
            )
        })?;
        let ttl = match &raw.value.ttl {
            None => None,
            Some(_) => Some(self.duration(
                raw.value.ttl.as_ref(),
                &format!("{path}.sticky.ttl"),
                Duration::ZERO,
            )?),
        };
        let same_site = match raw.value.same_site.as_ref() {
            None => SameSite::Lax,
            Some(text) => match text.value.trim().to_ascii_lowercase().as_str() {
                "lax" => SameSite::Lax,
                "strict" => SameSite::Strict,
                "none" => SameSite::None,
                other => {
                    return Err(self.error_at(
                        text.referenced,
                        format!("{path}.sticky.same_site"),
                        format!("unknown value {other:?}: use lax, strict or none"),
                    ));
                }
            },
        };
        if same_site == SameSite::None && raw.value.secure == Some(false) {
            return Err(self.error_at(
                raw.referenced,
                format!("{path}.sticky.same_site"),
                "browsers drop a SameSite=None cookie without Secure: drop secure: false".into(),
            ));
        }
        Ok(Some(StickyConfig {
            cookie: cookie.to_owned(),
            ttl,
            same_site,
            secure: raw.value.secure,
        }))
    }
}
