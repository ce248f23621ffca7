//! The serde mirror of the YAML file: field names and shapes exactly as operators write them.
//!
//! Every struct denies unknown keys, so a typo is an error rather than a silently ignored
//! setting. Values that need checking beyond their YAML type (addresses, durations, names that
//! refer to each other) are kept as `Spanned` strings here and checked by the validators
//! (`mod.rs` and its siblings), so each error can name its line, column and field path.
//! Nothing in this file validates.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;

pub type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Reload automatically when the config file changes (default true).
    pub watch: Option<bool>,
    pub runtime: Option<RawRuntime>,
    pub admin: Option<RawAdmin>,
    pub listeners: Option<Spanned<BTreeMap<String, RawListener>>>,
    pub pools: Option<Spanned<BTreeMap<String, RawPool>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub worker_threads: Option<Spanned<usize>>,
    /// How connections are spread over the worker threads (see `Scheduler`).
    pub scheduler: Option<Scheduler>,
    /// How the worker threads share a listener's connections (see `Accept`).
    pub accept: Option<Accept>,
    /// How long SIGTERM waits for in-flight requests and connections before exiting.
    pub drain_timeout: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Text,
    /// A file holding the bearer token that admin actions (reload, drain...) require.
    pub token_file: Option<Text>,
}

/// How the worker threads share the work (`runtime.scheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// Each worker thread runs its own event loop and accepts on every listener; a connection
    /// stays on the thread that accepted it (nginx's workers, HAProxy's threads).
    #[default]
    PerThread,
    /// One tokio multi-thread runtime: one accept loop per listener, and tasks move between
    /// threads when one is idle.
    WorkStealing,
}

/// How the worker threads of `per_thread` accept a listener's connections (`runtime.accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accept {
    /// One socket per listener; every worker accepts from it (nginx without `reuseport`).
    Shared,
    /// One socket per listener and worker, in an SO_REUSEPORT group: the kernel picks the
    /// worker for each new connection by a hash of the client's address and port, and wakes
    /// only that one (nginx's `reuseport`, HAProxy's `shards by-thread`, Envoy's default).
    #[default]
    Reuseport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Tcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub bind: Text,
    pub protocol: Option<Protocol>,
    /// The default pool; optional when `routes` are given (then no match answers 404).
    pub pool: Option<Text>,
    pub routes: Option<Spanned<Vec<Spanned<RawRoute>>>>,
    pub proxy_protocol: Option<Spanned<RawProxyProtocol>>,
    pub timeouts: Option<RawListenerTimeouts>,
    /// Open client connections at most; beyond it new ones wait in the accept backlog.
    pub max_connections: Option<u32>,
    pub access_log: Option<RawAccessLog>,
    /// TLS termination (http listeners only).
    pub tls: Option<Spanned<super::tls::RawTls>>,
    /// File mode of a `unix:` socket, octal (`"0660"`).
    pub mode: Option<Text>,
    /// What a client's request may be (sizes, counts, body buffering); see `limits.rs`.
    pub limits: Option<Spanned<RawRequestLimits>>,
    /// RFC 7239 `Forwarded` towards the backends: `true`, or `{ by: true }`.
    pub forwarded: Option<RawForwarded>,
    /// Edge protection (`edge.rs`): whose address a request is, who may connect, how often.
    pub client_address: Option<Spanned<super::edge::RawClientAddress>>,
    pub access: Option<Spanned<Vec<Spanned<super::edge::RawAccessRule>>>>,
    pub rate_limit: Option<Spanned<super::edge::RawRateLimit>>,
    pub max_connections_per_client: Option<Spanned<u32>>,
    /// Pages for sluice's own answers, by status (see `error_pages.rs`).
    pub error_pages: Option<super::error_pages::RawErrorPages>,
    /// Response compression (see `compression.rs`).
    pub compression: Option<Spanned<super::compression::RawCompression>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequestLimits {
    pub request_line: Option<Spanned<SizeText>>,
    pub header_line: Option<Spanned<SizeText>>,
    pub headers: Option<Spanned<SizeText>>,
    pub header_count: Option<Spanned<u32>>,
    pub body: Option<Spanned<SizeText>>,
    pub request_buffer: Option<Spanned<SizeText>>,
    pub h2_max_concurrent_streams: Option<Spanned<u32>>,
    pub h2_header_list: Option<Spanned<SizeText>>,
}

