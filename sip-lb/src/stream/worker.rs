//! A stream worker: the thread that runs the core over the messages the
//! connections framed. Each call's messages reach the same stream worker
//! (the Call-ID hash picks it, as XDP picks the UDP worker), in order,
//! through a bounded channel. Requests leave over UDP from the sockets of
//! the UDP worker of the same index, with the flow token in our Via;
//! replies go back to the connection's write queue.
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError};

use sip_lb_proto::flow::record_route::{self, Kind};
use sip_lb_proto::flow::routing::PathMode;
use sip_lb_proto::flow::{self, FlowToken};
use sip_lb_proto::proxy::{Action, Forwarded, ReplyCode};

use super::flows::{Flows, Out};
use super::relay::{Fate, Relay};
use super::stats::StreamStats;
use crate::dataplane::{Offence, SharedPlan, SharedShield};

/// How often an idle stream worker checks `stop`.
const IDLE: Duration = Duration::from_millis(100);

/// A framed message from a connection.
pub struct StreamIn {
    pub token: FlowToken,
    pub peer: SocketAddr,
    /// The UDP listener the message counts as arriving on: our Via names it,
    /// so the backend's response comes back there.
    pub on: usize,
    pub what: What,
    pub bytes: Vec<u8>,
    /// The Call-ID value in `bytes`, from the framer.
    pub call_id: Option<(usize, usize)>,
    /// `Some(link)`: from a backend's connection (`super::links`), not a
    /// client's; `token` names no connection then.
    pub link: Option<usize>,
}

/// What to do with a [`StreamIn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// A whole message: through the core.
    Message,
    /// A head the framer refused: answer `code`, then close if asked.
    Refuse { code: ReplyCode, close: bool },
}

pub struct StreamWorker {
    pub index: usize,
    pub rx: Receiver<StreamIn>,
    /// Clones of UDP worker `index`'s sockets, one per UDP listen address.
    pub sockets: Vec<UdpSocket>,
    pub plan: SharedPlan,
    pub flows: Arc<Flows>,
    pub stats: Arc<StreamStats>,
    pub stop: Arc<AtomicBool>,
    /// Responses and far-end requests to client connections, messages to
    /// backends' connections.
    pub relay: Arc<Relay>,
    /// The UDP workers' shield: a source's rate is one rate across transports.
    pub shield: SharedShield,
}

impl StreamWorker {
    pub fn run(self) {
        // Room for the largest UDP datagram plus the flow parameter: no
        // reallocation when the token is spliced in.
        let mut out = Vec::with_capacity(65_536 + 128);
        loop {
            match self.rx.recv_timeout(IDLE) {
                Ok(m) => self.handle(m, &mut out),
                Err(RecvTimeoutError::Timeout) if !self.stop.load(Ordering::Relaxed) => {}
                Err(_) => return,
            }
        }
    }

    fn handle(&self, m: StreamIn, out: &mut Vec<u8>) {
        let plan = self.plan.load();
        let s = &self.stats;
        if m.link.is_none() && !self.admit(&plan, &m) {
            return;
        }
        if let What::Refuse { code, close } = m.what {
            if plan.proxy.refuse(&m.bytes, m.peer, code, out) {
                s.replies.inc();
                self.reply(&m, out);
            }
            if close {
                self.flows.deliver(m.token, Out::Close);
            }
            return;
        }
        // `record_route` and `path` as the running config has them (a reload
        // changes them for datagrams and connections alike).
        let routing = plan.proxy.policy().routing;
        let register = m.bytes.starts_with(b"REGISTER ");
        // Read once, and only when a Path setting asks.
        let supports_path = register && routing.path != PathMode::Off && record_route::ua_supports_path(&m.bytes);
        if m.link.is_none() && register && routing.refuses(supports_path) {
            // RFC 3327 §5.1: the registrar behind us could not reach this
            // UA without our Path; 421 is a stateless reply like the others.
            if plan.proxy.refuse(&m.bytes, m.peer, ReplyCode::ExtensionRequired, out) {
                s.replies.inc();
                self.reply(&m, out);
            }
            return;
        }
        let action = plan.proxy.handle_connection(&plan.router, &m.bytes, m.peer, m.on, out);
        if m.link.is_some() {
            return self.backend_message(&plan.proxy, &m, action, out);
        }
        match action {
            Action::Forward { to, from, what: Forwarded::Request } => {
                let call_id = m.call_id.and_then(|(a, b)| m.bytes.get(a..b)).unwrap_or(&[]);
                if flow::stamp(plan.proxy.keys(), out, m.token, call_id).is_err() {
                    s.dropped.inc();
                    return;
                }
                let method = m.bytes.split(|&b| b == b' ').next().unwrap_or(&[]);
                // The transport always changes here (a connection to UDP or a link).
                let record = routing.records(method, true);
                // Where the far end's requests reach us: the listener our Via names.
                let advertise = plan.proxy.identity().listeners.get(from).map(|l| l.advertise);
                if let (true, Some(adv)) = (record, advertise) {
                    // The transport changes: one value per side (RFC 5658),
                    // the farm's on top, the client's (its listener) below.
                    let keys = plan.proxy.keys();
                    if let Some(side) = self.flows.side(m.token) {
                        record_route::insert_uri(keys, out, Kind::RecordRoute, &side.route_uri, m.token, call_id);
                    }
                    record_route::insert(keys, out, Kind::RecordRoute, adv, m.token, call_id);
                }
                let path = register && routing.paths(supports_path);
                if let (true, Some(adv)) = (path, advertise) {
                    let kind = match record_route::is_outbound_register(&m.bytes) {
                        true => Kind::OutboundPath,
                        false => Kind::Path,
                    };
                    record_route::insert(plan.proxy.keys(), out, kind, adv, m.token, call_id);
                }
                if self.send(out, to, from, Forwarded::Request) {
                    s.requests_forwarded.inc();
                }
            }
            // A response from the client (to a request that reached it some
            // other way): where the core says, like a UDP one.
            Action::Forward { to, from, what: Forwarded::Response } => {
                self.send(out, to, from, Forwarded::Response);
            }
            Action::Reply { .. } => {
                s.replies.inc();
                self.reply(&m, out);
            }
            Action::Drop(reason) => {
                tracing::debug!(worker = self.index, ?reason, "stream message dropped");
                s.dropped.inc();
            }
        }
    }

