//! The one thing a UDP worker does for the stream layer: a response that
//! came back from a backend with a flow token in our Via is queued on its
//! connection instead of being sent over UDP. Lock-free (`Flows::deliver`);
//! it costs responses without a token one `memmem` for the parameter.
use std::sync::Arc;

use sip_lb_proto::flow::{self, record_route, via_transport, FlowCheck};
use std::net::SocketAddr;

use sip_lb_proto::proxy::{Keys, Proxy, ReplyCode};

use super::flows::{Delivery, Flows, Out};
use super::stats::{FlowCounts, StreamStats};

/// What became of a request for a client's flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Queued on the client's connection.
    Queued,
    /// Dropped (a full queue, or nothing to answer), counted.
    Dropped,
    /// Answered: the reply is in `out`, for the request's source.
    Reply(ReplyCode),
}

pub struct Relay {
    pub flows: Arc<Flows>,
    pub stats: Arc<StreamStats>,
    /// Backends reached over connections (`super::links`), if any.
    pub links: Option<Arc<super::links::Links>>,
}

impl Relay {
    /// `response` is what the backend sent, `out` what the core made of it
    /// (our Via removed). `None`: not a flow's, send it by UDP as usual.
    /// `Some(queued)`: a flow's, never sent by UDP; queued on its connection,
    /// or dropped and counted.
    pub fn take(&self, keys: &Keys, response: &[u8], out: &[u8]) -> Option<bool> {
        self.route(flow::of_response(keys, response), out, &self.stats.responses)
    }

    /// A request from the far end of a dialog recorded from a connection,
    /// or to a UA registered with our Path (its top Route is ours with a
    /// token), as the core forwarded it: queued on the client's connection
    /// instead of going to a backend. `None`: not a flow's. A flow that is
    /// gone gets 430 Flow Failed, a token that does not verify 403 (RFC 5626
    /// §5.2, §5.3): the reply to `request` from `src` is then in `out`.
    /// `from` is the listener the core's Via names: our Record-Route, when
    /// one is recorded towards the connection, names it.
    pub fn take_request(
        &self,
        proxy: &Proxy,
        request: &[u8],
        src: SocketAddr,
        from: usize,
        out: &mut Vec<u8>,
    ) -> Option<Fate> {
        let check = record_route::of_request(proxy.identity(), proxy.keys(), request);
        let refuse = |code: ReplyCode, out: &mut Vec<u8>| match proxy.refuse(request, src, code, out) {
            true => Fate::Reply(code),
            false => Fate::Dropped,
        };
        match check {
            FlowCheck::None => None,
            FlowCheck::Forged => {
                self.stats.requests.forged.inc();
                Some(refuse(ReplyCode::Forbidden, out))
            }
            FlowCheck::Token(token) => {
                if let Some(side) = self.flows.side(token) {
                    // RFC 3261 §18.2.2: a reliable transport in our Via, so
                    // the answer comes back on the connection; our route for
                    // the dialog's later requests, one value per side.
                    via_transport::set(out, side.transport);
                    record_route::record_towards(proxy, request, from, token, &side.route_uri, out);
                }
                match self.route(check, out, &self.stats.requests) {
                    Some(true) => Some(Fate::Queued),
                    _ if self.gone(check) => Some(refuse(ReplyCode::FlowFailed, out)),
                    _ => Some(Fate::Dropped),
                }
            }
        }
    }

    /// Whether the connection a token names is closed (or its slot reused).
    fn gone(&self, check: FlowCheck) -> bool {
        match check {
            FlowCheck::Token(t) => !self.flows.is_open(t),
            _ => false,
        }
    }

    /// What the core forwarded to `to`, over the backend's connection when
    /// it has one (`Links::forward`): `None` sends it by datagram.
    pub fn to_link(
        &self,
        out: &mut [u8],
        to: std::net::SocketAddr,
        what: sip_lb_proto::proxy::Forwarded,
    ) -> Option<bool> {
        self.links.as_ref()?.forward(out, to, what)
    }

    fn route(&self, check: FlowCheck, out: &[u8], counts: &FlowCounts) -> Option<bool> {
        match check {
            FlowCheck::None => None,
            FlowCheck::Forged => {
                counts.forged.inc();
                Some(false)
            }
            FlowCheck::Token(token) => {
                // The copy crosses into the connection's writer task.
                let delivery = self.flows.deliver(token, Out::Bytes(out.to_vec()));
                let c = match delivery {
                    Delivery::Queued => &counts.delivered,
                    Delivery::Gone => &counts.gone,
                    Delivery::Full => &counts.full,
                };
                c.inc();
                Some(delivery == Delivery::Queued)
            }
        }
    }
}
