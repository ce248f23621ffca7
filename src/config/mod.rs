//! Validated configuration: the domain types every other module reads, and the conversion
//! from the YAML mirror (`file.rs`) that refuses anything wrong with file, line, column and path.
//!
//! Pure: no sockets, no clock. Imports nothing of ours but `error`. Reading the file from disk
//! is the one I/O here (`Config::load`), kept at the edge so tests can call `Config::parse`.

mod algorithm;
pub mod backend_address;
mod bind;
pub mod diff;
pub mod discovery;
mod duration;
pub mod file;
pub mod health;
mod proxy_protocol;
pub mod resilience;
mod route;
mod sni_route;
pub mod tls;
mod upstream_tls;
pub mod zookeeper;

pub use algorithm::{
    Algorithm, HashKey, HashOptions, P2cLoad, P2cOptions, StickyConfig, parse_hash_key,
};
pub use backend_address::BackendAddress;
pub use bind::BindAddr;
pub use duration::{format_duration, parse_duration};
pub use file::{AccessLogFormat, Protocol};
pub use proxy_protocol::{AcceptProxy, Cidr, SendProxy};
pub use route::{HeaderCondition, HeaderEdits, HostPattern, PathPattern, RouteConfig, RouteMatch};
pub use sni_route::{SniRoute, route_by_sni};
pub use tls::ListenerTls;
pub use upstream_tls::{ClientIdentity, PemCertificates, UpstreamProtocol, UpstreamTls};

use crate::error::{ConfigError, Error, SourcePosition};
use file::{RawConfig, RawListener, RawPool, Text};
use serde_saphyr::{Location, Spanned};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Default admin address: loopback only, so the admin API is never public by accident.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9900";
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// An upgraded connection (WebSocket) with no byte either way for this long is closed.
/// HAProxy has no default (`timeout tunnel` must be set); an hour keeps quiet WebSockets alive
/// without holding abandoned ones forever.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// HAProxy's ceiling for server weights is 256; nginx has none. 10,000 leaves room for
/// percentages with two decimals while keeping weight sums far from overflow.
pub const MAX_WEIGHT: u32 = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Reload when the config file changes on disk (SIGHUP and `POST /reload` always work).
    pub watch: bool,
    pub runtime: RuntimeConfig,
    pub admin: Option<AdminConfig>,
    /// Sorted by name, so iteration order is stable across reloads.
    pub listeners: BTreeMap<String, ListenerConfig>,
    pub pools: BTreeMap<String, PoolConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// `None`: one worker thread per CPU.
    pub worker_threads: Option<usize>,
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// With it, admin actions need `Authorization: Bearer <token>` (from any peer); without
    /// it, they are allowed from loopback peers only.
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: BindAddr,
    /// File mode set on a `unix:` socket after binding (`None`: the umask decides).
    pub unix_mode: Option<u32>,
    pub protocol: Protocol,
    /// The default pool: TCP connections and HTTP requests no route matched. `None` (only
    /// with routes): such a request gets 404.
    pub pool: Option<String>,
    /// HTTP only; the first route that matches picks the pool.
    pub routes: Vec<RouteConfig>,
    /// TCP only: routes by the TLS server name, without terminating (passthrough).
    pub sni_routes: Vec<SniRoute>,
    /// HTTP only: terminate TLS with these certificates.
    pub tls: Option<ListenerTls>,
    /// Read a PROXY protocol header (v1 or v2) before anything else.
    pub proxy_protocol: Option<AcceptProxy>,
    pub timeouts: ListenerTimeouts,
    /// Open client connections at most; beyond it, new connections wait in the kernel's
    /// accept backlog (not accepted and dropped). `None`: unlimited.
    pub max_connections: Option<u32>,
    /// One line per HTTP request (off when `None`).
    pub access_log: Option<AccessLogConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub format: AccessLogFormat,
    /// `stdout` or a file path (appended to, reopened on SIGUSR1).
    pub path: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTimeouts {
    /// Deadline for a whole request head once its first byte arrived (slowloris guard).
    pub client_header: Duration,
    /// How long a keep-alive connection may sit between requests.
    pub client_idle: Duration,
    /// Idle deadline of an upgraded (WebSocket) connection.
    pub tunnel_idle: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub algorithm: Algorithm,
    /// Write a PROXY protocol header on each new upstream connection.
    pub send_proxy: Option<SendProxy>,
    /// Cookie-based session affinity (HTTP only; a TCP listener ignores it).
    pub sticky: Option<StickyConfig>,
    /// The static backends of the file; discovered ones are merged in by `crate::discovery`
    /// before the snapshot is built.
    pub backends: Vec<BackendConfig>,
    /// Discovery sources (at most one of each kind); empty without `discovery:`.
    pub discovery: Vec<discovery::DiscoverySource>,
    pub timeouts: PoolTimeouts,
    pub health: health::HealthPolicy,
    pub resilience: resilience::Resilience,
    /// The HTTP version spoken to the backends (HTTP listeners only).
    pub protocol: UpstreamProtocol,
    /// TLS to the backends; `None`: plaintext.
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: BackendAddress,
    /// 0 means "never picked" (drain); 1 is the default.
    pub weight: u32,
    /// In-flight ceiling: at it, the backend is unavailable to every algorithm. `None`: no cap.
    pub max_connections: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolTimeouts {
    pub connect: Duration,
    /// From the request sent until the backend's response headers arrive, over all tries;
    /// then 504.
    pub response: Duration,
    /// No byte either way for this long: the exchange (HTTP body, TCP session) is closed.
    pub idle: Duration,
    /// Whole HTTP exchange, response body included. `None`: unbounded (streams, downloads).
    pub total: Option<Duration>,
}

impl Config {
    /// Reads and validates a config file. Errors name the file, line, column and field path.
    pub fn load(path: &Path) -> Result<Config, Error> {
        Config::load_with_text(path).map(|(config, _)| config)
    }

    /// Like `load`, also returning the file's text (served by the admin API's `/config`).
    pub fn load_with_text(path: &Path) -> Result<(Config, String), Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text, &path.display().to_string())?;
        Ok((config, text))
    }

    /// Parses and validates YAML text; `file` only labels error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = parse_raw(text, file)?;
        Validator { text, file }.config(raw)
    }
}

