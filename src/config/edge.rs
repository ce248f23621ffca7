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

impl std::fmt::Display for AccessRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match self.action {
            AccessAction::Allow => "allow",
            AccessAction::Deny => "deny",
        };
        let blocks: Vec<String> = self.networks.iter().map(ToString::to_string).collect();
        write!(f, "{} {action} {}", self.name, blocks.join(" "))?;
        if self.dry_run {
            write!(f, " (dry run)")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for RateLimitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        let key = match &self.key {
            RateKey::Client => "client".to_owned(),
            RateKey::Header(name) => format!("header:{name}"),
            RateKey::Cookie(name) => format!("cookie:{name}"),
            RateKey::Route => "route".to_owned(),
        };
        write!(
            f,
            "{}/{unit} burst {} key {key} max_keys {}",
            self.count, self.burst, self.max_keys
        )?;
        if self.dry_run {
            write!(f, " (dry run)")?;
        }
        Ok(())
    }
}

/// What a reload changes in a listener's edge rules, one line each, for the reload plan
/// (`sluice check --diff`): rules added, removed or changed, and whether a rate limit keeps
/// its buckets (same name, same rate, burst, key and max_keys) or starts every key full.
pub fn edge_changes(
    name: &str,
    old: &super::ListenerConfig,
    new: &super::ListenerConfig,
) -> Vec<String> {
    let mut lines = Vec::new();
    if old.edge.client_address != new.edge.client_address {
        let show = |c: &ClientAddressConfig| {
            let list: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
            format!("[{}]", list.join(", "))
        };
        lines.push(format!(
            "listener {name}: client_address.trusted_proxies {} -> {}",
            show(&old.edge.client_address),
            show(&new.edge.client_address)
        ));
    }
    if old.edge.max_connections_per_client != new.edge.max_connections_per_client {
        let show = |n: Option<u32>| n.map_or_else(|| "none".to_owned(), |n| n.to_string());
        lines.push(format!(
            "listener {name}: max_connections_per_client {} -> {} (open connections are kept)",
            show(old.edge.max_connections_per_client),
            show(new.edge.max_connections_per_client)
        ));
    }
    let access_scopes = |config: &super::ListenerConfig| {
        let mut scopes = vec![("".to_owned(), config.edge.access.clone())];
        for (index, route) in config.routes.iter().enumerate() {
            scopes.push((format!(" route {index}"), route.edge.access.clone()));
        }
        scopes
    };
    let (before, after) = (access_scopes(old), access_scopes(new));
    for (scope, rules) in &after {
        let old_rules = before
            .iter()
            .find(|(s, _)| s == scope)
            .map_or(&[][..], |(_, r)| &r[..]);
        if old_rules != &rules[..] {
            let show = |rules: &[AccessRule]| {
                let list: Vec<String> = rules.iter().map(ToString::to_string).collect();
                if list.is_empty() {
                    "none".to_owned()
                } else {
                    list.join("; ")
                }
            };
            lines.push(format!(
                "listener {name}{scope}: access rules: {} -> {}",
                show(old_rules),
                show(rules)
            ));
        }
    }
    let limits = |config: &super::ListenerConfig| {
        let mut all: Vec<RateLimitConfig> = config.edge.rate_limit.iter().cloned().collect();
        all.extend(
            config
                .routes
                .iter()
                .filter_map(|r| r.edge.rate_limit.clone()),
        );
        all
    };
    let (before, after) = (limits(old), limits(new));
    for rule in &after {
        match before.iter().find(|b| b.name == rule.name) {
            None => lines.push(format!(
                "listener {name}: rate limit {} added: {rule}",
                rule.name
            )),
            Some(old_rule) if old_rule == rule => {}
            Some(old_rule) if old_rule.same_buckets(rule) => lines.push(format!(
                "listener {name}: rate limit {}: {old_rule} -> {rule} (buckets kept)",
                rule.name
            )),
            Some(old_rule) => lines.push(format!(
                "listener {name}: rate limit {}: {old_rule} -> {rule} (buckets start full)",
                rule.name
            )),
        }
    }
    for rule in &before {
        if !after.iter().any(|a| a.name == rule.name) {
            lines.push(format!(
                "listener {name}: rate limit {} removed (its buckets are dropped)",
                rule.name
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const BASE: &str = "
listeners:
  web:
    bind: 127.0.0.1:0
    pool: app
    client_address: { trusted_proxies: [10.0.0.0/8, '2001:db8::/32'] }
    max_connections_per_client: 20
    access: [ { allow: 10.0.0.0/8 }, { deny: all, name: others, dry_run: true } ]
    rate_limit: { rate: 600/m, burst: 100 }
    routes:
      - match: { path_prefix: /login }
        pool: app
        rate_limit: { rate: 5/s, name: login }
      - match: { path_prefix: /api }
        pool: app
        access: [ { deny: [192.0.2.0/24, '2001:db8:bad::/48'] } ]
        rate_limit: { rate: 10/s, key: 'cookie:session', max_keys: 1000 }
pools:
  app: { backends: [127.0.0.1:9] }
";

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "t.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_edge_section_validates_with_defaults() {
        let config = parse(BASE).unwrap();
        let web = &config.listeners["web"];
        assert_eq!(web.edge.client_address.trusted_proxies.len(), 2);
        assert_eq!(web.edge.max_connections_per_client, Some(20));
        assert_eq!(web.edge.access.len(), 2);
        assert_eq!(web.edge.access[0].name, "access[0]");
        assert_eq!(web.edge.access[1].networks.len(), 2, "all: both families");
        assert!(web.edge.access[1].dry_run);
        let listener_limit = web.edge.rate_limit.as_ref().unwrap();
        assert_eq!((listener_limit.count, listener_limit.burst), (600, 100));
        assert_eq!(listener_limit.max_keys, DEFAULT_MAX_KEYS);
        let login = web.routes[0].edge.rate_limit.as_ref().unwrap();
        assert_eq!((login.name.as_str(), login.burst), ("login", 5));
        let api = &web.routes[1].edge;
        assert_eq!(api.access[0].name, "routes[1].access[0]");
        let api_limit = api.rate_limit.as_ref().unwrap();
        assert_eq!(api_limit.name, "routes[1].rate_limit");
        assert_eq!(api_limit.key, RateKey::Cookie("session".into()));
        assert_eq!(api_limit.max_keys, 1000);
    }

    #[test]
    fn mistakes_are_refused_with_their_path() {
        let cases = [
            (
                "rate: 5/s, name: login",
                "rate: 5/x, name: login",
                "routes[0].rate_limit.rate",
            ),
            ("rate: 5/s, name: login", "rate: 0/s", "must be at least 1"),
            (
                "rate: 5/s, name: login",
                "rate: 5/s, burst: 0",
                "routes[0].rate_limit.burst",
            ),
            (
                "rate: 5/s, name: login",
                "rate: 5/s, key: 'ip'",
                "routes[0].rate_limit.key",
            ),
            (
                "rate: 5/s, name: login",
                "rate: 5/s, name: 'a b'",
                "invalid name",
            ),
            (
                "{ allow: 10.0.0.0/8 }",
                "{ allow: 10.0.0.0/33 }",
                "web.access[0].allow",
            ),
            (
                "{ allow: 10.0.0.0/8 }",
                "{ allow: 10.0.0.0/8, deny: all }",
                "exactly one of allow or deny",
            ),
            (
                "[10.0.0.0/8, '2001:db8::/32']",
                "[10.0.0.0/8, nonsense]",
                "trusted_proxies[1]",
            ),
            (
                "max_connections_per_client: 20",
                "max_connections_per_client: 0",
                "at least 1",
            ),
            ("max_keys: 1000", "max_keys: 0", "max_keys"),
        ];
        for (from, to, expected) in cases {
            let text = BASE.replacen(from, to, 1);
            assert_ne!(text, BASE, "{from}");
            let error = parse(&text).unwrap_err();
            assert!(error.contains(expected), "{to}: {error}");
        }
    }

    #[test]
    fn tcp_listeners_take_connection_rules_only() {
        let tcp = "listeners:\n  db: {bind: '127.0.0.1:0', protocol: tcp, pool: app, RULE}\npools:\n  app: {backends: [127.0.0.1:9]}\n";
        let ok = tcp.replace("RULE", "access: [{deny: 192.0.2.0/24}], rate_limit: {rate: 10/s}, max_connections_per_client: 5");
        assert!(parse(&ok).is_ok(), "{:?}", parse(&ok).err());
        let by_header = tcp.replace("RULE", "rate_limit: {rate: 10/s, key: 'header:X-A'}");
        assert!(
            parse(&by_header)
                .unwrap_err()
                .contains("key must be client")
        );
        let xff = tcp.replace("RULE", "client_address: {trusted_proxies: [10.0.0.0/8]}");
        assert!(
            parse(&xff)
                .unwrap_err()
                .contains("protocol: http listeners only")
        );
    }

    #[test]
    fn the_reload_plan_names_rule_changes_and_what_happens_to_buckets() {
        let old = parse(BASE).unwrap();
        let new = parse(
            &BASE
                .replace(
                    "rate: 5/s, name: login",
                    "rate: 5/s, name: login, dry_run: true",
                )
                .replace("rate: 600/m, burst: 100", "rate: 1200/m, burst: 100")
                .replace(
                    "{ deny: all, name: others, dry_run: true }",
                    "{ deny: all, name: others }",
                ),
        )
        .unwrap();
        let lines = edge_changes("web", &old.listeners["web"], &new.listeners["web"]);
        let text = lines.join("\n");
        assert!(text.contains("rate limit login: 5/s burst 5 key client max_keys 100000 -> 5/s burst 5 key client max_keys 100000 (dry run) (buckets kept)"), "{text}");
        assert!(text.contains("rate limit rate_limit: 600/m burst 100 key client max_keys 100000 -> 1200/m burst 100 key client max_keys 100000 (buckets start full)"), "{text}");
        assert!(text.contains("listener web: access rules: access[0] allow 10.0.0.0/8; others deny 0.0.0.0/0 ::/0 (dry run) -> access[0] allow 10.0.0.0/8; others deny 0.0.0.0/0 ::/0"), "{text}");
        assert_eq!(lines.len(), 3, "{text}");
        assert!(edge_changes("web", &old.listeners["web"], &old.listeners["web"]).is_empty());
    }
}
