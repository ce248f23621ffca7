//! sluice: an L4/L7 load balancer. This crate root lists the modules; `server` wires them.

pub mod backend;
pub mod balance;
pub mod config;
pub mod error;
pub mod state;
pub mod upstream;