/// Runs serde over the text, keeping the field path of a failure (serde-saphyr gives the
/// line and column; `serde_path_to_error` gives the path).
fn parse_raw<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigError> {
    let mut failed_path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            failed_path = display_path(error.path());
            error.into_inner()
        })
    });
    result.map_err(|error| {
        let position = error.location().and_then(known_position);
        // serde-saphyr prefixes "error: line L column C: " and appends its own snippet; keep
        // the bare message so every config error reads the same way.
        let full = error.to_string();
        let first_line = full.lines().next().unwrap_or_default();
        let message = first_line
            .split_once(": ")
            .filter(|(head, _)| head.starts_with("error"))
            .map(|(_, rest)| rest)
            .unwrap_or(first_line);
        let message = match message.split_once(": ") {
            Some((head, rest)) if head.starts_with("line ") => rest,
            _ => message,
        };
        make_error(text, file, position, failed_path, message.to_owned())
    })
}

/// `pools.value.app.backends.value[1].value.weight` -> `pools.app.backends[1].weight`.
///
/// serde sees every `Spanned` wrapper in `file.rs` as a struct with a field `value`, an
/// implementation detail the operator should not see. Every `value` segment is such a wrapper,
/// except a listener or pool that is itself named "value" (the segment right after the
/// wrapper of the `listeners`/`pools` map).
fn display_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    let mut last_key: Option<&str> = None;
    let mut after_wrapper = false;
    for segment in path.iter() {
        match segment {
            Segment::Map { key } if key == "value" => {
                let names_a_map_entry =
                    after_wrapper && matches!(last_key, Some("listeners" | "pools"));
                if !names_a_map_entry {
                    after_wrapper = true;
                    continue;
                }
                push_key(&mut out, key);
                last_key = Some(key);
            }
            Segment::Map { key } => {
                push_key(&mut out, key);
                last_key = Some(key);
            }
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                last_key = None;
            }
            Segment::Enum { variant } => push_key(&mut out, variant),
            Segment::Unknown => out.push_str(".?"),
        }
        after_wrapper = false;
    }
    out
}

fn push_key(out: &mut String, key: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(key);
}

fn known_position(location: Location) -> Option<SourcePosition> {
    (location.line() > 0).then(|| SourcePosition {
        line: location.line() as u32,
        column: location.column() as u32,
    })
}

fn make_error(
    text: &str,
    file: &str,
    position: Option<SourcePosition>,
    path: String,
    message: String,
) -> ConfigError {
    let snippet = position.as_ref().and_then(|p| snippet(text, p));
    ConfigError {
        file: file.to_owned(),
        position,
        path,
        message,
        snippet,
    }
}

