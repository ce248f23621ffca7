//! What a matched HTTP route does: forward to a pool (or split over several pools by weight,
//! optionally mirroring a sample to a shadow pool), redirect, or answer directly. The YAML
//! mirror of `redirect`, `respond`, `pools` and `mirror`, the validated types and their
//! validation with positioned errors.
//!
//! Pure config types; a `respond.file` is read here, at validation, like a TLS certificate:
//! `sluice check` and a reload refuse a missing file, and the snapshot carries the bytes
//! (a file rewritten in place counts as a change at the next reload).
//!
//! Decisions: a route has exactly one of `pool`, `pools`, `redirect`, `respond` (two would be
//! a guess about which one wins). A redirect keeps the request's path and query unless told
//! otherwise, and answers 301 by default (Envoy's and nginx's usual `return 301`).

use super::file::{RawRoute, Text};
use super::{HashKey, PoolConfig, Validator, parse_hash_key, parse_size};
use crate::error::ConfigError;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A pool weight in `pools:` cannot exceed this (the same ceiling as backend weights).
const MAX_SPLIT_WEIGHT: u32 = super::MAX_WEIGHT;
/// Mirrored request bodies above this are not mirrored (the main request is unaffected).
pub const DEFAULT_MIRROR_MAX_BODY: u64 = 64 * 1024;
/// Mirrored requests in flight at most per route; beyond it a sample is skipped and counted.
pub const DEFAULT_MIRROR_MAX_IN_FLIGHT: u32 = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedPool {
    pub pool: Text,
    pub weight: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    /// `http` or `https`; kept from the request when absent.
    pub scheme: Option<Text>,
    pub host: Option<Text>,
    pub port: Option<Spanned<u16>>,
    /// Replaces the whole path.
    pub path: Option<Text>,
    pub strip_query: Option<bool>,
    pub code: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    pub status: Option<Spanned<u16>>,
    pub body: Option<String>,
    pub file: Option<Text>,
    pub content_type: Option<Text>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    pub pool: Text,
    /// Share of the route's requests copied, 0-100 (default 100).
    pub percent: Option<Spanned<f64>>,
    pub max_body: Option<Spanned<super::file::SizeText>>,
    pub max_in_flight: Option<Spanned<u32>>,
}

/// What a route does with a request it matched.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// Forward to one pool, or to one of several by weight.
    Forward(Forward),
    Redirect(Redirect),
    Respond(Respond),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// At least one; one entry is the plain `pool:` case.
    pub pools: Vec<WeightedPool>,
    /// Hashed to keep a client on the same pool of a split (`split_key`, else the hash key of
    /// the first pool with `algorithm: hash`); `None`: a sticky cookie, else a weighted draw.
    pub split_key: Option<HashKey>,
    pub mirror: Option<Mirror>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedPool {
    pub pool: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub pool: String,
    /// 0.0 - 100.0
    pub percent: f64,
    pub max_body: u64,
    pub max_in_flight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `None`: the scheme the request came in with.
    pub scheme: Option<&'static str>,
    /// Lowercased, without port. `None`: the request's host.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub strip_query: bool,
    pub code: StatusCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Respond {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: HeaderValue,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Where the body was read from, for the reload plan and errors.
    pub file: Option<PathBuf>,
}

impl RouteAction {
    /// The pools this action may send to (split targets and mirror), for reference checks.
    pub fn pool_names(&self) -> impl Iterator<Item = &str> {
        let forward = match self {
            RouteAction::Forward(forward) => Some(forward),
            _ => None,
        };
        forward.into_iter().flat_map(|f| {
            f.pools
                .iter()
                .map(|p| p.pool.as_str())
                .chain(f.mirror.as_ref().map(|m| m.pool.as_str()))
        })
    }
}

/// Headers a `respond.headers` map may not set: they frame the message, and sluice writes them.
const FRAMING: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "trailer",
];

