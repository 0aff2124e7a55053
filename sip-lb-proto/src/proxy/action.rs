//! What the forwarding step decided. The bytes to send, if any, are in the
//! caller's `out` buffer.

use std::net::SocketAddr;

/// The outcome of [`super::Proxy::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `out` to `to` (a backend for requests, the next Via for
    /// responses) from the socket of listen address `from` (an index into
    /// [`super::Identity::listeners`]): for a request the one whose address
    /// our Via names, for a response the one its top Via (ours) names.
    Forward { to: SocketAddr, from: usize, what: Forwarded },
    /// Send the stateless reply in `out` to `to`, from the socket the request
    /// arrived on.
    Reply { to: SocketAddr, code: ReplyCode },
    /// Send nothing.
    Drop(DropReason),
}

/// What a `Forward` carries: the core's parse decides, not a second look at
/// the bytes by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarded {
    Request,
    Response,
}

/// The stateless replies this proxy generates itself (RFC 3261 §16.3,
/// §16.11, §18.1.1). Never a provisional: a stateless proxy sends no 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyCode {
    BadRequest,
    UnsupportedUriScheme,
    BadExtension,
    TooManyHops,
    ServiceUnavailable,
    MessageTooLarge,
    /// 421 with `Require: path`: a REGISTER from a UA that does not support
    /// Path where the operator requires it (`path = "require"`, RFC 3327).
    ExtensionRequired,
    /// 403: a request whose top Route is ours with a flow token that does
    /// not verify (tampered or forged, RFC 5626 §5.2).
    Forbidden,
    /// 430 Flow Failed: the flow a request's Route names is gone (the
    /// client's connection closed, RFC 5626 §5.3).
    FlowFailed,
}

impl ReplyCode {
    pub const ALL: [ReplyCode; 9] = [
        ReplyCode::BadRequest,
        ReplyCode::UnsupportedUriScheme,
        ReplyCode::BadExtension,
        ReplyCode::TooManyHops,
        ReplyCode::ServiceUnavailable,
        ReplyCode::MessageTooLarge,
        ReplyCode::ExtensionRequired,
        ReplyCode::Forbidden,
        ReplyCode::FlowFailed,
    ];

    pub fn code(&self) -> u16 {
        match self {
            ReplyCode::BadRequest => 400,
            ReplyCode::UnsupportedUriScheme => 416,
            ReplyCode::BadExtension => 420,
            ReplyCode::TooManyHops => 483,
            ReplyCode::ServiceUnavailable => 503,
            ReplyCode::MessageTooLarge => 513,
            ReplyCode::ExtensionRequired => 421,
            ReplyCode::Forbidden => 403,
            ReplyCode::FlowFailed => 430,
        }
    }

    pub fn reason(&self) -> &'static [u8] {
        match self {
            ReplyCode::BadRequest => b"Bad Request",
            ReplyCode::UnsupportedUriScheme => b"Unsupported URI Scheme",
            ReplyCode::BadExtension => b"Bad Extension",
            ReplyCode::TooManyHops => b"Too Many Hops",
            ReplyCode::ServiceUnavailable => b"Service Unavailable",
            ReplyCode::MessageTooLarge => b"Message Too Large",
            ReplyCode::ExtensionRequired => b"Extension Required",
            ReplyCode::Forbidden => b"Forbidden",
            ReplyCode::FlowFailed => b"Flow Failed",
        }
    }

    /// Position in [`ReplyCode::ALL`], for counter arrays.
    pub fn index(&self) -> usize {
        *self as usize
    }
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
    /// A response whose top Via looks like ours but whose branch MAC does
    /// not verify (forged, or its next Via or Call-ID was changed).
    BranchMac,
    /// No listen address of the backend's address family to send from
    /// (the config validator refuses such configs; counted if one slips by).
    NoListenerForFamily,
    /// Two edits of one message overlapped: a bug in the core, never a
    /// mangled forward (debug builds assert).
    EditConflict,
}

impl DropReason {
    pub const ALL: [DropReason; 13] = [
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
        DropReason::BranchMac,
        DropReason::NoListenerForFamily,
        DropReason::EditConflict,
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
            DropReason::BranchMac => "branch_mac",
            DropReason::NoListenerForFamily => "no_listener_for_family",
            DropReason::EditConflict => "edit_conflict",
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

    #[test]
    fn reply_codes_index_and_values() {
        for (i, c) in ReplyCode::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let codes: Vec<u16> = ReplyCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes, [400, 416, 420, 483, 503, 513, 421, 403, 430]);
        assert_eq!(ReplyCode::MessageTooLarge.reason(), b"Message Too Large");
    }
}
