//! Differential: the XDP program's Call-ID scan (its model,
//! `sip_lb_common::callid_scan::find_call_id`) against the userspace parser.
//! Wherever both find a Call-ID they must find the same bytes (same offsets,
//! so the same `call_id_hash`): XDP steers a call to the worker the hash
//! names. The first two input bytes pick the scan window (as XDP's copy
//! limit), the rest is the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_lb_common::callid_scan::find_call_id;
use sip_lb_common::call_id_hash;
use sip_lb_fuzz::sip::{HeaderName, Message};

fuzz_target!(|input: &[u8]| {
    let (max_scan, payload) = match input {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])) % 4096, rest),
        _ => return,
    };
    // Also the unlimited window: the pure rule without the XDP copy limit.
    for window in [max_scan, usize::MAX] {
        let model = find_call_id(payload, window);
        if let Some((a, b)) = model {
            assert!(a < b && b <= payload.len() && b <= window, "model span {a}..{b}");
        }
        let mut slots1 = Message::slots();
        let Ok(m) = Message::parse(payload, &mut slots1) else { continue };
        let parser = m.find(HeaderName::CallId).map(|h| (h.value.start(), h.value.end()));
        if let (Some(x), Some(p)) = (model, parser) {
            assert_eq!(
                x,
                p,
                "model {:?} vs parser {:?}",
                String::from_utf8_lossy(&payload[x.0..x.1]),
                String::from_utf8_lossy(&payload[p.0..p.1])
            );
            assert_eq!(call_id_hash(&payload[x.0..x.1]), call_id_hash(m.get(m.find(HeaderName::CallId).unwrap().value)));
        }
        // With the whole datagram in the window, a non-empty Call-ID the
        // parser finds in a defect-free message is found by the model too
        // (XDP must not miss what userspace forwards).
        if window == usize::MAX && m.defect.is_none() {
            if let Some(p) = parser.filter(|p| p.0 < p.1) {
                assert_eq!(model, Some(p), "model missed the Call-ID");
            }
        }
    }
});
