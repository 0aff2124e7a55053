//! Backend choice: method -> pool, then Call-ID -> backend by weighted
//! rendezvous hashing ([`hrw`]), in an immutable [`Router`] that the control
//! plane rebuilds and publishes atomically and the data plane only reads.
//!
//! Properties the tests pin (`tests/balance_*.rs`):
//! - the same Call-ID hash maps to the same backend in every process built
//!   from the same configuration;
//! - removing or marking down one backend moves exactly its Call-IDs, spread
//!   over all remaining backends by weight; nothing else moves;
//! - a backend's share is its weight over the pool's total.

pub mod hrw;
mod router;
mod spec;

pub use router::{Backend, Pool, Router};
pub use spec::{pool_for, BackendSpec, PoolSpec, FOLLOW_INVITE, INVITE};

#[cfg(test)]
mod tests;
