//! Prometheus families of the TCP/TLS layer (`crate::stream::stats`),
//! present only when a `tcp:`/`tls:` listener runs, and of STUN on the UDP
//! port (with `stun = true`).
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use sip_lb_proto::stream::FrameError;

use super::metrics::{family, Labels};
use crate::dataplane::StunStats;
use crate::stream::stats::StreamStats;

fn labelled<'a>(
    key: &'static str,
    rows: &'a [(&'static str, u64)],
) -> impl Iterator<Item = (Labels, ConstCounter)> + 'a {
    rows.iter().map(move |(l, n)| (vec![(key, (*l).to_owned())], ConstCounter::new(*n)))
}

pub fn families(e: &mut DescriptorEncoder, s: &StreamStats) -> Result<(), std::fmt::Error> {
    family(
        e,
        "sip_lb_tcp_connections_open",
        "TCP/TLS connections open now",
        MetricType::Gauge,
        [(Labels::new(), ConstGauge::new(s.open() as i64))],
    )?;
    let conns = [
        ("accepted", s.accepted.get()),
        ("closed", s.closed.get()),
        ("refused_max_connections", s.refused_max.get()),
        ("refused_max_per_ip", s.refused_per_ip.get()),
        ("closed_idle", s.closed_idle.get()),
        ("tls_handshake_failed", s.tls_handshake_failed.get()),
        ("tls_handshake_timeout", s.tls_handshake_timeout.get()),
    ];
    family(e, "sip_lb_tcp_connections", "TCP/TLS connection events", MetricType::Counter, labelled("event", &conns))?;
    let errors = [FrameError::TooLarge, FrameError::NoLength, FrameError::BadLength];
    let rows: Vec<(&'static str, u64)> =
        [("message", s.messages.get()), ("ping", s.pings.get()), ("no_content_length", s.no_length.get())]
            .into_iter()
            .chain(errors.iter().map(|&er| (er.as_str(), s.frame_error(er).get())))
            .collect();
    family(
        e,
        "sip_lb_tcp_frames",
        "What the stream framer found (errors close the connection)",
        MetricType::Counter,
        labelled("kind", &rows),
    )?;
    let msgs = [
        ("request_forwarded", s.requests_forwarded.get()),
        ("reply", s.replies.get()),
        ("dropped", s.dropped.get()),
        ("send_failed", s.send_failed.get()),
        ("worker_queue_full", s.queue_full.get()),
        ("response_delivered", s.responses.delivered.get()),
        ("response_flow_gone", s.responses.gone.get()),
        ("response_flow_full", s.responses.full.get()),
        ("response_flow_forged", s.responses.forged.get()),
        ("request_to_client_delivered", s.requests.delivered.get()),
        ("request_to_client_flow_gone", s.requests.gone.get()),
        ("request_to_client_flow_full", s.requests.full.get()),
        ("request_to_client_flow_forged", s.requests.forged.get()),
    ];
    family(
        e,
        "sip_lb_tcp_messages",
        "Messages to and from TCP/TLS connections, by outcome",
        MetricType::Counter,
        labelled("outcome", &msgs),
    )?;
    let l = &s.links;
    let links = [
        ("connected", l.connected.get()),
        ("connect_failed", l.connect_failed.get()),
        ("lost", l.lost.get()),
        ("sent", l.sent.get()),
        ("dropped_down", l.dropped_down.get()),
        ("dropped_full", l.dropped_full.get()),
        ("received", l.received.get()),
    ];
    family(
        e,
        "sip_lb_backend_links",
        "Connections to backends reached over TCP/TLS and the messages they carry",
        MetricType::Counter,
        labelled("event", &links),
    )?;
    let shield: Vec<(&'static str, u64)> =
        sip_lb_proto::shield::ShieldDrop::ALL.iter().map(|d| (d.name(), s.shield_drops[d.index()].get())).collect();
    family(
        e,
        "sip_lb_tcp_shield_dropped",
        "TCP/TLS connections refused at accept (blocked, banned) and messages dropped by the shield",
        MetricType::Counter,
        labelled("reason", &shield),
    )
}

pub fn stun_family(e: &mut DescriptorEncoder, s: &StunStats) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let rows = [
        ("answered", s.answered.load(Relaxed)),
        ("would_amplify", s.would_amplify.load(Relaxed)),
        ("malformed", s.malformed.load(Relaxed)),
    ];
    family(
        e,
        "sip_lb_stun",
        "STUN Binding requests on the UDP port, by outcome",
        MetricType::Counter,
        labelled("outcome", &rows),
    )
}
