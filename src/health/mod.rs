//! Backend health: the pure state machine (`machine`), its lock-free mirror on each backend
//! (`cell`), and the I/O that feeds it: active probes and outcome reports (`probe`).

pub mod cell;
pub mod machine;
pub mod probe;
