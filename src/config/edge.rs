//! Edge protection settings, validated: which peers may speak for a client
//! (`client_address.trusted_proxies`), access rules (`access:`), rate limits (`rate_limit:`)
//! and the per-client connection cap (`max_connections_per_client`), on listeners and routes.
//!
//! The YAML mirror of these keys lives here too (as `tls.rs` keeps its own), so `file.rs`
//! only names them. Pure: how a request is judged by them is `crate::edge`.

use super::Validator;
use super::proxy_protocol::Cidr;
use crate::error::ConfigError;
use http::HeaderName;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::time::Duration;

/// `client_address: { trusted_proxies: [CIDR, ...] }` on a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAddress {
    pub trusted_proxies: Option<Vec<String>>,
}

/// One entry of `access:`: exactly one of `allow` or `deny`, each one block or a list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessRule {
    pub allow: Option<RawNetworks>,
    pub deny: Option<RawNetworks>,
    /// Count and log what the rule would deny, deny nothing.
    pub dry_run: Option<bool>,
    /// The rule's name in metrics, logs and `/status` (default `access[INDEX]`).
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawNetworks {
    One(String),
    Many(Vec<String>),
}

/// `rate_limit: { rate: 5/s, burst: 10, key: client, dry_run: false, max_keys: 100000 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<u32>>,
    pub key: Option<Spanned<String>>,
    pub dry_run: Option<bool>,
    pub max_keys: Option<Spanned<u32>>,
    pub name: Option<String>,
}

/// Whose address a request is judged and logged by (`crate::edge::client_address`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientAddressConfig {
    /// Peers whose `X-Forwarded-For` is believed, walked from the right (nginx's
    /// `real_ip_recursive on`). Empty: the connection's address (or its PROXY header's) is
    /// the client, and `X-Forwarded-For` is never read.
    pub trusted_proxies: Vec<Cidr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessAction {
    Allow,
    Deny,
}

/// One access rule: the first rule whose networks hold the client decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    pub name: String,
    pub action: AccessAction,
    pub networks: Vec<Cidr>,
    pub dry_run: bool,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client address (`crate::edge::client_address`).
    Client,
    /// The value of a request header; requests without it count by client address.
    Header(HeaderName),
    /// The value of a cookie; requests without it count by client address.
    Cookie(String),
    /// One bucket for every request the rule sees (the route's, or the listener's).
    Route,
}

/// A token bucket per key: `burst` requests at once, refilled at `count` per `per`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub name: String,
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
    pub key: RateKey,
    pub dry_run: bool,
    /// Keys remembered at most; beyond it the least recently seen is forgotten.
    pub max_keys: u32,
}

impl RateLimitConfig {
    /// What a limiter's buckets depend on: a reload that keeps these keeps the buckets
    /// (`dry_run` and the name can change without forgetting anyone).
    pub fn same_buckets(&self, other: &RateLimitConfig) -> bool {
        (self.count, self.per, self.burst, &self.key, self.max_keys)
            == (
                other.count,
                other.per,
                other.burst,
                &other.key,
                other.max_keys,
            )
    }
}

/// A listener's edge settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerEdge {
    pub client_address: ClientAddressConfig,
    pub access: Vec<AccessRule>,
    /// HTTP: requests; TCP: new connections (keyed by client only).
    pub rate_limit: Option<RateLimitConfig>,
    /// Open connections from one client address at most (nginx's `limit_conn`).
    pub max_connections_per_client: Option<u32>,
}

/// A route's edge settings (checked after the listener's).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteEdge {
    pub access: Vec<AccessRule>,
    pub rate_limit: Option<RateLimitConfig>,
}

/// nginx's 10 MB `limit_req_zone` holds about 160,000 states; 100,000 keys cost sluice
/// about 4 MiB (38 bytes a key, see docs/edge-protection.md).
pub const DEFAULT_MAX_KEYS: u32 = 100_000;
const MAX_MAX_KEYS: u32 = 100_000_000;

/// `5/s`, `600/m`, `100/h`: (count, period).
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("invalid rate {text:?}: expected COUNT/UNIT such as 5/s, 600/m or 100/h");
    let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(format!("invalid rate {text:?}: must be at least 1"));
    }
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    Ok((count, per))
}