/// The source line with a caret under the column, as compilers print it.
fn snippet(text: &str, position: &SourcePosition) -> Option<String> {
    let line = text.lines().nth(position.line.checked_sub(1)? as usize)?;
    let gutter = position.line.to_string();
    let pad = " ".repeat(gutter.len());
    let caret_pad = " ".repeat(position.column.saturating_sub(1) as usize);
    Some(format!("{pad} |\n{gutter} | {line}\n{pad} | {caret_pad}^"))
}

struct Validator<'a> {
    text: &'a str,
    file: &'a str,
}

impl Validator<'_> {
    fn error_at(&self, location: Location, path: String, message: String) -> ConfigError {
        make_error(
            self.text,
            self.file,
            known_position(location),
            path,
            message,
        )
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let runtime = match raw.runtime {
            None => RuntimeConfig {
                worker_threads: None,
                drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            },
            Some(runtime) => RuntimeConfig {
                worker_threads: match runtime.worker_threads {
                    Some(threads) if threads.value == 0 || threads.value > 1024 => {
                        return Err(self.error_at(
                            threads.referenced,
                            "runtime.worker_threads".into(),
                            format!("must be between 1 and 1024, got {}", threads.value),
                        ));
                    }
                    threads => threads.map(|t| t.value),
                },
                drain_timeout: self.duration(
                    runtime.drain_timeout.as_ref(),
                    "runtime.drain_timeout",
                    DEFAULT_DRAIN_TIMEOUT,
                )?,
            },
        };
        let admin = match raw.admin {
            None => None,
            Some(admin) => Some(AdminConfig {
                bind: self.socket_addr(&admin.bind, "admin.bind".into())?,
                token_file: admin.token_file.as_ref().map(|t| t.value.clone().into()),
            }),
        };

        let Some(raw_pools) = raw.pools else {
            return Err(make_error(
                self.text,
                self.file,
                None,
                "pools".into(),
                "missing: at least one pool is needed".into(),
            ));
        };
        let mut pools = BTreeMap::new();
        for (name, pool) in raw_pools.value {
            let validated = self.pool(&name, pool)?;
            pools.insert(name, validated);
        }

        let Some(raw_listeners) = raw.listeners else {
            return Err(make_error(
                self.text,
                self.file,
                None,
                "listeners".into(),
                "missing: at least one listener is needed".into(),
            ));
        };
        if raw_listeners.value.is_empty() {
            return Err(self.error_at(
                raw_listeners.referenced,
                "listeners".into(),
                "empty: at least one listener is needed".into(),
            ));
        }
        let mut listeners = BTreeMap::new();
        let mut binds: HashMap<BindAddr, String> = HashMap::new();
        if let Some(admin) = &admin {
            binds.insert(BindAddr::Tcp(admin.bind), "admin".into());
        }
        for (name, listener) in raw_listeners.value {
            let validated = self.listener(&name, &listener, &pools)?;
            // Port 0 asks the kernel for a fresh port each time, so it never clashes.
            let ephemeral = validated.bind.tcp().is_some_and(|a| a.port() == 0);
            if let Some(other) = binds.get(&validated.bind).filter(|_| !ephemeral) {
                return Err(self.error_at(
                    listener.bind.referenced,
                    format!("listeners.{name}.bind"),
                    format!("{} is already used by {other}", validated.bind),
                ));
            }
            binds.insert(validated.bind.clone(), format!("listener {name}"));
            listeners.insert(name, validated);
        }

        Ok(Config {
            watch: raw.watch.unwrap_or(true),
            runtime,
            admin,
            listeners,
            pools,
        })
    }

    fn listener(
        &self,
        name: &str,
        raw: &RawListener,
        pools: &BTreeMap<String, PoolConfig>,
    ) -> Result<ListenerConfig, ConfigError> {
        let path = format!("listeners.{name}");
        check_name(name)
            .map_err(|message| self.error_at(raw.bind.referenced, path.clone(), message))?;
        let bind = bind::parse_bind(&raw.bind.value)
            .map_err(|m| self.error_at(raw.bind.referenced, format!("{path}.bind"), m))?;
        let unix_mode = match &raw.mode {
            None => None,
            Some(_) if !matches!(bind, BindAddr::Unix(_)) => {
                return Err(self.error_at(
                    raw.bind.referenced,
                    format!("{path}.mode"),
                    "mode applies to unix: sockets only".into(),
                ));
            }
            Some(text) => Some(
                bind::parse_mode(&text.value)
                    .map_err(|m| self.error_at(text.referenced, format!("{path}.mode"), m))?,
            ),
        };
        let protocol = raw.protocol.unwrap_or(Protocol::Http);
        if let Some(pool) = &raw.pool {
            self.pool_name(pool, &format!("{path}.pool"), pools)?;
        }
        let (routes, sni_routes) = match &raw.routes {
            None => (Vec::new(), Vec::new()),
            Some(routes) if protocol == Protocol::Tcp => (
                Vec::new(),
                self.sni_routes(&format!("{path}.routes"), routes, pools)?,
            ),
            Some(routes) => (
                self.routes(&format!("{path}.routes"), routes, pools)?,
                Vec::new(),
            ),
        };
        let tls = match &raw.tls {
            None => None,
            Some(tls) if protocol == Protocol::Tcp => {
                return Err(self.error_at(
                    tls.referenced,
                    format!("{path}.tls"),
                    "tls termination needs protocol: http (a tcp listener passes TLS through; \
                     route it by name with routes: [{match: {sni: NAME}, pool: P}])"
                        .into(),
                ));
            }
            Some(tls) => Some(self.tls(&path, tls)?),
        };
        if protocol == Protocol::Tcp
            && let Some(pool) = &raw.pool
            && pools
                .get(&pool.value)
                .is_some_and(|p| p.protocol == UpstreamProtocol::H2)
        {
            return Err(self.error_at(
                pool.referenced,
                format!("{path}.pool"),
                format!(
                    "pool {:?} speaks protocol: h2, which only an http listener can use (a tcp listener forwards bytes)",
                    pool.value
                ),
            ));
        }
        if raw.pool.is_none() && routes.is_empty() && sni_routes.is_empty() {
            return Err(self.error_at(
                raw.bind.referenced,
                path.clone(),
                "needs a pool, or routes".into(),
            ));
        }
        let proxy_protocol = self.accept_proxy(&path, raw.proxy_protocol.as_ref())?;
        let timeouts = raw.timeouts.as_ref();
        Ok(ListenerConfig {
            name: name.to_owned(),
            bind,
            unix_mode,
            protocol,
            sni_routes,
            tls,
            pool: raw.pool.as_ref().map(|p| p.value.clone()),
            routes,
            proxy_protocol,
            max_connections: raw.max_connections.filter(|&n| n > 0),
            access_log: raw.access_log.as_ref().map(|log| AccessLogConfig {
                format: log.format.unwrap_or(AccessLogFormat::Combined),
                path: log.path.clone().unwrap_or_else(|| "stdout".to_owned()),
            }),
            timeouts: ListenerTimeouts {
                client_header: self.duration(
                    timeouts.and_then(|t| t.client_header.as_ref()),
                    &format!("{path}.timeouts.client_header"),
                    DEFAULT_CLIENT_HEADER_TIMEOUT,
                )?,
                client_idle: self.duration(
                    timeouts.and_then(|t| t.client_idle.as_ref()),
                    &format!("{path}.timeouts.client_idle"),
                    DEFAULT_CLIENT_IDLE_TIMEOUT,
                )?,
                tunnel_idle: self.duration(
                    timeouts.and_then(|t| t.tunnel_idle.as_ref()),
                    &format!("{path}.timeouts.tunnel_idle"),
                    DEFAULT_TUNNEL_IDLE_TIMEOUT,
                )?,
            },
        })
    }

    fn pool(&self, name: &str, raw: RawPool) -> Result<PoolConfig, ConfigError> {
        let path = format!("pools.{name}");
        let located = raw.backends.as_ref().map(|b| b.referenced);
        let located = located.or(raw.discovery.as_ref().map(|d| d.referenced));
        check_name(name).map_err(|message| match located {
            Some(at) => self.error_at(at, path.clone(), message),
            None => make_error(self.text, self.file, None, path.clone(), message),
        })?;
        let algorithm = self.algorithm(&path, &raw)?;
        let sticky = self.sticky(&path, raw.sticky.as_ref())?;
        let health = self.health(&path, &raw)?;
        let resilience = self.resilience(&path, &raw)?;
        let discovery = match &raw.discovery {
            None => Vec::new(),
            Some(discovery) => self.discovery(&path, discovery)?,
        };
        let backends = match &raw.backends {
            None if discovery.is_empty() => {
                return Err(make_error(
                    self.text,
                    self.file,
                    None,
                    path,
                    "needs backends, discovery, or both".into(),
                ));
            }
            None => Vec::new(),
            // With discovery, an empty static list is fine: the sources fill the pool.
            Some(list) if list.value.is_empty() && discovery.is_empty() => {
                return Err(self.error_at(
                    list.referenced,
                    format!("{path}.backends"),
                    "empty pool: list at least one backend (or add discovery)".into(),
                ));
            }
            Some(list) => self.backends(
                &format!("{path}.backends"),
                &list.value,
                resilience.limits.max_requests_per_backend,
            )?,
        };
        let protocol = self.upstream_protocol(&path, raw.protocol.as_ref())?;
        let tls = self.upstream_tls(&path, raw.tls.as_ref())?;
        if let (Some(tls), Some(list)) = (&tls, &raw.backends)
            && tls.verify
            && tls.sni.is_none()
            && backends.iter().any(|b| b.address.is_unix())
        {
            // A socket path names no host a certificate could be checked against.
            return Err(self.error_at(
                list.referenced,
                format!("{path}.tls.sni"),
                "unix socket backends over verified TLS need tls.sni (the name to check the certificate against)".into(),
            ));
        }
        let timeouts = raw.timeouts.as_ref();
        Ok(PoolConfig {
            name: name.to_owned(),
            protocol,
            tls,
            algorithm,
            sticky,
            health,
            backends,
            discovery,
            timeouts: PoolTimeouts {
                connect: self.duration(
                    timeouts.and_then(|t| t.connect.as_ref()),
                    &format!("{path}.timeouts.connect"),
                    DEFAULT_CONNECT_TIMEOUT,
                )?,
                response: self.duration(
                    timeouts.and_then(|t| t.response.as_ref()),
                    &format!("{path}.timeouts.response"),
                    DEFAULT_RESPONSE_TIMEOUT,
                )?,
                idle: self.duration(
                    timeouts.and_then(|t| t.idle.as_ref()),
                    &format!("{path}.timeouts.idle"),
                    DEFAULT_IDLE_TIMEOUT,
                )?,
                total: match timeouts.and_then(|t| t.total.as_ref()) {
                    None => None,
                    Some(text) => Some(self.duration(
                        Some(text),
                        &format!("{path}.timeouts.total"),
                        Duration::ZERO,
                    )?),
                },
            },
            resilience,
            send_proxy: self.send_proxy(&path, raw.send_proxy.as_ref())?,
        })
    }

    /// Validates a backend list (`pools.X.backends`, or a discovery file when `path` is
    /// empty). `default_max` is the pool's `limits.max_requests_per_backend`.
    fn backends(
        &self,
        path: &str,
        entries: &[Spanned<file::RawBackend>],
        default_max: Option<u32>,
    ) -> Result<Vec<BackendConfig>, ConfigError> {
        let mut backends = Vec::with_capacity(entries.len());
        let mut seen = HashSet::new();
        for (index, entry) in entries.iter().enumerate() {
            let entry_path = format!("{path}[{index}]");
            let address: BackendAddress = entry.value.address.parse().map_err(|message| {
                self.error_at(entry.referenced, format!("{entry_path}.address"), message)
            })?;
            let weight = entry.value.weight.unwrap_or(1);
            if weight > MAX_WEIGHT {
                return Err(self.error_at(
                    entry.referenced,
                    format!("{entry_path}.weight"),
                    format!("must be between 0 and {MAX_WEIGHT}, got {weight}"),
                ));
            }
            if !seen.insert(address.clone()) {
                return Err(self.error_at(
                    entry.referenced,
                    format!("{entry_path}.address"),
                    format!("{address} is listed twice in this pool"),
                ));
            }
            let max_connections = entry.value.max_connections;
            if max_connections == Some(0) {
                return Err(self.error_at(
                    entry.referenced,
                    format!("{entry_path}.max_connections"),
                    "must be at least 1 (to stop sending traffic, use weight: 0)".into(),
                ));
            }
            backends.push(BackendConfig {
                address,
                weight,
                // `limits.max_requests_per_backend` is the pool-wide default.
                max_connections: max_connections.or(default_max),
            });
        }
        Ok(backends)
    }

    fn socket_addr(&self, text: &Text, path: String) -> Result<SocketAddr, ConfigError> {
        parse_socket_addr(&text.value)
            .map_err(|message| self.error_at(text.referenced, path, message))
    }

    fn duration(
        &self,
        text: Option<&Spanned<String>>,
        path: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(text) = text else {
            return Ok(default);
        };
        let value = parse_duration(&text.value)
            .map_err(|message| self.error_at(text.referenced, path.to_owned(), message))?;
        if value.is_zero() {
            return Err(self.error_at(
                text.referenced,
                path.to_owned(),
                "must be greater than zero".into(),
            ));
        }
        Ok(value)
    }
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "invalid socket address {text:?}: expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080"
        )
    })
}

/// Names appear in metrics labels and admin URLs, so keep them to a URL- and label-safe set.
fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: use 1-64 letters, digits, '_', '-' or '.'"
        ))
    }
}

#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
