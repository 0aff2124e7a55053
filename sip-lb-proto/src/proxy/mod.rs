//! The sans-IO forwarding step: one datagram and its source in, one
//! [`Action`] out, the bytes to send written into a caller-owned buffer.
//! No sockets, clocks, randomness or per-message allocation, so workers,
//! tests and benches all drive the same pure function.
//!
//! - [`action`]: what to do ([`Action`]) and why not ([`DropReason`]).
//! - [`chooser`]: the backend question asked of the balancer.
//! - [`identity`]: our own addresses.
//! - `request`: validation and forwarding of requests (§16.3-16.6).
//! - `response`: forwarding of responses (§16.7, §18.2.2).
//! - `reply`: stateless error replies (§8.2.6).
//! - `received`: received/rport on the client's Via (§18.2.1, RFC 3581).
//! - `branch`: deterministic branch and To tag (§16.11).
//! - [`mac`]: the keyed MAC in our branch that authenticates responses.
//! - [`policy`]: accepted URI schemes and Proxy-Require options.
//! - `splice`: emitting a datagram with a few edits.
//! - `refuse`: replies to what the stream framer refused; the keys for flow tokens.

pub mod action;
pub mod branch;
pub mod chooser;
pub mod identity;
pub mod mac;
pub mod policy;
mod received;
mod refuse;
mod reply;
mod request;
mod response;
pub mod splice;

pub use action::{Action, DropReason, Forwarded, ReplyCode};
pub use chooser::Chooser;
pub use identity::{Alias, Identity, Listener};
pub use mac::{Key, Keys};
pub use policy::Policy;

use crate::sip::message::{Header, Message, ParseError, MAX_HEADERS};
use crate::sip::text::write_host_port;
use branch::BRANCH_PREFIX;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

/// The forwarding step, configured. Immutable after `new`: share one per
/// configuration snapshot between worker threads (`&self` only).
#[derive(Clone, Debug)]
pub struct Proxy {
    identity: Identity,
    keys: Keys,
    policy: Policy,
    /// Per listener, `Via: SIP/2.0/UDP <advertise>;branch=z9hG4bKslb`: the
    /// constant part of our Via line, built once.
    via_prefixes: Vec<Vec<u8>>,
    /// Per listener, `sip:<advertise>;lr;slb`: the URI of our Record-Route
    /// and Path (`flow::address` appends the token).
    route_uris: Vec<Vec<u8>>,
}

impl Proxy {
    pub fn new(identity: Identity, keys: Keys, policy: Policy) -> Self {
        let via_prefixes = identity
            .listeners
            .iter()
            .map(|l| {
                let mut p = b"Via: SIP/2.0/UDP ".to_vec();
                write_host_port(&mut p, l.advertise.ip(), l.advertise.port());
                p.extend_from_slice(b";branch=");
                p.extend_from_slice(BRANCH_PREFIX);
                p
            })
            .collect();
        let route_uris = identity
            .listeners
            .iter()
            .map(|l| {
                let mut u = b"sip:".to_vec();
                write_host_port(&mut u, l.advertise.ip(), l.advertise.port());
                u.extend_from_slice(b";lr;");
                u.extend_from_slice(request::RECORD_ROUTE_MARKER);
                u
            })
            .collect();
        Proxy { identity, keys, policy, via_prefixes, route_uris }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Decides what to do with `datagram` received from `src` on the socket
    /// of listener `on` (an index into [`Identity::listeners`]). For
    /// `Forward` and `Reply`, `out` holds the bytes to send (it is cleared
    /// first and keeps its capacity); for `Drop` it is empty. Never panics.
    ///
    /// A datagram's request gets our Record-Route and Path as the policy's
    /// `routing` says, naming its source address.
    pub fn handle<C: Chooser + ?Sized>(
        &self,
        chooser: &C,
        datagram: &[u8],
        src: SocketAddr,
        on: usize,
        out: &mut Vec<u8>,
    ) -> Action {
        self.handle_from(chooser, datagram, src, on, request::Arrival::Datagram, out)
    }

    /// [`Proxy::handle`] for a message framed from a connection: the same
    /// step, without the datagram's Record-Route and Path (the stream layer
    /// writes its own, naming the connection).
    pub fn handle_connection<C: Chooser + ?Sized>(
        &self,
        chooser: &C,
        message: &[u8],
        peer: SocketAddr,
        on: usize,
        out: &mut Vec<u8>,
    ) -> Action {
        self.handle_from(chooser, message, peer, on, request::Arrival::Connection, out)
    }

    fn handle_from<C: Chooser + ?Sized>(
        &self,
        chooser: &C,
        datagram: &[u8],
        src: SocketAddr,
        on: usize,
        arrival: request::Arrival,
        out: &mut Vec<u8>,
    ) -> Action {
        out.clear();
        // 3 KiB of header slots on the stack: no heap, no shared scratch,
        // and not initialised per datagram (only the fields found are written).
        let mut slots = [const { MaybeUninit::<Header>::uninit() }; MAX_HEADERS];
        let action = match Message::parse_uninit(datagram, &mut slots) {
            Err(ParseError::KeepAlive) => Action::Drop(DropReason::KeepAlive),
            Err(_) => Action::Drop(DropReason::Malformed),
            Ok(m) if m.is_request() => request::handle(self, chooser, &m, src, on, arrival, out),
            Ok(m) => response::handle(self, &m, out),
        };
        // Never send more toward an unverified source than it sent us.
        let action = match action {
            Action::Reply { .. } if out.len() > datagram.len() => Action::Drop(DropReason::ReplyWouldAmplify),
            a => a,
        };
        if matches!(action, Action::Drop(_)) {
            out.clear();
        }
        action
    }
}
