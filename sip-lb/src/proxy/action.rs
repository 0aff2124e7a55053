//! What the forwarding step decided. The bytes to send, if any, are in the
//! caller's `out` buffer.

use std::net::SocketAddr;

/// The outcome of [`super::Proxy::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `out` to `to` (a backend for requests, the next Via for responses).
    Forward { to: SocketAddr },
    /// Send the stateless reply in `out` to `to`; `code` is its status code.
    Reply { to: SocketAddr, code: u16 },
    /// Send nothing.
    Drop(DropReason),
}

/// Why nothing was sent; `as_str` values are metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Only CR/LF bytes (RFC 5626 keep-alive).
    KeepAlive,
    /// Not a SIP request we can answer: no Via to reply to, too many headers,
    /// more than 65,535 bytes.
    Malformed,
    /// A response that does not parse or whose Content-Length is wrong.
    MalformedResponse,
    /// A response whose top Via is not ours (anti-reflection).
    ForeignResponse,
    /// A response with only our Via: nobody to send it to.
    NoNextVia,
    /// The next Via names a host, not an IP: no DNS on the hot path.
    ViaHostname,
    /// The next Via is broadcast, multicast, unspecified or port 0.
    BadNextHop,
    /// An ACK we would have rejected: ACK never gets a reply (§17.2.3).
    AckRejected,
    /// An ACK with no backend available (503 is not sent for ACK).
    AckNoBackend,
    /// A stateless reply larger than the request it answers: the source is
    /// unverified (UDP), so sending it would amplify a spoofed flood.
    ReplyWouldAmplify,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::KeepAlive,
        DropReason::Malformed,
        DropReason::MalformedResponse,
        DropReason::ForeignResponse,
        DropReason::NoNextVia,
        DropReason::ViaHostname,
        DropReason::BadNextHop,
        DropReason::AckRejected,
        DropReason::AckNoBackend,
        DropReason::ReplyWouldAmplify,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::KeepAlive => "keep_alive",
            DropReason::Malformed => "malformed",
            DropReason::MalformedResponse => "malformed_response",
            DropReason::ForeignResponse => "foreign_response",
            DropReason::NoNextVia => "no_next_via",
            DropReason::ViaHostname => "via_hostname",
            DropReason::BadNextHop => "bad_next_hop",
            DropReason::AckRejected => "ack_rejected",
            DropReason::AckNoBackend => "ack_no_backend",
            DropReason::ReplyWouldAmplify => "reply_would_amplify",
        }
    }

    /// Position in [`DropReason::ALL`], for counter arrays.
    pub fn index(&self) -> usize {
        *self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_all_and_labels_are_unique_snake_case() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(r.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }
}
