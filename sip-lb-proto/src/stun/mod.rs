//! STUN on the SIP UDP port (RFC 5389; the keep-alive of RFC 5626 §4.4.2):
//! a Binding request is answered with the source address it came from, in
//! XOR-MAPPED-ADDRESS. Sans-IO like the rest: datagram and source in, the
//! answer written into the caller's buffer.
//!
//! - [`binding`]: recognising a Binding request and answering it.

pub mod binding;

pub use binding::{answer, is_stun, Outcome, MAGIC_COOKIE};
