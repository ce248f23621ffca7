//! Edge protection: the one client address of a request (`client_address`), access rules
//! (`access`), rate limits (`rate`), open connections per client (`conns`), and the record of
//! who was refused (`refusals`), with the per-listener runtime state they share.
//!
//! Every refusal is explainable: counted in `sluice_requests_refused_total{listener, route,
//! rule, reason}`, noted in the listener's top refused keys (`/status`), and returned with
//! its rule's name for the access log. A `dry_run` rule is counted and noted the same way
//! (reason `..._dry_run`) and refuses nothing.
//!
//! State by identity (as `crate::state` does for backends): `EdgeState::build` reuses a
//! limiter from the previous snapshot when a rule of the same name still counts the same way
//! (`RateLimitConfig::same_buckets`), so a reload does not hand every client a full bucket;
//! the connection counts and the refusal record belong to the listener and always carry over.
//!
//! Imports `config`, `balance` (the cookie reader) and `metrics`; never `state` or `proxy`.

pub mod access;
pub mod client_address;
pub mod conns;
pub mod rate;
pub mod refusals;

use crate::config::edge::{AccessRule, RateKey, RateLimitConfig};
use crate::config::{ListenerConfig, RouteConfig};
use http::{HeaderMap, StatusCode};
use rate::{Decision, Limiter};
use std::net::IpAddr;
use std::sync::Arc;

pub use client_address::{ClientAddress, Source};
pub use conns::ClientConn;

/// A listener's edge runtime state, held by the snapshot.
#[derive(Debug, Default)]
pub struct EdgeState {
    /// The listener's own rate limit.
    pub limiter: Option<Arc<Limiter>>,
    /// One per route, by position (`None`: the route has no rate limit).
    pub route_limiters: Vec<Option<Arc<Limiter>>>,
    /// Each route's `route` label (`routes[INDEX]`), made once rather than per request.
    pub route_labels: Vec<String>,
    pub conns: Arc<conns::ConnCounts>,
    pub refusals: Arc<refusals::Refusals>,
}

impl EdgeState {
    /// The listener's own rules (named `name`), as `judge_request` takes them.
    pub fn listener_rules<'a>(&'a self, name: &'a str, config: &'a ListenerConfig) -> Rules<'a> {
        Rules {
            listener: name,
            route: "",
            access: &config.edge.access,
            rate_limit: config.edge.rate_limit.as_ref().zip(self.limiter.as_deref()),
            refusals: &self.refusals,
        }
    }

    /// The rules of the listener's route at `index`.
    pub fn route_rules<'a>(
        &'a self,
        name: &'a str,
        index: usize,
        route: &'a RouteConfig,
    ) -> Rules<'a> {
        let limiter = self.route_limiters.get(index).and_then(Option::as_deref);
        Rules {
            listener: name,
            route: self.route_labels.get(index).map_or("", String::as_str),
            access: &route.edge.access,
            rate_limit: route.edge.rate_limit.as_ref().zip(limiter),
            refusals: &self.refusals,
        }
    }

    /// `previous`: the same listener's config and state in the snapshot being replaced.
    pub fn build(
        config: &ListenerConfig,
        previous: Option<(&ListenerConfig, &EdgeState)>,
    ) -> EdgeState {
        // Every limiter of the old listener, by its rule.
        let mut old: Vec<(&RateLimitConfig, &Arc<Limiter>)> = Vec::new();
        if let Some((old_config, old_state)) = previous {
            if let (Some(rule), Some(limiter)) = (&old_config.edge.rate_limit, &old_state.limiter) {
                old.push((rule, limiter));
            }
            for (route, limiter) in old_config.routes.iter().zip(&old_state.route_limiters) {
                if let (Some(rule), Some(limiter)) = (&route.edge.rate_limit, limiter) {
                    old.push((rule, limiter));
                }
            }
        }
        let limiter_for = |rule: &RateLimitConfig| {
            old.iter()
                .find(|(before, _)| before.name == rule.name && before.same_buckets(rule))
                .map(|(_, limiter)| Arc::clone(limiter))
                .unwrap_or_else(|| {
                    Arc::new(Limiter::new(
                        rule.count,
                        rule.per,
                        rule.burst,
                        rule.max_keys,
                    ))
                })
        };
        EdgeState {
            limiter: config.edge.rate_limit.as_ref().map(limiter_for),
            route_limiters: config
                .routes
                .iter()
                .map(|route| route.edge.rate_limit.as_ref().map(limiter_for))
                .collect(),
            route_labels: (0..config.routes.len())
                .map(|index| format!("routes[{index}]"))
                .collect(),
            conns: previous.map_or_else(Arc::default, |(_, s)| Arc::clone(&s.conns)),
            refusals: previous.map_or_else(Arc::default, |(_, s)| Arc::clone(&s.refusals)),
        }
    }
}

