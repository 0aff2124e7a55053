//! The one thing a UDP worker does for the stream layer: a response that
//! came back from a backend with a flow token in our Via is queued on its
//! connection instead of being sent over UDP. Lock-free (`Flows::deliver`);
//! it costs responses without a token one `memmem` for the parameter.
use std::sync::Arc;

use sip_lb_proto::flow::{self, record_route, FlowCheck};
use sip_lb_proto::proxy::{Keys, Proxy};

use super::flows::{Delivery, Flows, Out};
use super::stats::{FlowCounts, StreamStats};

pub struct Relay {
    pub flows: Arc<Flows>,
    pub stats: Arc<StreamStats>,
}

impl Relay {
    /// `response` is what the backend sent, `out` what the core made of it
    /// (our Via removed). `None`: not a flow's, send it by UDP as usual.
    /// `Some(queued)`: a flow's, never sent by UDP; queued on its connection,
    /// or dropped and counted.
    pub fn take(&self, keys: &Keys, response: &[u8], out: &[u8]) -> Option<bool> {
        self.route(flow::of_response(keys, response), out, &self.stats.responses)
    }

    /// A request from the far end of a dialog recorded from a connection
    /// (its top Route is our Record-Route with a token), as the core
    /// forwarded it: queued on the client's connection instead of going to
    /// a backend. Same answer as [`Relay::take`].
    pub fn take_request(&self, proxy: &Proxy, request: &[u8], out: &[u8]) -> Option<bool> {
        self.route(record_route::of_request(proxy.identity(), proxy.keys(), request), out, &self.stats.requests)
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
