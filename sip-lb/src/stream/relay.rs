//! The one thing a UDP worker does for the stream layer: a response that
//! came back from a backend with a flow token in our Via is queued on its
//! connection instead of being sent over UDP. Lock-free (`Flows::deliver`);
//! it costs responses without a token one `memmem` for the parameter.
use std::sync::Arc;

use sip_lb_proto::flow::{self, FlowCheck};
use sip_lb_proto::proxy::Keys;

use super::flows::{Delivery, Flows, Out};
use super::stats::StreamStats;

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
        match flow::of_response(keys, response) {
            FlowCheck::None => None,
            FlowCheck::Forged => {
                self.stats.responses_flow_forged.inc();
                Some(false)
            }
            FlowCheck::Token(token) => {
                // The copy crosses into the connection's writer task.
                let delivery = self.flows.deliver(token, Out::Bytes(out.to_vec()));
                let c = match delivery {
                    Delivery::Queued => &self.stats.responses_delivered,
                    Delivery::Gone => &self.stats.responses_flow_gone,
                    Delivery::Full => &self.stats.responses_flow_full,
                };
                c.inc();
                Some(delivery == Delivery::Queued)
            }
        }
    }
}
