//! Which calls are mirrored when `[hep] sample` < 1: a pure function of the
//! Call-ID, so every message of a call (both directions, retransmissions,
//! CANCEL, ACK, BYE) is captured or none is, on every worker and node.

use crate::sip::{HeaderName, Message, MAX_HEADERS};
use sip_lb_common::call_id_hash;

/// Mixes the Call-ID hash so that the sampled calls are not the ones one
/// backend wins (the balancer mixes the same hash with backend seeds).
const SAMPLE_SEED: u64 = u64::from_le_bytes(*b"hep-smpl");

/// A sampling rate as a threshold on 64-bit values: `Rate::of(0.1)` keeps
/// about one call in ten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(u64);

impl Rate {
    pub const ALL: Rate = Rate(u64::MAX);

    /// `fraction` in [0, 1] (clamped).
    pub fn of(fraction: f64) -> Rate {
        if fraction >= 1.0 {
            Rate::ALL
        } else if fraction.is_nan() || fraction <= 0.0 {
            Rate(0)
        } else {
            Rate((fraction * u64::MAX as f64) as u64)
        }
    }

    /// Whether the call with this Call-ID hash is mirrored.
    #[inline]
    pub fn keeps_hash(self, call_id_hash: u64) -> bool {
        self == Rate::ALL || crate::balance::hrw::mix(call_id_hash, SAMPLE_SEED) < self.0
    }

    /// Whether `datagram` is mirrored: every one at rate 1, none at 0, else
    /// by its Call-ID (a message without one is not).
    pub fn keeps(self, datagram: &[u8]) -> bool {
        if self == Rate::ALL {
            return true;
        }
        if self.0 == 0 {
            return false;
        }
        let mut slots = [core::mem::MaybeUninit::uninit(); MAX_HEADERS];
        let Ok(m) = Message::parse_uninit(datagram, &mut slots) else { return false };
        match m.find(HeaderName::CallId) {
            Some(h) => self.keeps_hash(call_id_hash(m.get(h.value))),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(call_id: &str, first: &str) -> Vec<u8> {
        format!("{first}\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK1\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\r\n")
            .into_bytes()
    }

    #[test]
    fn whole_calls_are_kept_or_not_and_the_share_matches() {
        let r = Rate::of(0.25);
        let mut kept = 0;
        for i in 0..4000 {
            let id = format!("call-{i}@host");
            let req = r.keeps(&msg(&id, "INVITE sip:a@b SIP/2.0"));
            // The response and the compact form of the same call agree.
            assert_eq!(req, r.keeps(&msg(&id, "SIP/2.0 200 OK")));
            let compact = format!("BYE sip:a@b SIP/2.0\r\ni: {id}\r\n\r\n");
            assert_eq!(req, r.keeps(compact.as_bytes()));
            kept += usize::from(req);
        }
        assert!((900..1100).contains(&kept), "{kept} of 4000 kept at 0.25");
        assert!(Rate::of(1.0).keeps(b"garbage"));
        assert!(!Rate::of(0.0).keeps(&msg("x", "INVITE sip:a@b SIP/2.0")));
        assert!(!Rate::of(0.5).keeps(b"no call id\r\n\r\n"));
    }
}
