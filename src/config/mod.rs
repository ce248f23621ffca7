//! Validated configuration: the domain types every other module reads, and the conversion
//! from the YAML mirror (`file.rs`) that refuses anything wrong with file, line, column and path.
//!
//! Pure: no sockets, no clock. Imports nothing of ours but `error`. Reading the file from disk
//! is the one I/O here (`Config::load`), kept at the edge so tests can call `Config::parse`.
//!
//! This file: the validated types, `Config::load`/`parse` and the top-level validation. Each
//! section is validated next to it: `runtime.rs` (runtime, admin), `listener.rs`, `pool.rs`
//! (and one file per pool area: algorithm, health, resilience, discovery, upstream_tls...);
//! `parse.rs` runs serde and builds every error with its position, path and snippet.

mod algorithm;
pub mod backend_address;
mod bind;
pub mod compression;
pub mod consul;
pub mod diff;
mod diff_edge;
mod direct_answer;
pub mod discovery;
mod duration;
pub mod edge;
pub mod error_pages;
pub mod file;
mod files;
pub mod health;
mod limits;
mod listener;
mod parse;
pub mod plan_summary;
mod pool;
mod proxy_protocol;
pub mod resilience;
mod route;
pub mod route_action;
mod runtime;
mod sni_route;
pub mod tls;
mod tls_auth;
mod upstream_tls;
pub mod zookeeper;

pub use algorithm::{
    Algorithm, HashKey, HashOptions, P2cLoad, P2cOptions, SameSite, StickyConfig, parse_hash_key,
};
pub use backend_address::BackendAddress;
pub use bind::BindAddr;
pub use duration::{format_duration, parse_duration};
pub use file::{Accept, AccessLogFormat, Protocol, Scheduler};
pub use files::check_access_log_files;
pub use limits::{ForwardedConfig, RequestLimits, parse_size};
pub use proxy_protocol::{AcceptProxy, Cidr, SendProxy};
pub use route::{HeaderCondition, HeaderEdits, HostPattern, PathPattern, RouteConfig, RouteMatch};
pub use route_action::{Forward, Mirror, Redirect, Respond, RouteAction, WeightedPool};
pub use sni_route::{SniRoute, route_by_sni};
pub use tls::ListenerTls;
pub use upstream_tls::{ClientIdentity, PemCertificates, UpstreamProtocol, UpstreamTls};

use crate::error::{ConfigError, Error};
use file::{RawConfig, Text};
use parse::{known_position, make_error, parse_raw};
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Default admin address: loopback only, so the admin API is never public by accident.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9900";
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `client_body_timeout`: the longest pause between two reads of a request body.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
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
    /// `None`: one worker thread per CPU (the binary resolves it at start; a server started
    /// in-process with `None` serves on the caller's runtime).
    pub worker_threads: Option<usize>,
    pub scheduler: Scheduler,
    pub accept: Accept,
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
    /// What a client's request may be (HTTP only).
    pub limits: RequestLimits,
    /// Append an RFC 7239 `Forwarded` element to requests (HTTP only; off when `None`).
    pub forwarded: Option<ForwardedConfig>,
    /// Client address, access rules, rate limit and per-client connection cap.
    pub edge: edge::ListenerEdge,
    /// Pages for the answers sluice makes itself (HTTP only; empty: short plain text).
    pub error_pages: error_pages::ErrorPages,
    /// Response compression for this listener's routes (HTTP only; off when `None`).
    pub compression: Option<compression::Compression>,
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
    /// Longest pause between two reads of a request body (408 beyond it).
    pub client_body: Duration,
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
        let runtime = self.runtime(raw.runtime)?;
        let admin = self.admin(raw.admin)?;
        let pools = self.pools(raw.pools)?;
        let listeners = self.listeners(raw.listeners, &pools, admin.as_ref())?;

        Ok(Config {
            watch: raw.watch.unwrap_or(true),
            runtime,
            admin,
            listeners,
            pools,
        })
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

    /// A duration that has no default: `None` when the file does not set it.
    fn optional_duration(
        &self,
        text: Option<&Spanned<String>>,
        path: &str,
    ) -> Result<Option<Duration>, ConfigError> {
        text.map(|text| self.duration(Some(text), path, Duration::ZERO))
            .transpose()
    }
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        if let Some((_, port)) = host_name_and_port(text) {
            return format!(
                "invalid socket address {text:?}: a host name is not an address here, sluice \
                 does not resolve it; write IP:PORT such as 127.0.0.1:{port}, 0.0.0.0:{port} or \
                 [::]:{port}"
            );
        }
        format!(
            "invalid socket address {text:?}: expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080"
        )
    })
}

/// `localhost:9002` -> `("localhost", 9002)`: text that is a host name and a port rather than
/// an address, so the error can say that names are not resolved there (and where they are).
/// `None` for anything else, including a malformed IP (`10.0.0.300:80`) or port.
fn host_name_and_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let port = port.parse().ok()?;
    let is_name = host.chars().any(|c| c.is_ascii_alphabetic())
        && host.parse::<std::net::IpAddr>().is_err()
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    is_name.then_some((host, port))
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
mod route_action_tests;
#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
