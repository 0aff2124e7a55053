//! The one question the forwarding step asks the balancer.

use std::net::SocketAddr;

/// Picks the backend for a request. Implemented by the balancer (`balance`);
/// must be a pure function of its arguments and the current backend set, so a
/// retransmission, its CANCEL and its ACK reach the same backend.
pub trait Chooser {
    /// `call_id_hash` is [`sip_lb_common::call_id_hash`] of the Call-ID value.
    /// `None`: no backend available (the request gets 503).
    fn choose(&self, method: &[u8], call_id_hash: u64) -> Option<SocketAddr>;
}

impl<F: Fn(&[u8], u64) -> Option<SocketAddr>> Chooser for F {
    fn choose(&self, method: &[u8], call_id_hash: u64) -> Option<SocketAddr> {
        self(method, call_id_hash)
    }
}