/// `client`, `header:NAME`, `cookie:NAME`, `route`.
pub fn parse_rate_key(text: &str) -> Result<RateKey, String> {
    let text = text.trim();
    match text.split_once(':') {
        None if text == "client" => Ok(RateKey::Client),
        None if text == "route" => Ok(RateKey::Route),
        Some(("header", name)) => HeaderName::from_bytes(name.trim().as_bytes())
            .map(RateKey::Header)
            .map_err(|_| format!("invalid header name {name:?}")),
        Some(("cookie", name)) if !name.trim().is_empty() => {
            Ok(RateKey::Cookie(name.trim().to_owned()))
        }
        _ => Err(format!(
            "invalid key {text:?}: expected client, header:NAME, cookie:NAME or route"
        )),
    }
}

fn networks(raw: &RawNetworks) -> Result<Vec<Cidr>, String> {
    let texts: Vec<&str> = match raw {
        RawNetworks::One(text) => vec![text.as_str()],
        RawNetworks::Many(list) => list.iter().map(String::as_str).collect(),
    };
    if texts.is_empty() {
        return Err("empty list: name at least one address block, or `all`".into());
    }
    let mut out = Vec::new();
    for text in texts {
        if text.trim() == "all" {
            out.push(Cidr::parse("0.0.0.0/0")?);
            out.push(Cidr::parse("::/0")?);
        } else {
            out.push(Cidr::parse(text)?);
        }
    }
    Ok(out)
}

