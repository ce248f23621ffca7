//! Routes of a `protocol: tcp` listener: `match: {sni: NAME}` picks the pool by the TLS
//! server name of the client's ClientHello, without terminating TLS (passthrough).
//!
//! Pure config: names are stored as `HostPattern`s (lowercased; `*.example.com` matches any
//! number of labels in front, as HTTP host routes do). A tcp route may match on `sni` only,
//! and may not rewrite anything: there is no HTTP message to rewrite.

use super::file::RawRoute;
use super::route::host_pattern;
use super::{HostPattern, PoolConfig, Validator};
use crate::error::ConfigError;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniRoute {
    pub sni: HostPattern,
    pub pool: String,
}

impl SniRoute {
    /// Whether a client's (lowercased) server name matches.
    pub fn matches(&self, name: &str) -> bool {
        match &self.sni {
            HostPattern::Exact(exact) => exact == name,
            HostPattern::Wildcard(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        }
    }
}

/// The first route whose name matches, else `None` (the listener's default pool applies).
pub fn route_by_sni<'a>(routes: &'a [SniRoute], sni: Option<&str>) -> Option<&'a SniRoute> {
    let sni = sni?;
    routes.iter().find(|route| route.matches(sni))
}

impl Validator<'_> {
    pub(super) fn sni_routes(
        &self,
        path: &str,
        raw: &Spanned<Vec<Spanned<RawRoute>>>,
        pools: &BTreeMap<String, PoolConfig>,
    ) -> Result<Vec<SniRoute>, ConfigError> {
        let mut routes = Vec::new();
        for (index, entry) in raw.value.iter().enumerate() {
            let here = format!("{path}[{index}]");
            let route = &entry.value;
            let Some(pool) = &route.pool else {
                return Err(self.error_at(
                    entry.referenced,
                    format!("{here}.pool"),
                    "missing: a tcp route needs a pool (pools, redirect, respond and mirror \
                     need protocol: http)"
                        .into(),
                ));
            };
            self.pool_name(pool, &format!("{here}.pool"), pools)?;
            let matcher = &route.matcher.value;
            let http_only = matcher.host.is_some()
                || matcher.path.is_some()
                || matcher.path_prefix.is_some()
                || matcher.method.is_some()
                || matcher.header.is_some()
                || route.strip_prefix.is_some()
                || route.request_headers.is_some()
                || route.response_headers.is_some()
                || route.access.is_some()
                || route.rate_limit.is_some()
                || route.pools.is_some()
                || route.redirect.is_some()
                || route.respond.is_some()
                || route.mirror.is_some()
                || route.split_key.is_some()
                || route.compression.is_some();
            if http_only {
                return Err(self.error_at(
                    entry.referenced,
                    here,
                    "a tcp listener routes by match.sni only (host, path, method, header, \
                     header edits and per-route access or rate_limit need protocol: http; \
                     put access and rate_limit on the listener)"
                        .into(),
                ));
            }
            let Some(sni) = &matcher.sni else {
                return Err(self.error_at(
                    route.matcher.referenced,
                    format!("{here}.match.sni"),
                    "missing: a tcp route needs match.sni".into(),
                ));
            };
            let pattern = host_pattern(&sni.value)
                .map_err(|m| self.error_at(sni.referenced, format!("{here}.match.sni"), m))?;
            routes.push(SniRoute {
                sni: pattern,
                pool: pool.value.clone(),
            });
        }
        Ok(routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_name_wins() {
        let routes = [
            SniRoute {
                sni: HostPattern::Exact("api.example.com".into()),
                pool: "api".into(),
            },
            SniRoute {
                sni: HostPattern::Wildcard(".example.com".into()),
                pool: "web".into(),
            },
        ];
        let pool = |name| route_by_sni(&routes, name).map(|r| r.pool.as_str());
        assert_eq!(pool(Some("api.example.com")), Some("api"));
        assert_eq!(pool(Some("www.example.com")), Some("web"));
        assert_eq!(pool(Some("a.b.example.com")), Some("web"));
        assert_eq!(pool(Some("example.com")), None);
        assert_eq!(pool(Some("other.net")), None);
        assert_eq!(pool(None), None);
    }
}