/// A listener's edge state as `/status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EdgeReport {
    /// Keys held by the listener's limiters (its own and its routes'), against their
    /// `max_keys`.
    pub rate_limit_keys: usize,
    /// Client addresses with an open connection counted (`max_connections_per_client`).
    pub clients_with_connections: usize,
    /// The most refused keys (and dry-run would-be refusals), most first.
    pub top_refused: Vec<refusals::Refused>,
}

/// How many of the most refused keys `/status` lists per listener.
const TOP_SHOWN: usize = 10;

impl EdgeState {
    /// `None` for a listener with no edge rule that has refused nothing.
    pub fn report(&self) -> Option<EdgeReport> {
        let limiters = self
            .limiter
            .iter()
            .chain(self.route_limiters.iter().flatten());
        let rate_limit_keys = limiters.map(|l| l.len()).sum();
        let top_refused = self.refusals.top(TOP_SHOWN);
        let clients_with_connections = self.conns.clients();
        let configured = self.limiter.is_some()
            || self.route_limiters.iter().any(Option::is_some)
            || clients_with_connections > 0;
        (configured || !top_refused.is_empty()).then_some(EdgeReport {
            rate_limit_keys,
            clients_with_connections,
            top_refused,
        })
    }
}

/// Why a request or connection was (or, in a dry run, would have been) refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: String,
    pub reason: &'static str,
    /// `Retry-After` seconds (rate limits).
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// 403 for an access rule, 429 for a rate limit.
    pub fn status(&self) -> StatusCode {
        if self.retry_after.is_some() {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::FORBIDDEN
        }
    }

    /// The access log's words for it: `access_denied by office`.
    pub fn describe(&self) -> String {
        format!("{} by {}", self.reason, self.rule)
    }
}

/// What one phase of checks (the listener's, then the route's) decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The request is refused.
    pub refused: Option<Refusal>,
    /// A dry-run rule would have refused it (it passes).
    pub would_refuse: Option<Refusal>,
}

/// What a request is judged by, in one phase.
pub struct Rules<'a> {
    pub listener: &'a str,
    /// `""` for the listener's own rules, `routes[INDEX]` for a route's.
    pub route: &'a str,
    pub access: &'a [AccessRule],
    pub rate_limit: Option<(&'a RateLimitConfig, &'a Limiter)>,
    pub refusals: &'a refusals::Refusals,
}

impl Rules<'_> {
    pub fn is_empty(&self) -> bool {
        self.access.is_empty() && self.rate_limit.is_none()
    }
}

/// Judges one request: access rules first (a denied client takes no token), then the rate
/// limit. `now`: microseconds of `crate::clock`.
pub fn judge_request(
    rules: &Rules<'_>,
    client: Option<IpAddr>,
    headers: &HeaderMap,
    now: u64,
) -> Outcome {
    let mut outcome = Outcome::default();
    if rules.is_empty() {
        return outcome;
    }
    let verdict = access::check(rules.access, client);
    let key_text = || client.map_or_else(|| "unix:".to_owned(), |ip| ip.to_string());
    if let Some(rule) = verdict.would_deny {
        outcome.would_refuse = Some(record(
            rules,
            &rule.name,
            "access_denied_dry_run",
            None,
            key_text(),
        ));
    }
    if let Some(rule) = verdict.denied_by {
        outcome.refused = Some(record(rules, &rule.name, "access_denied", None, key_text()));
        return outcome;
    }
    let Some((config, limiter)) = rules.rate_limit else {
        return outcome;
    };
    let Some((key, counted)) = request_key(config, limiter, client, headers) else {
        return outcome;
    };
    if let Decision::Refuse { retry_after } = limiter.check(key, now) {
        let seconds = rate::retry_after_seconds(retry_after);
        let reason = if config.dry_run {
            "rate_limited_dry_run"
        } else {
            "rate_limited"
        };
        let refusal = record(
            rules,
            &config.name,
            reason,
            Some(seconds),
            counted.describe(),
        );
        if config.dry_run {
            outcome.would_refuse = outcome.would_refuse.or(Some(refusal));
        } else {
            outcome.refused = Some(refusal);
        }
    }
    outcome
}

