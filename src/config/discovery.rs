//! Service discovery settings of a pool (`discovery:` with `dns`, `file`, `etcd`, `zookeeper`
//! and/or `consul`, whose settings live in `zookeeper.rs` and `consul.rs`): the
//! YAML mirror, the validated types, and the parser of a discovery backend file.
//!
//! Pure like the rest of `config`: the tasks that resolve, watch and list live in
//! `crate::discovery` and only read these types. The raw types sit here rather than in
//! `file.rs` so everything about discovery settings is in one place.

pub use super::consul::{ConsulSource, RawConsul};
use super::file::RawBackend;
pub use super::zookeeper::{RawZooKeeper, ZooKeeperSource};
use super::{BackendConfig, Validator, parse_socket_addr};
use crate::error::ConfigError;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Upper bound of the DNS re-resolution interval (the TTL decides below it).
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(60);
/// Lower bound of the DNS re-resolution interval: a TTL of 0 (dnsmasq's default for local
/// records, Consul's default) must not turn into a query loop.
pub const DNS_MIN_REFRESH: Duration = Duration::from_secs(1);
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub dns: Option<Spanned<RawDns>>,
    /// Path of a YAML list of backends, watched for changes.
    pub file: Option<Spanned<String>>,
    pub etcd: Option<Spanned<RawEtcd>>,
    pub zookeeper: Option<Spanned<RawZooKeeper>>,
    pub consul: Option<Spanned<RawConsul>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub name: Spanned<String>,
    /// `IP` or `IP:PORT`; default: the system resolver (/etc/resolv.conf).
    pub server: Option<Spanned<String>>,
    /// With a port: A/AAAA lookup of `name`. Without: SRV lookup.
    pub port: Option<Spanned<u16>>,
    pub refresh: Option<Spanned<String>>,
    pub max_stale: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    pub endpoints: Spanned<Vec<String>>,
    pub prefix: Spanned<String>,
    pub timeout: Option<Spanned<String>>,
}

/// The complete set of backends one discovery source of a pool sees now: one layer of the
/// control state (`crate::control`), published by the source's task.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredSet {
    pub pool: String,
    /// The source as configured when its task started: a set counts only while the running
    /// config has this very source, so a removed or changed source's set drops out at once.
    pub source: DiscoverySource,
    pub backends: Vec<super::BackendConfig>,
}

/// One discovery source of a pool. A pool may have one of each kind.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoverySource {
    Dns(DnsSource),
    File(FileSource),
    Etcd(EtcdSource),
    ZooKeeper(ZooKeeperSource),
    Consul(ConsulSource),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    Dns,
    File,
    Etcd,
    ZooKeeper,
    Consul,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Dns => "dns",
            SourceKind::File => "file",
            SourceKind::Etcd => "etcd",
            SourceKind::ZooKeeper => "zookeeper",
            SourceKind::Consul => "consul",
        }
    }
}

impl DiscoverySource {
    pub fn kind(&self) -> SourceKind {
        match self {
            DiscoverySource::Dns(_) => SourceKind::Dns,
            DiscoverySource::File(_) => SourceKind::File,
            DiscoverySource::Etcd(_) => SourceKind::Etcd,
            DiscoverySource::ZooKeeper(_) => SourceKind::ZooKeeper,
            DiscoverySource::Consul(_) => SourceKind::Consul,
        }
    }