impl Validator<'_> {
    pub(super) fn client_address(
        &self,
        path: &str,
        raw: Option<&Spanned<RawClientAddress>>,
    ) -> Result<ClientAddressConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(ClientAddressConfig::default());
        };
        let mut trusted_proxies = Vec::new();
        for (index, text) in raw.value.trusted_proxies.iter().flatten().enumerate() {
            trusted_proxies.push(Cidr::parse(text).map_err(|message| {
                self.error_at(
                    raw.referenced,
                    format!("{path}.client_address.trusted_proxies[{index}]"),
                    message,
                )
            })?);
        }
        Ok(ClientAddressConfig { trusted_proxies })
    }

    pub(super) fn access_rules(
        &self,
        path: &str,
        raw: Option<&Spanned<Vec<Spanned<RawAccessRule>>>>,
        name_prefix: &str,
    ) -> Result<Vec<AccessRule>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Vec::new());
        };
        let mut rules = Vec::new();
        for (index, spanned) in raw.value.iter().enumerate() {
            let here = format!("{path}.access[{index}]");
            let rule = &spanned.value;
            let (action, list) = match (&rule.allow, &rule.deny) {
                (Some(list), None) => (AccessAction::Allow, list),
                (None, Some(list)) => (AccessAction::Deny, list),
                _ => {
                    return Err(self.error_at(
                        spanned.referenced,
                        here,
                        "give exactly one of allow or deny".into(),
                    ));
                }
            };
            let field = match action {
                AccessAction::Allow => "allow",
                AccessAction::Deny => "deny",
            };
            let networks = networks(list)
                .map_err(|m| self.error_at(spanned.referenced, format!("{here}.{field}"), m))?;
            let name = self
                .rule_name(
                    rule.name.as_deref(),
                    &format!("{name_prefix}access[{index}]"),
                )
                .map_err(|m| self.error_at(spanned.referenced, format!("{here}.name"), m))?;
            rules.push(AccessRule {
                name,
                action,
                networks,
                dry_run: rule.dry_run.unwrap_or(false),
            });
        }
        Ok(rules)
    }

    /// `default_name` names an unnamed rule (metrics, logs, `/status`).
    pub(super) fn rate_limit(
        &self,
        path: &str,
        raw: Option<&Spanned<RawRateLimit>>,
        default_name: &str,
    ) -> Result<Option<RateLimitConfig>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let here = format!("{path}.rate_limit");
        let limit = &raw.value;
        let (count, per) = parse_rate(&limit.rate.value)
            .map_err(|m| self.error_at(limit.rate.referenced, format!("{here}.rate"), m))?;
        // One second's worth of requests, at least one: a browser's parallel requests for a
        // page pass, and nginx's `burst=0` surprise (every second request within the
        // interval refused) is avoided.
        let default_burst = ((u64::from(count) * 1000)
            .div_ceil(per.as_millis().max(1) as u64)
            .max(1))
        .min(u64::from(u32::MAX)) as u32;
        let burst = match &limit.burst {
            None => default_burst,
            Some(b) if b.value == 0 => {
                return Err(self.error_at(
                    b.referenced,
                    format!("{here}.burst"),
                    "must be at least 1 (the requests allowed at once)".into(),
                ));
            }
            Some(b) => b.value,
        };
        let key = match &limit.key {
            None => RateKey::Client,
            Some(text) => parse_rate_key(&text.value)
                .map_err(|m| self.error_at(text.referenced, format!("{here}.key"), m))?,
        };
        let max_keys = match &limit.max_keys {
            None => DEFAULT_MAX_KEYS,
            Some(n) if n.value == 0 || n.value > MAX_MAX_KEYS => {
                return Err(self.error_at(
                    n.referenced,
                    format!("{here}.max_keys"),
                    format!("must be between 1 and {MAX_MAX_KEYS}"),
                ));
            }
            Some(n) => n.value,
        };
        let name = self
            .rule_name(limit.name.as_deref(), default_name)
            .map_err(|m| self.error_at(raw.referenced, format!("{here}.name"), m))?;
        Ok(Some(RateLimitConfig {
            name,
            count,
            per,
            burst,
            key,
            dry_run: limit.dry_run.unwrap_or(false),
            max_keys,
        }))
    }

    fn rule_name(&self, given: Option<&str>, default: &str) -> Result<String, String> {
        match given {
            None => Ok(default.to_owned()),
            Some(name) => super::check_name(name).map(|()| name.to_owned()),
        }
    }

    /// A listener's edge keys; `tcp`: a TCP listener, whose rate limit counts connections
    /// by client only.
    pub(super) fn listener_edge(
        &self,
        path: &str,
        tcp: bool,
        client_address: Option<&Spanned<RawClientAddress>>,
        access: Option<&Spanned<Vec<Spanned<RawAccessRule>>>>,
        rate_limit: Option<&Spanned<RawRateLimit>>,
        max_connections_per_client: Option<&Spanned<u32>>,
    ) -> Result<ListenerEdge, ConfigError> {
        if tcp && let Some(raw) = client_address {
            return Err(self.error_at(
                raw.referenced,
                format!("{path}.client_address"),
                "X-Forwarded-For is read by protocol: http listeners only (a tcp listener \
                 takes the client from the connection, or from proxy_protocol)"
                    .into(),
            ));
        }
        if tcp
            && let Some(key) = rate_limit.and_then(|r| r.value.key.as_ref())
            && parse_rate_key(&key.value).is_ok_and(|k| k != RateKey::Client)
        {
            return Err(self.error_at(
                key.referenced,
                format!("{path}.rate_limit.key"),
                "a tcp listener limits new connections per client: key must be client".into(),
            ));
        }
        let rate_limit = self.rate_limit(path, rate_limit, "rate_limit")?;
        let max_connections_per_client = match max_connections_per_client {
            None => None,
            Some(n) if n.value == 0 => {
                return Err(self.error_at(
                    n.referenced,
                    format!("{path}.max_connections_per_client"),
                    "must be at least 1 (omit it for no limit)".into(),
                ));
            }
            Some(n) => Some(n.value),
        };
        Ok(ListenerEdge {
            client_address: self.client_address(path, client_address)?,
            access: self.access_rules(path, access, "")?,
            rate_limit,
            max_connections_per_client,
        })
    }

    /// `index`: the route's position, which names its unnamed rules (`routes[2].access[0]`).
    pub(super) fn route_edge(
        &self,
        path: &str,
        index: usize,
        access: Option<&Spanned<Vec<Spanned<RawAccessRule>>>>,
        rate_limit: Option<&Spanned<RawRateLimit>>,
    ) -> Result<RouteEdge, ConfigError> {
        let prefix = format!("routes[{index}].");
        Ok(RouteEdge {
            access: self.access_rules(path, access, &prefix)?,
            rate_limit: self.rate_limit(path, rate_limit, &format!("{prefix}rate_limit"))?,
        })
    }
}

#[path = "edge_plan.rs"]
mod plan;
pub use plan::edge_changes;

#[cfg(test)]
#[path = "edge_tests.rs"]
mod tests;
