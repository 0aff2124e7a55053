//! sip-lb: a stateless SIP load balancer.
//!
//! Layers, from the wire up:
//! - [`sip`]: zero-copy views of SIP datagrams (no I/O, no allocation).
//! - [`proxy`]: the sans-IO forwarding step: datagram in, action out.
//! - [`balance`]: backend pools and consistent hashing of the Call-ID.
//! - [`config`]: the TOML file and command-line flags, validated.
//! - [`dataplane`]: per-core workers moving datagrams with recvmmsg/sendmmsg.
//! - [`xdp`]: loading and attaching the XDP steering program.

pub mod balance;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod proxy;
pub mod sip;
pub mod xdp;
