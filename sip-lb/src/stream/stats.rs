//! Counters of the connection layer, the stream workers and the flow
//! hand-off. Several threads write them (connection tasks, stream workers,
//! the UDP workers relaying responses), so they use `fetch_add`; none of
//! them is on the UDP path.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sip_lb_proto::stream::FrameError;

#[derive(Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Every counter, by metric family (`docs/transports.md`).
#[derive(Default)]
pub struct StreamStats {
    /// Connections accepted (and handed a flow slot).
    pub accepted: Count,
    /// Connections closed, for any reason.
    pub closed: Count,
    /// Refused at accept: `max_connections` reached.
    pub refused_max: Count,
    /// Refused at accept: `max_per_ip` reached for the source.
    pub refused_per_ip: Count,
    /// Closed after `idle_timeout_ms` without a byte received.
    pub closed_idle: Count,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failed: Count,
    pub tls_handshake_timeout: Count,
    /// Messages framed and handed to a stream worker.
    pub messages: Count,
    /// CRLF CRLF keep-alives answered.
    pub pings: Count,
    /// Heads without Content-Length (400, connection kept).
    pub no_length: Count,
    /// Framing lost (connection closed), by [`FrameError`].
    pub frame_errors: [Count; 3],
    /// A stream worker's queue was full: the message was dropped.
    pub queue_full: Count,
    /// Requests a stream worker forwarded to a backend.
    pub requests_forwarded: Count,
    /// Stateless replies written to a connection (400, 513, the core's).
    pub replies: Count,
    /// Messages the core dropped.
    pub dropped: Count,
    /// Datagrams a stream worker could not send to a backend.
    pub send_failed: Count,
    /// Backends' responses for connections (flow token in our Via).
    pub responses: FlowCounts,
    /// Far-end requests for connections (flow token in our Record-Route).
    pub requests: FlowCounts,
    /// Connections to backends (`stream::links`).
    pub links: LinkCounts,
    /// Connections (blocked or banned sources, at accept) and messages the
    /// shield dropped, by [`sip_lb_proto::shield::ShieldDrop::index`].
    pub shield_drops: [Count; sip_lb_proto::shield::ShieldDrop::ALL.len()],
}

/// Connections to backends and the messages they carry.
#[derive(Default)]
pub struct LinkCounts {
    /// Connections made (TCP connected and, for TLS, handshaken).
    pub connected: Count,
    /// Attempts that failed (refused, timed out, handshake failed).
    pub connect_failed: Count,
    /// Established connections that ended (closed by the backend, reset,
    /// framing lost).
    pub lost: Count,
    /// Messages queued to a backend's connection.
    pub sent: Count,
    /// Messages for a backend whose connection is down: dropped.
    pub dropped_down: Count,
    /// Messages dropped: the connection's queue was full.
    pub dropped_full: Count,
    /// Messages received from backends' connections.
    pub received: Count,
}

/// What became of messages the UDP workers relayed towards connections.
#[derive(Default)]
pub struct FlowCounts {
    /// Queued on their connection.
    pub delivered: Count,
    /// For a connection that is gone (or a reused slot).
    pub gone: Count,
    /// Dropped: the connection's write queue was full.
    pub full: Count,
    /// The flow token did not verify.
    pub forged: Count,
}

impl std::fmt::Debug for StreamStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamStats").field("accepted", &self.accepted.get()).field("open", &self.open()).finish()
    }
}

impl StreamStats {
    pub fn frame_error(&self, e: FrameError) -> &Count {
        &self.frame_errors[match e {
            FrameError::TooLarge => 0,
            FrameError::NoLength => 1,
            FrameError::BadLength => 2,
        }]
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.accepted.get().saturating_sub(self.closed.get())
    }
}
