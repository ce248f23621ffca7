//! What a matched HTTP route does: forward to a pool (or split over several pools by weight,
//! optionally mirroring a sample to a shadow pool), redirect, or answer directly. The YAML
//! mirror of `pools` and `mirror`, the validated types and the validation of a route's action
//! (one of them) with positioned errors.
//!
//! Pure config types. `redirect` and `respond` are validated in `direct_answer.rs`.
//!
//! Decision: a route has exactly one of `pool`, `pools`, `redirect`, `respond` (two would be
//! a guess about which one wins).

pub use super::direct_answer::{Redirect, Respond};
use super::file::{RawRoute, Text};
use super::{HashKey, PoolConfig, Validator, parse_hash_key, parse_size};
use crate::error::ConfigError;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;

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
}