    /// What the source reads, for logs and `/status`.
    pub fn target(&self) -> String {
        match self {
            DiscoverySource::Dns(dns) => match dns.port {
                Some(port) => format!("{} (A/AAAA, port {port})", dns.name),
                None => format!("{} (SRV)", dns.name),
            },
            DiscoverySource::File(file) => file.path.display().to_string(),
            DiscoverySource::Etcd(etcd) => format!("{} {}", etcd.endpoints.join(","), etcd.prefix),
            DiscoverySource::ZooKeeper(zk) => format!("{} {}", zk.connect_string(), zk.path),
            DiscoverySource::Consul(consul) => {
                let mut target = format!("{} service {}", consul.address, consul.service);
                if let Some(tag) = &consul.tag {
                    target.push_str(&format!(" tag {tag}"));
                }
                if let Some(dc) = &consul.datacenter {
                    target.push_str(&format!(" dc {dc}"));
                }
                target
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsSource {
    pub name: String,
    /// `None`: the system resolver.
    pub server: Option<SocketAddr>,
    pub port: Option<u16>,
    /// Ceiling of the re-resolution interval; the answer's TTL (at least 1 s) decides below it.
    /// Default 60 s, or half of a written `max_stale` when that is shorter.
    pub refresh: Duration,
    /// How long the last good answer is kept while lookups fail. `None`: for ever. After it,
    /// the discovered backends are withdrawn (the pool keeps its static ones).
    pub max_stale: Option<Duration>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileSource {
    /// Relative paths are resolved from the daemon's working directory.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EtcdSource {
    pub endpoints: Vec<String>,
    /// Keys are `{prefix}IP:PORT`; always ends with `/`.
    pub prefix: String,
    /// Connect and request timeout.
    pub timeout: Duration,
}

impl Validator<'_> {
    pub(super) fn discovery(
        &self,
        path: &str,
        raw: &Spanned<RawDiscovery>,
    ) -> Result<Vec<DiscoverySource>, ConfigError> {
        let path = format!("{path}.discovery");
        let mut sources = Vec::new();
        if let Some(dns) = &raw.value.dns {
            sources.push(DiscoverySource::Dns(self.dns(&format!("{path}.dns"), dns)?));
        }
        if let Some(file) = &raw.value.file {
            if file.value.trim().is_empty() {
                return Err(self.error_at(
                    file.referenced,
                    format!("{path}.file"),
                    "empty path".into(),
                ));
            }
            sources.push(DiscoverySource::File(FileSource {
                path: PathBuf::from(file.value.trim()),
            }));
        }
        if let Some(etcd) = &raw.value.etcd {
            sources.push(DiscoverySource::Etcd(
                self.etcd(&format!("{path}.etcd"), etcd)?,
            ));
        }
        if let Some(zookeeper) = &raw.value.zookeeper {
            sources.push(DiscoverySource::ZooKeeper(
                self.zookeeper(&format!("{path}.zookeeper"), zookeeper)?,
            ));
        }
        if let Some(consul) = &raw.value.consul {
            sources.push(DiscoverySource::Consul(
                self.consul(&format!("{path}.consul"), consul)?,
            ));
        }
        if sources.is_empty() {
            return Err(self.error_at(
                raw.referenced,
                path,
                "no source: set dns, file, etcd, zookeeper or consul".into(),
            ));
        }
        Ok(sources)
    }

    fn dns(&self, path: &str, raw: &Spanned<RawDns>) -> Result<DnsSource, ConfigError> {
        let name = raw.value.name.value.trim().trim_end_matches('.').to_owned();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(self.error_at(
                raw.value.name.referenced,
                format!("{path}.name"),
                format!("invalid DNS name {:?}", raw.value.name.value),
            ));
        }
        let server = match &raw.value.server {
            None => None,
            Some(server) => Some(parse_dns_server(&server.value).map_err(|message| {
                self.error_at(server.referenced, format!("{path}.server"), message)
            })?),
        };
        let port = match &raw.value.port {
            Some(port) if port.value == 0 => {
                return Err(self.error_at(
                    port.referenced,
                    format!("{path}.port"),
                    "must be between 1 and 65535".into(),
                ));
            }
            port => port.as_ref().map(|p| p.value),
        };
        let max_stale =
            self.optional_duration(raw.value.max_stale.as_ref(), &format!("{path}.max_stale"))?;
        // The set is confirmed once per refresh at most, and `max_stale` is measured from the
        // last confirmation when a query fails. Under a written max_stale shorter than the
        // default refresh, the first failed query would withdraw the set; unset, refresh is
        // then half of max_stale, so a failure is retried before the set is withdrawn.
        let refresh_default = max_stale.map_or(DEFAULT_DNS_REFRESH, |stale| {
            DEFAULT_DNS_REFRESH.min(stale / 2).max(DNS_MIN_REFRESH)
        });
        let refresh = self.duration(
            raw.value.refresh.as_ref(),
            &format!("{path}.refresh"),
            refresh_default,
        )?;
        if refresh < DNS_MIN_REFRESH {
            let at = raw.value.refresh.as_ref().map(|r| r.referenced);
            return Err(self.error_at(
                at.unwrap_or(raw.referenced),
                format!("{path}.refresh"),
                "must be at least 1s".into(),
            ));
        }
        Ok(DnsSource {
            name,
            server,
            port,
            refresh,
            max_stale,
            timeout: self.duration(
                raw.value.timeout.as_ref(),
                &format!("{path}.timeout"),
                DEFAULT_DNS_TIMEOUT,
            )?,
        })
    }

    fn etcd(&self, path: &str, raw: &Spanned<RawEtcd>) -> Result<EtcdSource, ConfigError> {
        let endpoints = &raw.value.endpoints;
        if endpoints.value.is_empty() {
            return Err(self.error_at(
                endpoints.referenced,
                format!("{path}.endpoints"),
                "list at least one endpoint, e.g. http://127.0.0.1:2379".into(),
            ));
        }
        for (index, endpoint) in endpoints.value.iter().enumerate() {
            // etcd-client is built without TLS: refuse https rather than fail at connect.
            let valid = endpoint
                .strip_prefix("http://")
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
            if !valid {
                return Err(self.error_at(
                    endpoints.referenced,
                    format!("{path}.endpoints[{index}]"),
                    format!("invalid endpoint {endpoint:?}: expected http://HOST:PORT"),
                ));
            }
        }
        let prefix = &raw.value.prefix;
        if !prefix.value.starts_with('/') || !prefix.value.ends_with('/') || prefix.value == "/" {
            return Err(self.error_at(
                prefix.referenced,
                format!("{path}.prefix"),
                format!(
                    "invalid prefix {:?}: write a key directory such as /services/app/ \
                     (leading and trailing slash)",
                    prefix.value
                ),
            ));
        }
        Ok(EtcdSource {
            endpoints: endpoints.value.clone(),
            prefix: prefix.value.clone(),
            timeout: self.duration(
                raw.value.timeout.as_ref(),
                &format!("{path}.timeout"),
                DEFAULT_ETCD_TIMEOUT,
            )?,
        })
    }
}

fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    parse_socket_addr(text).map_err(|_| {
        format!("invalid DNS server {text:?}: expected IP or IP:PORT such as 127.0.0.1:8600")
    })
}

/// Parses a discovery backend file: a YAML list of backends in the same short or long form as
/// `backends:`. Errors carry `file:line:column` and the entry path (`[2].address`). An empty
/// file is refused (a file truncated mid-write must not empty the pool); `[]` means none.
pub fn parse_backend_file(text: &str, file: &str) -> Result<Vec<BackendConfig>, ConfigError> {
    if text.trim().is_empty() {
        return Err(super::make_error(
            text,
            file,
            None,
            String::new(),
            "empty file: write a YAML list of backends, or [] for none".into(),
        ));
    }
    let raw: Vec<Spanned<RawBackend>> = super::parse_raw(text, file)?;
    Validator { text, file }.backends("", &raw, None)
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;
