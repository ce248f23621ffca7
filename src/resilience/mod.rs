//! Fault-tolerance building blocks, pure (time and randomness passed in): the retry budget,
//! the per-backend circuit breaker, and jittered exponential backoff. The proxy combines them
//! into one retry policy per pool. `breaker_cell` is the thin shared-state wrapper the data
//! path uses around the pure breaker.

pub mod backoff;
pub mod breaker;
pub mod breaker_cell;
pub mod budget;
