//! The pure core of sip-lb (quinn-proto's role): everything that decides,
//! nothing that moves bytes. Datagram and source in, an [`proxy::Action`]
//! out; no sockets, clocks, threads or randomness, so the data plane, the
//! fuzz targets, the benches and the tests all drive the same functions.
//!
//! Layers, from the wire up:
//! - [`sip`]: zero-copy views of SIP datagrams (no allocation).
//! - [`proxy`]: the stateless forwarding step (RFC 3261 §16.11).
//! - [`balance`]: backend pools and weighted rendezvous hashing of the Call-ID.
//! - [`shield`]: block/allow lists and per-source rate limits (the verdict
//!   before the forwarding step).
//! - [`stream`]: framing SIP on TCP/TLS byte streams (RFC 3261 §18.3).
//! - [`flow`]: the flow token that routes a response back to its connection.
//! - [`hep`]: encoding captured messages as HEP v3 for Homer (mirroring).
//! - [`stun`]: answering STUN Binding requests on the SIP UDP port (RFC 5389).

pub mod balance;
pub mod flow;
pub mod hep;
pub mod proxy;
pub mod shield;
pub mod sip;
pub mod stream;
pub mod stun;
