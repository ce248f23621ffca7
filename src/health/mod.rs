//! Backend health, pure: the state machine (`machine`) and its lock-free mirror on each
//! backend (`cell`). No I/O and no sockets: the probes and outcome reports that feed it are in
//! `crate::probe`, above `backend` and `state`, which this module sits below.

pub mod cell;
pub mod machine;