/// A TCP connection, or any connection's per-client cap: the listener's access rules, its
/// open connections per client, then its rate limit (new connections per client). `Ok` holds
/// the connection's place in the per-client count (when the listener caps it).
pub fn judge_connection(
    listener: &str,
    config: &ListenerConfig,
    state: &EdgeState,
    client: Option<IpAddr>,
    now: u64,
) -> Result<Option<Box<ClientConn>>, Refusal> {
    let edge = &config.edge;
    let tcp = config.protocol == crate::config::Protocol::Tcp;
    let rules = Rules {
        listener,
        route: "",
        access: if tcp { &edge.access } else { &[] },
        rate_limit: None,
        refusals: &state.refusals,
    };
    let Some(ip) = client else {
        return Ok(None);
    };
    if tcp {
        let outcome = judge_request(&rules, client, &HeaderMap::new(), now);
        if let Some(refusal) = outcome.refused {
            return Err(refusal);
        }
    }
    let trusted = edge
        .client_address
        .trusted_proxies
        .iter()
        .any(|cidr| cidr.contains(ip));
    let place = match edge.max_connections_per_client {
        Some(max) if !trusted => match state.conns.try_open(ip, max) {
            Some(place) => Some(Box::new(place)),
            None => {
                return Err(record(
                    &rules,
                    "max_connections_per_client",
                    "connection_limit",
                    None,
                    ip.to_string(),
                ));
            }
        },
        _ => None,
    };
    if tcp
        && let (Some(config), Some(limiter)) = (&edge.rate_limit, &state.limiter)
        && let Decision::Refuse { retry_after } = limiter.check(rate::ip_key(ip), now)
    {
        let seconds = rate::retry_after_seconds(retry_after);
        if config.dry_run {
            record(
                &rules,
                &config.name,
                "rate_limited_dry_run",
                Some(seconds),
                ip.to_string(),
            );
        } else {
            return Err(record(
                &rules,
                &config.name,
                "rate_limited",
                Some(seconds),
                ip.to_string(),
            ));
        }
    }
    Ok(place)
}

/// What a request was counted by, for `/status` (made into text only when refused).
enum Counted<'a> {
    Route,
    Client(IpAddr),
    Value {
        kind: &'static str,
        name: &'a str,
        value: &'a [u8],
    },
}

impl Counted<'_> {
    fn describe(&self) -> String {
        match self {
            Counted::Route => "route".to_owned(),
            Counted::Client(ip) => ip.to_string(),
            Counted::Value { kind, name, value } => describe_value(kind, name, value),
        }
    }
}

/// The limiter key of a request, and what it counted by. `None`: not limited (a unix socket
/// client without an address, where the rule counts by client).
fn request_key<'a>(
    config: &'a RateLimitConfig,
    limiter: &Limiter,
    client: Option<IpAddr>,
    headers: &'a HeaderMap,
) -> Option<(u64, Counted<'a>)> {
    let value = match &config.key {
        RateKey::Route => return Some((0, Counted::Route)),
        RateKey::Client => None,
        RateKey::Header(name) => headers
            .get(name)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty())
            .map(|value| Counted::Value {
                kind: "header",
                name: name.as_str(),
                value,
            }),
        RateKey::Cookie(name) => crate::balance::cookie(headers, name)
            .filter(|v| !v.is_empty())
            .map(|value| Counted::Value {
                kind: "cookie",
                name: name.as_str(),
                value,
            }),
    };
    if let Some(counted) = value {
        let Counted::Value { value, .. } = &counted else {
            return None;
        };
        return Some((limiter.value_key(value), counted));
    }
    // No header or cookie: counted by client address, so leaving the value out is no way
    // around the limit.
    let ip = client?;
    Some((rate::ip_key(ip), Counted::Client(ip)))
}

/// `header:x-api-key=3f9a…`: enough to recognise a key, not enough to use it (header and
/// cookie values are often credentials; `/status` may be read by more people than hold them).
pub fn describe_value(kind: &str, name: &str, value: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(&value[..value.len().min(4)]).into_owned();
    let more = if value.len() > 4 { "…" } else { "" };
    format!("{kind}:{name}={shown}{more}")
}

fn record(
    rules: &Rules<'_>,
    rule: &str,
    reason: &'static str,
    retry_after: Option<u64>,
    key: String,
) -> Refusal {
    crate::metrics::edge::refused(rules.listener, rules.route, rule, reason);
    rules.refusals.note(rule, reason, key);
    Refusal {
        rule: rule.to_owned(),
        reason,
        retry_after,
    }
}

#[cfg(test)]
mod tests;
