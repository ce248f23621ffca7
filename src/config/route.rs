//! Validated HTTP routes of a listener (`routes:`): match conditions, target pool and the
//! optional rewrites, converted from the YAML mirror with positioned errors.
//!
//! Pure config types only. How a request is matched against them lives in `crate::route`, which
//! compiles these once per snapshot. Host patterns are stored lowercased and paths normalised
//! here, so matching a request never allocates.

use super::file::{RawHeaderEdits, RawRoute, Text};
use super::{PoolConfig, RouteAction, Validator};
use crate::error::ConfigError;
use http::{HeaderName, HeaderValue, Method};
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub matcher: RouteMatch,
    /// Forward (one pool or a weighted split, maybe mirrored), redirect or answer directly.
    pub action: RouteAction,
    /// Removed from the front of the path (segment-aware) before the request is forwarded.
    pub strip_prefix: Option<String>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    /// Access rules and rate limit of this route, checked after the listener's.
    pub edge: super::edge::RouteEdge,
    /// `None`: the listener's compression; `Some(None)`: off for this route.
    pub compression: Option<Option<super::compression::Compression>>,
}

/// Every condition given must hold; an empty match matches every request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteMatch {
    pub host: Option<HostPattern>,
    pub path: Option<PathPattern>,
    pub method: Option<Method>,
    pub header: Option<HeaderCondition>,
    /// On the client's verified certificate (`tls.client_auth` listeners).
    pub client_cert: Option<super::tls::ClientCertMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `api.example.com`, lowercased, without port.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`: any number of labels in front
    /// (nginx's rule), but not `example.com` itself.
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// Exactly this path (query excluded).
    Exact(String),
    /// This path or anything below it: `/api` matches `/api` and `/api/x`, never `/apix`.
    /// Stored without a trailing slash (`/` stays `/`).
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    pub name: HeaderName,
    /// `None`: the header only has to be present.
    pub value: Option<HeaderValue>,
}

/// Applied in this order: `remove`, then `set` (which replaces every earlier value).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderEdits {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// Headers that frame the message or describe the connection: editing them would break the
/// exchange (or smuggle requests), so routes may neither set nor remove them.
const FORBIDDEN_EDITS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

impl Validator<'_> {
    pub(super) fn routes(
        &self,
        path: &str,
        raw: &Spanned<Vec<Spanned<RawRoute>>>,
        pools: &BTreeMap<String, PoolConfig>,
    ) -> Result<Vec<RouteConfig>, ConfigError> {
        raw.value
            .iter()
            .enumerate()
            .map(|(index, route)| self.route(&format!("{path}[{index}]"), index, route, pools))
            .collect()
    }

    fn route(
        &self,
        path: &str,
        index: usize,
        raw: &Spanned<RawRoute>,
        pools: &BTreeMap<String, PoolConfig>,
    ) -> Result<RouteConfig, ConfigError> {
        let route = &raw.value;
        let action = self.route_action(path, raw.referenced, route, pools)?;
        let raw_match = &route.matcher.value;
        let at = route.matcher.referenced;
        if let Some(sni) = &raw_match.sni {
            return Err(self.error_at(
                sni.referenced,
                format!("{path}.match.sni"),
                "sni matches need protocol: tcp (an http listener routes by host)".into(),
            ));
        }
        let host = match &raw_match.host {
            None => None,
            Some(text) => Some(
                host_pattern(&text.value)
                    .map_err(|m| self.error_at(text.referenced, format!("{path}.match.host"), m))?,
            ),
        };
        let exact = self.opt_path(raw_match.path.as_ref(), &format!("{path}.match.path"))?;
        let prefix = self.opt_path(
            raw_match.path_prefix.as_ref(),
            &format!("{path}.match.path_prefix"),
        )?;
        let path_pattern = match (exact, prefix) {
            (Some(_), Some(_)) => {
                return Err(self.error_at(
                    at,
                    format!("{path}.match"),
                    "give either path or path_prefix, not both".into(),
                ));
            }
            (Some(exact), None) => Some(PathPattern::Exact(exact)),
            (None, Some(prefix)) => Some(PathPattern::Prefix(trim_slash(prefix))),
            (None, None) => None,
        };
        let method =
            match &raw_match.method {
                None => None,
                Some(text) => Some(method(&text.value).map_err(|m| {
                    self.error_at(text.referenced, format!("{path}.match.method"), m)
                })?),
            };
        let header = match &raw_match.header {
            None => None,
            Some(spanned) => {
                let here = format!("{path}.match.header");
                let name = header_name(&spanned.value.name)
                    .map_err(|m| self.error_at(spanned.referenced, format!("{here}.name"), m))?;
                let value = match &spanned.value.value {
                    None => None,
                    Some(value) => Some(header_value(value).map_err(|m| {
                        self.error_at(spanned.referenced, format!("{here}.value"), m)
                    })?),
                };
                Some(HeaderCondition { name, value })
            }
        };
        let strip_prefix = self
            .opt_path(route.strip_prefix.as_ref(), &format!("{path}.strip_prefix"))?
            .map(trim_slash);
        let edge = self.route_edge(
            path,
            index,
            route.access.as_ref(),
            route.rate_limit.as_ref(),
        )?;
        Ok(RouteConfig {
            edge,
            matcher: RouteMatch {
                host,
                path: path_pattern,
                method,
                header,
                client_cert: self.client_cert_match(path, raw_match.client_cert.as_ref())?,
            },
            action,
            compression: self.compression(path, route.compression.as_ref())?,
            strip_prefix,
            request_headers: self.edits(
                route.request_headers.as_ref(),
                &format!("{path}.request_headers"),
            )?,
            response_headers: self.edits(
                route.response_headers.as_ref(),
                &format!("{path}.response_headers"),
            )?,
        })
    }

    /// Refuses a reference to a pool that is not defined, listing the ones that are.
    pub(super) fn pool_name(
        &self,
        text: &Text,
        path: &str,
        pools: &BTreeMap<String, PoolConfig>,
    ) -> Result<(), ConfigError> {
        if pools.contains_key(&text.value) {
            return Ok(());
        }
        let known: Vec<&str> = pools.keys().map(String::as_str).collect();
        Err(self.error_at(
            text.referenced,
            path.to_owned(),
            format!(
                "no pool named {:?} (pools defined: {})",
                text.value,
                known.join(", ")
            ),
        ))
    }

    fn opt_path(&self, text: Option<&Text>, path: &str) -> Result<Option<String>, ConfigError> {
        let Some(text) = text else {
            return Ok(None);
        };
        let value = text.value.trim();
        let valid = value.starts_with('/')
            && value
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        if !valid {
            return Err(self.error_at(
                text.referenced,
                path.to_owned(),
                format!("invalid path {value:?}: must start with '/', no spaces, '?' or '#'"),
            ));
        }
        Ok(Some(value.to_owned()))
    }

    fn edits(
        &self,
        raw: Option<&Spanned<RawHeaderEdits>>,
        path: &str,
    ) -> Result<HeaderEdits, ConfigError> {
        let Some(raw) = raw else {
            return Ok(HeaderEdits::default());
        };
        let error = |at: Location, field: String, message: String| {
            self.error_at(at, format!("{path}.{field}"), message)
        };
        let mut edits = HeaderEdits::default();
        for (name, value) in raw.value.set.iter().flatten() {
            let parsed =
                editable_name(name).map_err(|m| error(raw.referenced, format!("set.{name}"), m))?;
            let value =
                header_value(value).map_err(|m| error(raw.referenced, format!("set.{name}"), m))?;
            edits.set.push((parsed, value));
        }
        for (index, name) in raw.value.remove.iter().flatten().enumerate() {
            let parsed = editable_name(name)
                .map_err(|m| error(raw.referenced, format!("remove[{index}]"), m))?;
            edits.remove.push(parsed);
        }
        Ok(edits)
    }
}

fn trim_slash(path: String) -> String {
    match path.trim_end_matches('/') {
        "" => "/".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

pub(super) fn host_pattern(text: &str) -> Result<HostPattern, String> {
    let host = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !name.split('.').any(str::is_empty);
    if !valid {
        return Err(format!(
            "invalid host {text:?}: expected a name like api.example.com or *.example.com \
             (no port, no '*' elsewhere)"
        ));
    }
    Ok(if wildcard {
        HostPattern::Wildcard(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

fn method(text: &str) -> Result<Method, String> {
    let text = text.trim();
    // Methods are case-sensitive (RFC 9110 9.1); `get` is a different method from `GET`,
    // which is almost certainly not what the operator meant.
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "invalid method {text:?}: methods are case-sensitive, write {:?}",
            text.to_ascii_uppercase()
        ));
    }
    Method::from_bytes(text.as_bytes()).map_err(|_| format!("invalid method {text:?}"))
}

fn header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("invalid header name {text:?}"))
}

fn editable_name(text: &str) -> Result<HeaderName, String> {
    let name = header_name(text)?;
    if FORBIDDEN_EDITS.contains(&name.as_str()) {
        return Err(format!(
            "{name} frames the message or the connection and cannot be edited by a route"
        ));
    }
    Ok(name)
}

fn header_value(text: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(text).map_err(|_| format!("invalid header value {text:?}"))
}
