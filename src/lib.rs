//! sluice: an L4/L7 load balancer daemon.
//!
//! Layering (dependencies point down, no import cycles; `tests/integration/layering.rs`
//! checks it): `server` (wiring, signals) -> `admin` / `reload` / `discovery` (triggers, through
//! `control::ControlPlane`) -> `control` (the owner of the config and the listeners) -> `proxy`
//! (data plane) -> `probe` -> `state` (snapshot) -> `balance` / `upstream` -> `backend`
//! (runtime state) -> `metrics` -> `health` / `resilience` / `route` / `ewma` / `latency` /
//! `clock` (pure);
//! `config` is pure and imported by all. docs/architecture.md draws it.

pub mod access_log;
pub mod admin;
pub mod backend;
pub mod balance;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod discovery;
pub mod edge;
pub mod error;
pub mod ewma;
pub mod headers;
pub mod health;
pub mod latency;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod negotiate;
pub mod probe;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod resilience;
pub mod route;
pub mod server;
pub mod state;
pub mod systemd;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod watch;
#[cfg(test)]
mod wire_strategy;
pub mod workers;

pub use config::Config;
pub use error::Error;
pub use server::{DrainOutcome, Server};
