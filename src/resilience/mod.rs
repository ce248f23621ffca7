//! Fault-tolerance building blocks, pure (time and randomness passed in): the retry budget,
//! the per-backend circuit breaker, and jittered exponential backoff. The proxy combines them
//! into one retry policy per pool.

pub mod backoff;
pub mod breaker;
pub mod budget;
