//! The `dns` discovery source: SRV records (target, port, weight), or A/AAAA records of a name
//! plus a configured port, re-resolved when the answer's TTL runs out.
//!
//! The interval is the smallest TTL of the answer, clamped to [1 s, `refresh`]. DNS is
//! advisory: a timeout, SERVFAIL, NXDOMAIN or an empty answer keeps the last good set and is
//! retried with a backoff (1 s doubling up to `refresh`). With `max_stale`, a set not
//! confirmed for that long is withdrawn, so the pool falls back to its static backends (none:
//! 503 / connection closed until DNS answers again); without it the set is kept for ever.
//! hickory's cache is off: this loop is the cache, and it must see a changed record at once.

use super::Publisher;
use crate::config::discovery::{DNS_MIN_REFRESH, DnsSource};
use crate::config::{BackendConfig, MAX_WEIGHT};
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub async fn run(source: DnsSource, publisher: Publisher, stop: CancellationToken) {
    let resolver = loop {
        match build_resolver(&source) {
            Ok(resolver) => break resolver,
            Err(error) => {
                publisher.fail(&format!("cannot set up the resolver: {error}"));
                tokio::select! {
                    () = tokio::time::sleep(source.refresh) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    };
    let mut last_good: Option<Instant> = None;
    let mut backoff = DNS_MIN_REFRESH;
    loop {
        let wait = match resolve(&resolver, &source).await {
            Ok((backends, ttl)) => {
                publisher.publish(backends);
                last_good = Some(Instant::now());
                backoff = DNS_MIN_REFRESH;
                ttl.clamp(DNS_MIN_REFRESH, source.refresh)
            }
            Err(error) => {
                publisher.fail(&format!("{}: {error}", source.name));
                let stale_for = last_good.map(|at| at.elapsed());
                if let (Some(max), Some(stale_for)) = (source.max_stale, stale_for)
                    && stale_for >= max
                {
                    publisher.withdraw("DNS failed for longer than max_stale");
                }
                let wait = backoff;
                backoff = (backoff * 2).min(source.refresh);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

fn build_resolver(source: &DnsSource) -> Result<TokioResolver, String> {
    let mut builder = match source.server {
        Some(server) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = server.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = server.port();
            let name_server = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![name_server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    let options = builder.options_mut();
    options.timeout = source.timeout;
    options.attempts = 1;
    options.cache_size = 0;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(|e| e.to_string())
}

/// One resolution: the backends and how long the answer is valid.
async fn resolve(
    resolver: &TokioResolver,
    source: &DnsSource,
) -> Result<(Vec<BackendConfig>, Duration), String> {
    // The resolver's own timeout covers one query; this bounds SRV plus its target lookups.
    let deadline = source.timeout * 3;
    let lookup = async {
        match source.port {
            Some(port) => resolve_ip(resolver, &source.name, port).await,
            None => resolve_srv(resolver, &source.name).await,
        }
    };
    let (backends, ttl) = tokio::time::timeout(deadline, lookup)
        .await
        .map_err(|_| format!("no answer within {deadline:?}"))??;
    if backends.is_empty() {
        return Err("empty answer".into());
    }
    Ok((backends, ttl))
}

async fn resolve_ip(
    resolver: &TokioResolver,
    name: &str,
    port: u16,
) -> Result<(Vec<BackendConfig>, Duration), String> {
    let lookup = resolver.lookup_ip(name).await.map_err(|e| e.to_string())?;
    let ttl = min_ttl(lookup.as_lookup().answers().iter().map(|r| r.ttl));
    let backends = lookup
        .iter()
        .map(|ip| backend(SocketAddr::new(ip, port).into(), 1))
        .collect();
    Ok((backends, ttl))
}

/// RFC 2782: only the lowest priority is used (higher ones are fallbacks, which the pool's
/// health checks and panic mode cover better); SRV weights become backend weights, with 0
/// ("no preference") read as 1, since weight 0 means "drained" in sluice.
async fn resolve_srv(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<BackendConfig>, Duration), String> {
    let lookup = resolver.srv_lookup(name).await.map_err(|e| e.to_string())?;
    let mut ttls: Vec<u32> = lookup.answers().iter().map(|r| r.ttl).collect();
    let records: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(srv.clone()),
            _ => None,
        })
        .collect();
    let Some(best) = records.iter().map(|srv| srv.priority).min() else {
        return Ok((Vec::new(), DNS_MIN_REFRESH));
    };
    // Targets' addresses usually come in the additional section; look up the others.
    let mut addresses: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for record in lookup.additionals() {
        let ip = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        ttls.push(record.ttl);
        addresses
            .entry(record.name.to_ascii().to_ascii_lowercase())
            .or_default()
            .push(ip);
    }
    let mut backends = Vec::new();
    for srv in records.iter().filter(|srv| srv.priority == best) {
        let target = srv.target.to_ascii().to_ascii_lowercase();
        let ips = match addresses.get(&target) {
            Some(ips) => ips.clone(),
            None => {
                let found = resolver
                    .lookup_ip(srv.target.clone())
                    .await
                    .map_err(|e| format!("SRV target {target}: {e}"))?;
                ttls.extend(found.as_lookup().answers().iter().map(|r| r.ttl));
                found.iter().collect()
            }
        };
        let weight = u32::from(srv.weight).clamp(1, MAX_WEIGHT);
        backends.extend(
            ips.into_iter()
                .map(|ip| backend(SocketAddr::new(ip, srv.port).into(), weight)),
        );
    }
    Ok((backends, min_ttl(ttls.into_iter())))
}

fn backend(address: crate::config::BackendAddress, weight: u32) -> BackendConfig {
    BackendConfig {
        address,
        weight,
        max_connections: None,
    }
}

fn min_ttl(ttls: impl Iterator<Item = u32>) -> Duration {
    Duration::from_secs(u64::from(ttls.min().unwrap_or(0)))
}