    /// A message from a backend's connection: a response goes to the
    /// client's connection its Via's flow token names, or by datagram to
    /// the next Via; a far-end request to the client connection its Route
    /// names, or to the backend the core chose. Replies go back on the link.
    fn backend_message(&self, proxy: &sip_lb_proto::proxy::Proxy, m: &StreamIn, action: Action, out: &mut Vec<u8>) {
        match action {
            Action::Forward { to, from, what } => {
                let taken = match what {
                    Forwarded::Response => self.relay.take(proxy.keys(), &m.bytes, out),
                    Forwarded::Request => match self.relay.take_request(proxy, &m.bytes, m.peer, from, out) {
                        Some(Fate::Reply(_)) => {
                            self.stats.replies.inc();
                            self.reply(m, out);
                            return;
                        }
                        fate => fate.map(|f| f == Fate::Queued),
                    },
                };
                if taken.is_none() {
                    self.send(out, to, from, what);
                }
            }
            Action::Reply { .. } => {
                self.stats.replies.inc();
                self.reply(m, out);
            }
            Action::Drop(reason) => {
                tracing::debug!(worker = self.index, ?reason, "message from a backend connection dropped");
                self.stats.dropped.inc();
            }
        }
    }

    /// The shield's verdict on a client's message, as for a datagram: the
    /// prefix lists, runtime bans, scanners and the per-source rate (one
    /// bucket per source, shared with the UDP workers). A scanner's or a
    /// blocked source's connection is closed; an over-rate message is only
    /// dropped. Offenders are reported for bans like the UDP workers do.
    fn admit(&self, plan: &crate::dataplane::Plan, m: &StreamIn) -> bool {
        use sip_lb_proto::shield::ShieldDrop;
        let bans = self.shield.bans.load();
        let ip = m.peer.ip().to_canonical();
        let Err(why) = self.shield.buckets.check(&plan.shield, &bans.set, ip, &m.bytes, self.shield.now_ns()) else {
            return true;
        };
        self.stats.shield_drops[why.index()].inc();
        match why {
            ShieldDrop::Scanner => self.shield.report(ip, Offence::Scanner),
            ShieldDrop::RateLimited => self.shield.report(ip, Offence::OverRate),
            ShieldDrop::Banned => {
                if let Some(slot) = bans.slot_of(ip) {
                    self.shield.ban_hits.add(slot);
                }
            }
            _ => {}
        }
        if matches!(why, ShieldDrop::Blocked | ShieldDrop::Banned | ShieldDrop::Scanner) {
            self.flows.deliver(m.token, Out::Close);
        }
        false
    }

    /// A reply to `m`, on the connection it came from.
    fn reply(&self, m: &StreamIn, out: &[u8]) {
        match m.link {
            Some(l) => {
                self.relay.links.as_ref().map(|links| links.reply(l, out));
            }
            None => {
                self.flows.deliver(m.token, Out::Bytes(out.to_vec()));
            }
        }
    }

    /// Over the backend's connection when it has one (`super::links`), else
    /// one datagram; a failure (a full socket buffer: the sockets are
    /// non-blocking, like the UDP workers') is counted as `send_failed`.
    fn send(&self, out: &mut [u8], to: SocketAddr, from: usize, what: Forwarded) -> bool {
        if let Some(queued) = self.relay.links.as_ref().and_then(|l| l.forward(out, to, what)) {
            return queued;
        }
        let sent = self.sockets.get(from).map(|sock| sock.send_to(out, to));
        match sent {
            Some(Ok(_)) => true,
            other => {
                tracing::debug!(worker = self.index, %to, "send: {other:?}");
                self.stats.send_failed.inc();
                false
            }
        }
    }
}
