//! The `sip_lb_hep_*` families: HEP mirroring's counters (`dataplane::hep`).
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use super::metrics::{family, Labels};
use crate::dataplane::hep::HepStats;

pub fn families(e: &mut DescriptorEncoder, s: &HepStats) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    for (name, help, v) in [
        ("sip_lb_hep_sent", "HEP packets sent to the collector", &s.sent),
        ("sip_lb_hep_dropped", "Message copies dropped because the HEP queue was full", &s.dropped),
        ("sip_lb_hep_errors", "HEP packets that could not be encoded or sent", &s.errors),
    ] {
        family(e, name, help, MetricType::Counter, [(Labels::new(), ConstCounter::new(v.load(Relaxed)))])?;
    }
    Ok(())
}
