//! Differential: the XDP program's Call-ID scan (its exact model,
//! `sip_lb_common::callid_scan::find_call_id`, which
//! `sip-lb/tests/xdp_differential.rs` holds to the loaded program) against
//! the userspace parser. Wherever both find a Call-ID they must find the same
//! bytes (same offsets, so the same `call_id_hash`): XDP steers a call to the
//! worker the hash names. The scan may miss (it then passes the datagram and
//! userspace hashes), but only in documented cases: the last check asserts
//! that a plain, single-line Call-ID of a defect-free message is found. The
//! first two input bytes pick the scan window (as XDP's copy limit), the rest
//! is the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_lb_common::call_id_hash;
use sip_lb_common::callid_scan::{find_call_id, MAX_LEADING_LWS, MIN_SIP_LEN, SEARCH_STEPS};
use sip_lb_common::maps::MAX_CALL_ID_SPAN;
use sip_lb_proto::sip::{Header, HeaderName, Message};

fuzz_target!(|input: &[u8]| {
    let (max_scan, payload) = match input {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])) % 4096, rest),
        _ => return,
    };
    // Also the unlimited window: the scan's rules without the copy limit.
    for window in [max_scan, usize::MAX] {
        let model = find_call_id(payload, window);
        if let Some((a, b)) = model {
            assert!(a < b && b <= payload.len() && b <= window, "model span {a}..{b}");
        }
        let mut slots1 = Message::slots();
        let Ok(m) = Message::parse(payload, &mut slots1) else {
            continue;
        };
        let header = m.find(HeaderName::CallId);
        let parser = header.map(|h| (h.value.start(), h.value.end()));
        if let (Some(x), Some(p)) = (model, parser) {
            assert_eq!(
                x,
                p,
                "model {:?} vs parser {:?}",
                String::from_utf8_lossy(&payload[x.0..x.1]),
                String::from_utf8_lossy(&payload[p.0..p.1])
            );
            assert_eq!(call_id_hash(&payload[x.0..x.1]), call_id_hash(m.get(header.unwrap().value)));
        }
        // With the whole datagram in the window, a plain Call-ID of a
        // defect-free message must be found (XDP must not miss ordinary
        // traffic): start line at offset 0 beginning with 3 upper-case
        // letters, the field on one line without CR, <= 7 SP/HT before the
        // colon, <= MAX_LEADING_LWS blanks before the value, within the span
        // and the search steps.
        if window == usize::MAX && m.defect.is_none() {
            if let Some(h) = header.filter(|h| h.value.start() < h.value.end()) {
                if plain(payload, h) {
                    assert_eq!(model, parser, "model missed the Call-ID");
                }
            }
        }
    }
});

fn plain(payload: &[u8], h: &Header) -> bool {
    if payload.len() < MIN_SIP_LEN || !payload[..3].iter().all(u8::is_ascii_uppercase) {
        return false;
    }
    let (ls, le) = (h.line.start(), h.line.end());
    let line = &payload[ls..le];
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return false; // folded, lone CR, or `\r\r\n`
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    // The parser's Call-ID name is `i` or `call-id`.
    let name_len = if line[0].eq_ignore_ascii_case(&b'i') { 1 } else { 7 };
    if colon - name_len > 7 || h.value.start() - (ls + colon + 1) > MAX_LEADING_LWS {
        return false;
    }
    if le - (ls + colon + 1) >= MAX_CALL_ID_SPAN {
        return false;
    }
    // Search steps: one per LF up to the line, one per >= 8 bytes read.
    let lfs = payload[..ls].iter().filter(|&&b| b == b'\n').count();
    lfs + ls / 8 + 4 < SEARCH_STEPS
}