impl Validator<'_> {
    pub(super) fn route_action(
        &self,
        path: &str,
        at: Location,
        route: &RawRoute,
        pools: &BTreeMap<String, PoolConfig>,
    ) -> Result<RouteAction, ConfigError> {
        let given: Vec<&str> = [
            route.pool.as_ref().map(|_| "pool"),
            route.pools.as_ref().map(|_| "pools"),
            route.redirect.as_ref().map(|_| "redirect"),
            route.respond.as_ref().map(|_| "respond"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() != 1 {
            let message = if given.is_empty() {
                "needs one of pool, pools, redirect or respond".to_owned()
            } else {
                format!(
                    "give one of pool, pools, redirect or respond, not {}",
                    given.join(" and ")
                )
            };
            return Err(self.error_at(at, path.to_owned(), message));
        }
        let forwards = route.pool.is_some() || route.pools.is_some();
        if !forwards {
            if let Some(mirror) = &route.mirror {
                return Err(self.error_at(
                    mirror.referenced,
                    format!("{path}.mirror"),
                    "mirror needs a route that forwards (pool or pools)".into(),
                ));
            }
            if let Some(key) = &route.split_key {
                return Err(self.error_at(
                    key.referenced,
                    format!("{path}.split_key"),
                    "split_key needs pools: [...]".into(),
                ));
            }
        }
        if let Some(redirect) = &route.redirect {
            return Ok(RouteAction::Redirect(
                self.redirect(&format!("{path}.redirect"), redirect)?,
            ));
        }
        if let Some(respond) = &route.respond {
            return Ok(RouteAction::Respond(
                self.respond(&format!("{path}.respond"), respond)?,
            ));
        }
        let weighted = match (&route.pool, &route.pools) {
            (Some(pool), _) => {
                self.pool_name(pool, &format!("{path}.pool"), pools)?;
                vec![WeightedPool {
                    pool: pool.value.clone(),
                    weight: 1,
                }]
            }
            (None, Some(list)) => self.split(&format!("{path}.pools"), list, pools)?,
            (None, None) => unreachable!("one of them is given, checked above"),
        };
        if route.split_key.is_some() && weighted.len() < 2 {
            let key = route.split_key.as_ref().map_or(at, |k| k.referenced);
            return Err(self.error_at(
                key,
                format!("{path}.split_key"),
                "split_key needs at least two pools to split between".into(),
            ));
        }
        let split_key = match &route.split_key {
            Some(text) => Some(
                parse_hash_key(&text.value)
                    .map_err(|m| self.error_at(text.referenced, format!("{path}.split_key"), m))?,
            ),
            None => weighted
                .iter()
                .find_map(|w| match &pools[&w.pool].algorithm {
                    super::Algorithm::Hash(options) => Some(options.key.clone()),
                    _ => None,
                }),
        };
        let mirror = match &route.mirror {
            None => None,
            Some(mirror) => Some(self.mirror(&format!("{path}.mirror"), mirror, pools)?),
        };
        Ok(RouteAction::Forward(Forward {
            pools: weighted,
            split_key: if route.pools.is_some() {
                split_key
            } else {
                None
            },
            mirror,
        }))
    }

    fn split(
        &self,
        path: &str,
        list: &Spanned<Vec<Spanned<RawWeightedPool>>>,
        pools: &BTreeMap<String, PoolConfig>,
    ) -> Result<Vec<WeightedPool>, ConfigError> {
        if list.value.is_empty() {
            return Err(self.error_at(
                list.referenced,
                path.to_owned(),
                "empty: list at least one {pool, weight}".into(),
            ));
        }
        let mut out: Vec<WeightedPool> = Vec::new();
        for (index, entry) in list.value.iter().enumerate() {
            let here = format!("{path}[{index}]");
            let raw = &entry.value;
            self.pool_name(&raw.pool, &format!("{here}.pool"), pools)?;
            if out.iter().any(|w| w.pool == raw.pool.value) {
                return Err(self.error_at(
                    raw.pool.referenced,
                    format!("{here}.pool"),
                    format!("pool {:?} is listed twice", raw.pool.value),
                ));
            }
            let weight = raw.weight.as_ref().map_or(1, |w| w.value);
            if weight > MAX_SPLIT_WEIGHT {
                let at = raw
                    .weight
                    .as_ref()
                    .map_or(entry.referenced, |w| w.referenced);
                return Err(self.error_at(
                    at,
                    format!("{here}.weight"),
                    format!("{weight} is above the maximum of {MAX_SPLIT_WEIGHT}"),
                ));
            }
            out.push(WeightedPool {
                pool: raw.pool.value.clone(),
                weight,
            });
        }
        if out.iter().all(|w| w.weight == 0) {
            return Err(self.error_at(
                list.referenced,
                path.to_owned(),
                "every weight is 0: at least one pool must receive traffic".into(),
            ));
        }
        Ok(out)
    }

    fn mirror(
        &self,
        path: &str,
        raw: &Spanned<RawMirror>,
        pools: &BTreeMap<String, PoolConfig>,
    ) -> Result<Mirror, ConfigError> {
        let mirror = &raw.value;
        self.pool_name(&mirror.pool, &format!("{path}.pool"), pools)?;
        let percent = match &mirror.percent {
            None => 100.0,
            Some(p) if (0.0..=100.0).contains(&p.value) => p.value,
            Some(p) => {
                return Err(self.error_at(
                    p.referenced,
                    format!("{path}.percent"),
                    format!("{} is not a percentage between 0 and 100", p.value),
                ));
            }
        };
        let max_body = match &mirror.max_body {
            None => DEFAULT_MIRROR_MAX_BODY,
            Some(size) => parse_size(&size.value.0)
                .map_err(|m| self.error_at(size.referenced, format!("{path}.max_body"), m))?,
        };
        let max_in_flight = match &mirror.max_in_flight {
            None => DEFAULT_MIRROR_MAX_IN_FLIGHT,
            Some(n) if n.value > 0 => n.value,
            Some(n) => {
                return Err(self.error_at(
                    n.referenced,
                    format!("{path}.max_in_flight"),
                    "must be at least 1".into(),
                ));
            }
        };
        Ok(Mirror {
            pool: mirror.pool.value.clone(),
            percent,
            max_body,
            max_in_flight,
        })
    }

    fn redirect(&self, path: &str, raw: &Spanned<RawRedirect>) -> Result<Redirect, ConfigError> {
        let redirect = &raw.value;
        let scheme = match &redirect.scheme {
            None => None,
            Some(text) => Some(match text.value.trim().to_ascii_lowercase().as_str() {
                "http" => "http",
                "https" => "https",
                other => {
                    return Err(self.error_at(
                        text.referenced,
                        format!("{path}.scheme"),
                        format!("unknown scheme {other:?}: expected http or https"),
                    ));
                }
            }),
        };
        let host = match &redirect.host {
            None => None,
            Some(text) => match super::route::host_pattern(&text.value) {
                Ok(super::HostPattern::Exact(name)) => Some(name),
                _ => {
                    return Err(self.error_at(
                        text.referenced,
                        format!("{path}.host"),
                        format!(
                            "invalid host {:?}: expected a name like www.example.com (no port: use port, no '*')",
                            text.value
                        ),
                    ));
                }
            },
        };
        if let Some(port) = &redirect.port
            && port.value == 0
        {
            return Err(self.error_at(
                port.referenced,
                format!("{path}.port"),
                "port 0 cannot be redirected to".into(),
            ));
        }
        let target_path = match &redirect.path {
            None => None,
            Some(text) => {
                let value = text.value.trim();
                let valid = value.starts_with('/')
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
                if !valid {
                    return Err(self.error_at(
                        text.referenced,
                        format!("{path}.path"),
                        format!(
                            "invalid path {value:?}: must start with '/', no spaces, '?' or '#'"
                        ),
                    ));
                }
                Some(value.to_owned())
            }
        };
        let code = match &redirect.code {
            None => StatusCode::MOVED_PERMANENTLY,
            Some(code) if [301, 302, 303, 307, 308].contains(&code.value) => {
                StatusCode::from_u16(code.value).unwrap_or(StatusCode::MOVED_PERMANENTLY)
            }
            Some(code) => {
                return Err(self.error_at(
                    code.referenced,
                    format!("{path}.code"),
                    format!(
                        "{} is not a redirect code: use 301, 302, 303, 307 or 308",
                        code.value
                    ),
                ));
            }
        };
        if scheme.is_none()
            && host.is_none()
            && redirect.port.is_none()
            && target_path.is_none()
            && !redirect.strip_query.unwrap_or(false)
        {
            return Err(self.error_at(
                raw.referenced,
                path.to_owned(),
                "redirects to the same URL (a loop): set scheme, host, port, path or strip_query"
                    .into(),
            ));
        }
        Ok(Redirect {
            scheme,
            host,
            port: redirect.port.as_ref().map(|p| p.value),
            path: target_path,
            strip_query: redirect.strip_query.unwrap_or(false),
            code,
        })
    }

    fn respond(&self, path: &str, raw: &Spanned<RawRespond>) -> Result<Respond, ConfigError> {
        let respond = &raw.value;
        let status = match &respond.status {
            None => StatusCode::OK,
            Some(code) => match StatusCode::from_u16(code.value) {
                Ok(status) if code.value >= 200 && code.value <= 599 => status,
                _ => {
                    return Err(self.error_at(
                        code.referenced,
                        format!("{path}.status"),
                        format!("{} is not a final status code (200-599)", code.value),
                    ));
                }
            },
        };
        let (body, file) = match (&respond.body, &respond.file) {
            (Some(_), Some(file)) => {
                return Err(self.error_at(
                    file.referenced,
                    path.to_owned(),
                    "give either body or file, not both".into(),
                ));
            }
            (Some(body), None) => (Bytes::from(body.clone()), None),
            (None, Some(file)) => {
                let at = PathBuf::from(file.value.trim());
                let bytes = read_page(&at)
                    .map_err(|m| self.error_at(file.referenced, format!("{path}.file"), m))?;
                (bytes, Some(at))
            }
            (None, None) => (Bytes::new(), None),
        };
        if !body.is_empty() && matches!(status.as_u16(), 204 | 304) {
            return Err(self.error_at(
                raw.referenced,
                path.to_owned(),
                format!("status {} has no body", status.as_u16()),
            ));
        }
        let content_type = match &respond.content_type {
            Some(text) => HeaderValue::from_str(text.value.trim()).map_err(|_| {
                self.error_at(
                    text.referenced,
                    format!("{path}.content_type"),
                    format!("invalid content type {:?}", text.value),
                )
            })?,
            None => HeaderValue::from_static(
                file.as_deref()
                    .map_or("text/plain; charset=utf-8", content_type_of),
            ),
        };
        let mut headers = Vec::new();
        if let Some(map) = &respond.headers {
            for (name, value) in &map.value {
                let here = format!("{path}.headers.{name}");
                let parsed = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                    self.error_at(
                        map.referenced,
                        here.clone(),
                        format!("invalid header name {name:?}"),
                    )
                })?;
                if FRAMING.contains(&parsed.as_str()) || parsed == http::header::CONTENT_TYPE {
                    return Err(self.error_at(
                        map.referenced,
                        here,
                        format!("{parsed} is written by sluice (use content_type for the type)"),
                    ));
                }
                let value = HeaderValue::from_str(value).map_err(|_| {
                    self.error_at(
                        map.referenced,
                        here.clone(),
                        format!("invalid header value {value:?}"),
                    )
                })?;
                headers.push((parsed, value));
            }
        }
        Ok(Respond {
            status,
            body,
            content_type,
            headers,
            file,
        })
    }
}

/// Reads a page or a direct answer's body at validation; the message says what went wrong.
pub(super) fn read_page(path: &std::path::Path) -> Result<Bytes, String> {
    /// A page is sent from memory with every such answer: keep it an error page, not a site.
    const MAX_PAGE: u64 = 1024 * 1024;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > MAX_PAGE {
        return Err(format!(
            "{} is {} bytes; pages are kept in memory, at most 1 MiB",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The content type of a page by its extension; `application/octet-stream` when unknown.
pub(super) fn content_type_of(path: &std::path::Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}
