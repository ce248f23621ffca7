//! Backend health: the pure state machine (`machine`), its lock-free mirror on each backend
//! (`cell`), the I/O that feeds it: active probes and outcome reports (`probe`), and the
//! signal that moves requests off a backend that stopped answering (`evacuation`).

pub mod cell;
pub mod evacuation;
pub mod machine;
pub mod probe;