/// A size as written: `64KiB`, or a bare number of bytes (`65536`), kept as text for
/// `limits::parse_size`.
#[derive(Debug)]
pub struct SizeText(pub String);

impl<'de> Deserialize<'de> for SizeText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SizeText, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = SizeText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 64KiB, 1MiB or 65536")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<SizeText, E> {
                Ok(SizeText(value.to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<SizeText, E> {
                Ok(SizeText(value.to_string()))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<SizeText, E> {
                Ok(SizeText(value.to_owned()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawForwarded {
    Enabled(bool),
    Options {
        /// Add `by=` (the address the client connected to).
        by: Option<bool>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    Combined,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub format: Option<AccessLogFormat>,
    /// `stdout` (default) or a file path (spanned: `sluice check` points at it when the
    /// file cannot be created, see `files.rs`).
    pub path: Option<Text>,
}

/// One HTTP route: the first whose `match` fits the request picks the pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(rename = "match")]
    pub matcher: Spanned<RawRouteMatch>,
    /// One of `pool`, `pools`, `redirect`, `respond` (see `route_action.rs`).
    pub pool: Option<Text>,
    pub pools: Option<Spanned<Vec<Spanned<super::route_action::RawWeightedPool>>>>,
    /// Keeps a client on one pool of a split: a hash key (`cookie:NAME`, `header:NAME`...).
    pub split_key: Option<Text>,
    pub redirect: Option<Spanned<super::direct_answer::RawRedirect>>,
    pub respond: Option<Spanned<super::direct_answer::RawRespond>>,
    pub mirror: Option<Spanned<super::route_action::RawMirror>>,
    /// Replaces the listener's `compression` for this route.
    pub compression: Option<Spanned<super::compression::RawCompression>>,
    pub strip_prefix: Option<Text>,
    pub request_headers: Option<Spanned<RawHeaderEdits>>,
    pub response_headers: Option<Spanned<RawHeaderEdits>>,
    /// Edge protection of this route (`edge.rs`), after the listener's.
    pub access: Option<Spanned<Vec<Spanned<super::edge::RawAccessRule>>>>,
    pub rate_limit: Option<Spanned<super::edge::RawRateLimit>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteMatch {
    pub host: Option<Text>,
    pub path: Option<Text>,
    pub path_prefix: Option<Text>,
    pub method: Option<Text>,
    pub header: Option<Spanned<RawHeaderMatch>>,
    /// TLS server name (tcp listeners only: passthrough routing without terminating).
    pub sni: Option<Text>,
    /// The client's verified certificate (listeners with `tls.client_auth`).
    pub client_cert: Option<Spanned<super::tls::RawClientCertMatch>>,
}

/// `{name, value}` matches an exact value; `{name}` alone matches presence.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMatch {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderEdits {
    pub set: Option<BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

/// `proxy_protocol: accept` (short form: every peer must send a header), or
/// `{mode: accept, trusted: [CIDR, ...]}`.
#[derive(Debug)]
pub struct RawProxyProtocol {
    pub mode: String,
    pub trusted: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxyProtocolLong {
    mode: String,
    trusted: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for RawProxyProtocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModeVisitor;
        impl<'de> Visitor<'de> for ModeVisitor {
            type Value = RawProxyProtocol;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`accept`, or a map {mode: accept, trusted: [CIDR, ...]}")
            }
            fn visit_str<E: de::Error>(self, mode: &str) -> Result<RawProxyProtocol, E> {
                Ok(RawProxyProtocol {
                    mode: mode.to_owned(),
                    trusted: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawProxyProtocol, A::Error> {
                let long =
                    RawProxyProtocolLong::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawProxyProtocol {
                    mode: long.mode,
                    trusted: long.trusted,
                })
            }
        }
        deserializer.deserialize_any(ModeVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTimeouts {
    pub client_header: Option<Text>,
    /// Longest wait for the next bytes of a request body (nginx's `client_body_timeout`).
    pub client_body: Option<Text>,
    pub client_idle: Option<Text>,
    pub tunnel_idle: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub algorithm: Option<Text>,
    /// Options of `algorithm: hash`; refused under any other algorithm.
    pub hash: Option<Spanned<RawHash>>,
    /// Options of `algorithm: p2c`; refused under any other algorithm.
    pub p2c: Option<Spanned<RawP2c>>,
    /// `v1` or `v2`: write a PROXY protocol header on each new upstream connection.
    pub send_proxy: Option<Text>,
    pub sticky: Option<Spanned<RawSticky>>,
    /// Optional when `discovery` is set; discovered backends merge with these.
    pub backends: Option<Spanned<Vec<Spanned<RawBackend>>>>,
    pub discovery: Option<Spanned<super::discovery::RawDiscovery>>,
    pub timeouts: Option<RawPoolTimeouts>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub outlier: Option<RawOutlier>,
    /// Percent of available backends under which the pool balances over all (0 disables).
    pub panic_threshold: Option<Spanned<f64>>,
    pub slow_start: Option<Text>,
    pub retry: Option<RawRetry>,
    pub limits: Option<RawLimits>,
    pub circuit_breaker: Option<RawBreaker>,
    /// `http1` (default) or `h2`: the HTTP version spoken to the backends.
    pub protocol: Option<Text>,
    /// TLS to the backends.
    pub tls: Option<Spanned<super::upstream_tls::RawUpstreamTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<Spanned<u32>>,
    pub per_try_timeout: Option<Text>,
    pub budget_percent: Option<Spanned<f64>>,
    pub budget_min_per_second: Option<Spanned<f64>>,
    pub backoff: Option<RawBackoff>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub base: Option<Text>,
    pub max: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_requests_per_backend: Option<u32>,
    pub max_pending: Option<u32>,
    pub queue_timeout: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub window: Option<Text>,
    pub min_requests: Option<u32>,
    pub failure_ratio: Option<Spanned<f64>>,
    pub open_for: Option<Text>,
    pub probes: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Http,
    Tcp,
    /// grpc.health.v1.Health/Check over HTTP/2.
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialState {
    Healthy,
    Unhealthy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<CheckType>,
    pub path: Option<Text>,
    pub method: Option<Text>,
    pub host: Option<Text>,
    pub interval: Option<Text>,
    pub unhealthy_interval: Option<Text>,
    pub timeout: Option<Text>,
    pub rise: Option<Spanned<u32>>,
    pub fall: Option<Spanned<u32>>,
    /// Codes and inclusive ranges: `[200-399]`, `[200, 204]`.
    pub expect_status: Option<Vec<Spanned<RawStatus>>>,
    pub body_contains: Option<String>,
    pub initial: Option<InitialState>,
    /// `type: grpc`: the service name asked about (default "": the server as a whole).
    pub service: Option<Text>,
}

/// A status code (`204`) or an inclusive range (`"200-399"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawStatus {
    Code(u16),
    Range(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<u32>,
    pub base_ejection_time: Option<Text>,
    pub max_ejection_time: Option<Text>,
    pub max_ejection_percent: Option<Spanned<f64>>,
    pub http_5xx: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHash {
    /// `source_ip` (default), `header:NAME`, `cookie:NAME`, `path`, `query:NAME`.
    pub key: Option<Text>,
    pub bounded_load: Option<Spanned<f64>>,
    /// Algorithm used when the request has no key; `round_robin` by default.
    pub fallback: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawP2c {
    /// `in_flight` (default) or `ewma`.
    pub load: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    pub cookie: Text,
    pub ttl: Option<Text>,
    /// `lax` (default), `strict` or `none`.
    pub same_site: Option<Text>,
    /// `Secure`: unset sends it on requests that came over TLS; true always, false never.
    pub secure: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoolTimeouts {
    pub connect: Option<Text>,
    pub response: Option<Text>,
    pub idle: Option<Text>,
    pub total: Option<Text>,
}

/// A backend entry: the short form `127.0.0.1:9001` or the long form
/// `{address, weight, max_connections}`.
#[derive(Debug)]
pub struct RawBackend {
    pub address: String,
    pub weight: Option<u32>,
    pub max_connections: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackendLong {
    address: String,
    weight: Option<u32>,
    max_connections: Option<u32>,
}

impl<'de> Deserialize<'de> for RawBackend {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = RawBackend;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an address like 127.0.0.1:9001, or a map {address, weight, max_connections}",
                )
            }
            fn visit_str<E: de::Error>(self, address: &str) -> Result<RawBackend, E> {
                Ok(RawBackend {
                    address: address.to_owned(),
                    weight: None,
                    max_connections: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawBackend, A::Error> {
                let long = RawBackendLong::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawBackend {
                    address: long.address,
                    weight: long.weight,
                    max_connections: long.max_connections,
                })
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}
