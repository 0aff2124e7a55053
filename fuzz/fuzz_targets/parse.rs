//! The SIP views on arbitrary bytes: `Message::parse` and every view the
//! forwarding step builds on top of it (Via, URI, comma lists, params). No
//! panic, no hang, and every span a view returns lies inside the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_lb_fuzz::check_span;
use sip_lb_proto::sip::params::{addr_uri, header_param, params};
use sip_lb_proto::sip::span::Span;
use sip_lb_proto::sip::values::values;
use sip_lb_proto::sip::{HeaderName, Message, StartLine, Uri, Via};

fuzz_target!(|data: &[u8]| {
    let mut slots1 = Message::slots();
    let Ok(m) = Message::parse(data, &mut slots1) else { return };
    let len = data.len();
    assert!(m.start as usize <= len && m.head_start as usize <= len + 1);
    assert!(m.body_start as usize <= len, "body_start {} > {len}", m.body_start);
    assert!(m.rest().len() <= len);
    match m.start_line {
        StartLine::Request { method, uri, version } => {
            for s in [method, uri, version] {
                check_span(s, len, "start line");
            }
            let _ = Uri::parse(data, uri).map(|u| (u.host_ip(data), u.port));
        }
        StartLine::Response { version, reason, code } => {
            check_span(version, len, "version");
            check_span(reason, len, "reason");
            assert!((100..=699).contains(&code));
        }
        StartLine::Invalid { .. } => {}
    }
    for h in m.headers() {
        check_span(h.line, len, "line");
        check_span(h.value, len, "value");
        assert!(h.line.start() <= h.value.start() && h.value.end() <= h.line.end());
        assert!(h.next as usize <= len && h.line.end() <= h.next as usize);
        let mut n = 0;
        for v in values(data, h.value) {
            check_span(v, len, "comma value");
            assert!(h.value.start() <= v.start() && v.end() <= h.value.end());
            let u = addr_uri(data, v);
            check_span(u, len, "addr uri");
            let _ = Uri::parse(data, u);
            n += 1;
            assert!(n <= h.value.len(), "more values than bytes");
        }
        if let Some(t) = header_param(data, h.value, b"tag") {
            check_span(t, len, "tag");
        }
        for p in params(data, h.value.start(), h.value.end()).take(1000) {
            let _ = p;
        }
        if h.name == HeaderName::Via {
            // Walk the comma-joined values like the response path does.
            let mut span = h.value;
            for _ in 0..=h.value.len() {
                let Some(via) = Via::parse(data, span) else { break };
                for s in [via.transport, via.host] {
                    check_span(s, len, "via");
                }
                for s in [via.branch, via.received].into_iter().flatten() {
                    check_span(s, len, "via param");
                }
                assert!(via.end as usize <= span.end());
                let _ = (via.host_ip(data), via.received_ip(data), via.rport_value(data));
                match via.next {
                    Some(n) => {
                        assert!(n as usize > span.start() && n as usize <= span.end(), "via.next must advance");
                        span = Span::new(n as usize, span.end());
                    }
                    None => break,
                }
            }
        }
    }
});
