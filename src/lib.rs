//! sluice: an L4/L7 load balancer. This crate root lists the modules; `server` wires them.

pub mod config;
pub mod error;
