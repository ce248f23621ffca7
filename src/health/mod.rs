//! Backend health: the pure state machine (`machine`) and, in the I/O layer, the probes that
//! feed it.

pub mod machine;
