//! The table of open connections that flow tokens name: a fixed array of
//! slots, each holding the connection's write queue behind an `ArcSwap`.
//! Relaying a response (`deliver`) is one atomic load and a `try_send`: no
//! lock, no wait, so a UDP worker can do it. Opening and closing take a
//! mutex, on the accept path only.
//!
//! A slot's generation changes every time it is reused: a token names one
//! connection, never its successor in the slot.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc;

use sip_lb_proto::flow::via_transport::ViaTransport;
use sip_lb_proto::flow::FlowToken;

/// What a connection's writer is sent.
#[derive(Debug)]
pub enum Out {
    /// Bytes to write.
    Bytes(Vec<u8>),
    /// Write what came before, then close (framing was lost).
    Close,
}

/// Bytes queued per connection at most; beyond, responses are dropped
/// (counted) rather than waited for.
pub const WRITE_QUEUE: usize = 256;

struct Conn {
    token: FlowToken,
    tx: mpsc::Sender<Out>,
    side: Arc<Side>,
}

/// The client's side of a stream listener: what our Via says on a request
/// sent over its connections, and the URI of our Record-Route the client
/// reaches (RFC 5658: one value per side when the transport changes).
#[derive(Debug)]
pub struct Side {
    pub transport: ViaTransport,
    /// `sip:HOST:PORT;transport=tcp|tls;lr;slb` (`record_route::route_uri`).
    pub route_uri: Box<[u8]>,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    Full,
    /// `max_per_ip` are open from this source address.
    PerIp,
}

/// What became of a message for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// Closed, or the slot belongs to another connection now.
    Gone,
    /// Its write queue is full.
    Full,
}

struct Book {
    free: Vec<u32>,
    generations: Vec<u32>,
    per_ip: HashMap<IpAddr, usize>,
}

pub struct Flows {
    slots: Box<[ArcSwapOption<Conn>]>,
    book: Mutex<Book>,
    max_per_ip: usize,
}

impl Flows {
    pub fn new(max_connections: usize, max_per_ip: usize) -> Flows {
        Flows {
            slots: (0..max_connections).map(|_| ArcSwapOption::empty()).collect(),
            book: Mutex::new(Book {
                // Pop from the end: slot 0 first.
                free: (0..max_connections as u32).rev().collect(),
                generations: vec![0; max_connections],
                per_ip: HashMap::new(),
            }),
            max_per_ip,
        }
    }

    /// Takes a slot for a connection from `peer`, accepted on a listener of
    /// `side`, whose writer reads `tx`.
    pub fn open(&self, peer: SocketAddr, tx: mpsc::Sender<Out>, side: Arc<Side>) -> Result<FlowToken, Refused> {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let ip = peer.ip().to_canonical();
        let n = book.per_ip.get(&ip).copied().unwrap_or(0);
        if n >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        let slot = book.free.pop().ok_or(Refused::Full)?;
        let generation = book.generations[slot as usize].wrapping_add(1);
        book.generations[slot as usize] = generation;
        *book.per_ip.entry(ip).or_insert(0) += 1;
        let token = FlowToken { slot, generation };
        self.slots[slot as usize].store(Some(Arc::new(Conn { token, tx, side })));
        Ok(token)
    }

    /// Frees the connection's slot; later responses for it are `Gone`.
    pub fn close(&self, token: FlowToken, peer: SocketAddr) {
        let Some(slot) = self.slots.get(token.slot as usize) else { return };
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        if slot.load().as_ref().is_none_or(|c| c.token != token) {
            return;
        }
        slot.store(None);
        book.free.push(token.slot);
        let ip = peer.ip().to_canonical();
        if let Some(n) = book.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                book.per_ip.remove(&ip);
            }
        }
    }

    /// Whether the connection `token` names is open.
    pub fn is_open(&self, token: FlowToken) -> bool {
        self.slots.get(token.slot as usize).is_some_and(|s| s.load().as_ref().is_some_and(|c| c.token == token))
    }

    /// The listener side of the connection `token` names, while it is open.
    pub fn side(&self, token: FlowToken) -> Option<Arc<Side>> {
        let slot = self.slots.get(token.slot as usize)?;
        let guard = slot.load();
        guard.as_ref().filter(|c| c.token == token).map(|c| c.side.clone())
    }

    /// Queues `out` for the connection `token` names, without waiting.
    pub fn deliver(&self, token: FlowToken, out: Out) -> Delivery {
        let Some(slot) = self.slots.get(token.slot as usize) else { return Delivery::Gone };
        let guard = slot.load();
        let Some(conn) = guard.as_ref().filter(|c| c.token == token) else { return Delivery::Gone };
        match conn.tx.try_send(out) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_generations_and_gone_connections() {
        let flows = Flows::new(2, 1);
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let c: SocketAddr = "192.0.2.3:1000".parse().unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let side = Arc::new(Side {
            transport: ViaTransport::Tls,
            route_uri: b"sip:192.0.2.9:5061;transport=tls;lr;slb"[..].into(),
        });
        let open = |peer: SocketAddr| flows.open(peer, tx.clone(), side.clone());
        let ta = open(a).unwrap();
        assert_eq!(open("192.0.2.1:1001".parse().unwrap()), Err(Refused::PerIp));
        let tb = open(b).unwrap();
        assert_eq!(open(c), Err(Refused::Full));
        assert_eq!(flows.side(ta).map(|s| s.transport), Some(ViaTransport::Tls));
        assert_eq!(flows.deliver(ta, Out::Bytes(b"x".to_vec())), Delivery::Queued);
        assert_eq!(flows.deliver(tb, Out::Bytes(b"y".to_vec())), Delivery::Full);
        assert!(matches!(rx.try_recv(), Ok(Out::Bytes(v)) if v == b"x"));
        flows.close(ta, a);
        assert_eq!(flows.deliver(ta, Out::Close), Delivery::Gone);
        assert!(flows.side(ta).is_none());
        // The slot is reused with a new generation; the old token stays gone.
        let tc = open(c).unwrap();
        assert_eq!(tc.slot, ta.slot);
        assert_ne!(tc.generation, ta.generation);
        assert_eq!(flows.deliver(ta, Out::Close), Delivery::Gone);
        assert_eq!(flows.deliver(FlowToken { slot: 99, generation: 1 }, Out::Close), Delivery::Gone);
        // Closing a stale token does not free the new connection's slot.
        flows.close(ta, a);
        assert_eq!(flows.deliver(tc, Out::Close), Delivery::Queued);
    }
}
