//! Test fixtures: real backends on 127.0.0.1:0 (hyper and raw TCP), an in-process sluice,
//! raw-socket HTTP helpers, and waiting on conditions with deadlines instead of sleeping.
//!
//! One file per kind: `backends.rs`, `daemon.rs` (starting sluice, test configs),
//! `binary.rs` (the real binary as a child process), `client.rs` (requests), `wait.rs`
//! (deadlines), `programs.rs` (external programs), and
//! the etcd and ZooKeeper servers (`etcd.rs`, `zookeeper.rs`), a browser driven over the
//! DevTools protocol (`cdp.rs`). Everything is re-exported
//! here, so a test says `use crate::common::*`. The etcd and ZooKeeper servers, TLS
//! certificates and clients (`tls.rs`) and the HTTP/2 and TLS backends (`upstream.rs`) are
//! imported by name by the tests that need them.

pub mod cdp;
pub mod consul;
pub mod etcd;
pub mod netns;
pub mod tls;
pub mod upstream;
pub mod zookeeper;

mod backends;
mod binary;
mod client;
mod daemon;
mod programs;
mod wait;

// Each test crate uses a different subset of these fixtures.
#[allow(unused_imports)]
pub use backends::{
    Backend, Controls, IterStream, Seen, dead_addr, pattern, serve_backend_on, spawn_backend,
    spawn_backend_with_delay, spawn_controlled_backend, spawn_controlled_backend_at,
    spawn_tcp_echo, spawn_tcp_echo_after_eof,
};
#[allow(unused_imports)]
pub use binary::{
    BIN, Spawned, logged_addr, signal, spawn_binary, spawn_binary_with, terminate, wait_for_line,
};
#[allow(unused_imports)]
pub use client::{
    Tally, admin_post, assert_status, body_text, get, load_client, raw_exchange, send, try_get,
    until_routed_to,
};
#[allow(unused_imports)]
pub use daemon::{
    backend_addresses, config, http_config, start_sluice, two_listeners, wait_for_backends,
    write_file,
};
#[allow(unused_imports)]
pub use programs::{Running, require_program};
#[allow(unused_imports)]
pub use wait::{wait_until, wait_until_async};

/// The body type the test backends answer with and the client helpers send.
pub type TestBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;
