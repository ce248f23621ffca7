//! Backend health, pure: the state machine (`machine`), its lock-free mirror on each backend
//! (`cell`), and the signal that moves requests off a backend that stopped answering
//! (`evacuation`). No I/O and no sockets: the probes and outcome reports that feed it are in
//! `crate::probe`, above `backend` and `state`, which this module sits below.

pub mod cell;
pub mod evacuation;
pub mod machine;
