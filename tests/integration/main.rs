//! sluice's integration tests: a real sluice (the binary or the library's server) in front of
//! real backends on 127.0.0.1:0, with real etcd, ZooKeeper, dnsmasq and chromium where a test
//! needs them. Each module covers one area; `common` holds the shared fixtures.
//!
//! They are one test binary rather than one per file: each binary links the whole crate
//! (~70 MB in a debug build), so 27 of them cost CI about 2 GB of disk and as many link steps.
//! Tests run as many at a time as before: one per core, as inside each of the old binaries.

mod common;

mod access_log;
mod admin;
mod balance;
mod compression;
mod dashboard;
mod discovery_consul;
mod discovery_dns;
mod discovery_etcd;
mod discovery_file;
mod discovery_zookeeper;
mod docs;
mod edge_protection;
mod edge_trust;
mod fleet;
mod grpc_health;
mod ha_pair;
mod health;
mod http_edge;
mod http_proxy;
mod layering;
mod lifecycle;
mod metrics_churn;
mod passthrough;
mod proxy_protocol;
mod register;
mod register_more;
mod reload;
mod resilience;
mod routing;
mod status_page;
mod tcp_proxy;
mod tcp_zero_copy;
mod tls;
mod tls_client_auth;
mod tls_client_auth_resumption;
mod tls_rotation;
mod tls_sessions;
mod unix_backend;
mod unix_listener;
mod upstream_h1;
mod upstream_h2;
mod upstream_tls;
mod websocket;
mod wire_bytes;
mod workers;
