//! The flow token in our Via: `;slb-flow=<16 hex token><16 hex MAC>`.
//!
//! The token is a connection slot and that slot's generation (a reused slot
//! gets a new generation, so a late response for a closed connection never
//! reaches the next connection in its slot). The MAC is the branch MAC
//! (`proxy::mac`, the `[security]` key) over the token, our branch and the
//! Call-ID: our branch is itself MAC'd over the client's Via, so the token
//! is bound to one transaction of one call, and nobody without the key can
//! point a response at another connection.

use crate::proxy::Keys;
use crate::sip::message::{Header, Message, MAX_HEADERS};
use crate::sip::params::header_param;
use crate::sip::span::Span;
use crate::sip::text::hex64;
use crate::sip::{HeaderName, Via};
use std::mem::MaybeUninit;

/// The Via parameter, as written (with its `;` and `=`).
pub const FLOW_PARAM: &[u8] = b";slb-flow=";

/// Its name, for the parameter lookup (the same in our Record-Route and
/// Path URIs).
pub const FLOW_NAME: &[u8] = b"slb-flow";
const NAME: &[u8] = FLOW_NAME;

/// A connection of the stream layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowToken {
    pub slot: u32,
    pub generation: u32,
}

impl FlowToken {
    pub fn to_u64(self) -> u64 {
        u64::from(self.generation) << 32 | u64::from(self.slot)
    }

    pub fn from_u64(v: u64) -> FlowToken {
        FlowToken { slot: v as u32, generation: (v >> 32) as u32 }
    }
}

/// Why [`stamp`] could not add the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StampError {
    /// `out` does not start with a request line and our Via: not a request
    /// the proxy forwarded.
    NoOwnVia,
}

/// Adds the flow parameter to our Via in `out`, a request as
/// `Proxy::handle` forwarded it (our Via is the first header line). The
/// bytes after our Via move by 43 bytes, within `out`'s capacity when the
/// driver reserves it.
pub fn stamp(keys: &Keys, out: &mut Vec<u8>, token: FlowToken, call_id: &[u8]) -> Result<(), StampError> {
    let (branch, at) = own_via_branch(out).ok_or(StampError::NoOwnVia)?;
    let mac = keys.current.mac(token.to_u64(), &out[branch.start()..branch.end()], call_id);
    let mut param = [0u8; FLOW_PARAM.len() + 32];
    param[..FLOW_PARAM.len()].copy_from_slice(FLOW_PARAM);
    param[FLOW_PARAM.len()..FLOW_PARAM.len() + 16].copy_from_slice(&hex64(token.to_u64()));
    param[FLOW_PARAM.len() + 16..].copy_from_slice(&hex64(mac));
    out.splice(at..at, param);
    Ok(())
}

/// Our branch in a request we forwarded, and the end of our Via line.
fn own_via_branch(out: &[u8]) -> Option<(Span, usize)> {
    let line = memchr::memmem::find(out, b"\r\n")? + 2;
    let rest = out.get(line..)?;
    if !rest.starts_with(b"Via: SIP/2.0/") {
        return None;
    }
    let end = line + memchr::memmem::find(rest, b"\r\n")?;
    let via = &out[line..end];
    let b = memchr::memmem::find(via, b";branch=")? + b";branch=".len();
    let len = via[b..].iter().position(|&c| c == b';').unwrap_or(via.len() - b);
    Some((Span::new(line + b, line + b + len), end))
}

/// What the top Via of a response says about a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowCheck {
    /// No flow parameter: an ordinary (UDP) transaction.
    None,
    /// The connection the response belongs to.
    Token(FlowToken),
    /// A flow parameter that does not verify: drop the response.
    Forged,
}

/// The flow of a response whose top Via the proxy already accepted as ours
/// (`Proxy::handle` returned `Forward` for it). A quick substring test
/// keeps responses without a token (all UDP ones) at one `memmem`.
pub fn of_response(keys: &Keys, response: &[u8]) -> FlowCheck {
    if memchr::memmem::find(response, FLOW_PARAM).is_none() {
        return FlowCheck::None;
    }
    let mut slots = [const { MaybeUninit::<Header>::uninit() }; MAX_HEADERS];
    let Ok(m) = Message::parse_uninit(response, &mut slots) else { return FlowCheck::Forged };
    let Some(h) = m.find(HeaderName::Via) else { return FlowCheck::Forged };
    let Some(via) = Via::parse(response, h.value) else { return FlowCheck::Forged };
    let top = Span::new(h.value.start(), via.end as usize);
    let Some(v) = header_param(response, top, NAME) else { return FlowCheck::None };
    let v = v.of(response);
    let (Some(token), Some(mac)) = (v.get(..16).and_then(parse_hex), v.get(16..).and_then(parse_hex)) else {
        return FlowCheck::Forged;
    };
    let call_id = m.find(HeaderName::CallId).map(|h| m.get(h.value)).unwrap_or(&[]);
    if v.len() != 32 || !keys.verify(mac, token, via.branch_bytes(response), call_id) {
        return FlowCheck::Forged;
    }
    FlowCheck::Token(FlowToken::from_u64(token))
}

/// 1 to 16 hex digits (either case) as a number; the flow tokens' fields.
pub(super) fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| Some(n << 4 | u64::from((b as char).to_digit(16)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Key;

    fn keys() -> Keys {
        Keys::new(Key::from_secret(b"a secret of 16+ bytes"), None)
    }

    const FORWARDED: &[u8] = b"INVITE sip:b@x SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKslb00000000000000010123456789abcdef\r\n\
Via: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bKc;received=192.0.2.1;rport=40000\r\n\
Call-ID: cid@x\r\nContent-Length: 0\r\n\r\n";

    /// The backend's response to `request`: its Vias, Call-ID.
    fn response_to(request: &[u8]) -> Vec<u8> {
        let s = std::str::from_utf8(request).unwrap();
        let mut r = String::from("SIP/2.0 200 OK\r\n");
        for l in s.split("\r\n").skip(1) {
            if l.starts_with("Via:") || l.starts_with("Call-ID:") {
                r.push_str(l);
                r.push_str("\r\n");
            }
        }
        r.push_str("Content-Length: 0\r\n\r\n");
        r.into_bytes()
    }

    #[test]
    fn stamped_token_comes_back_verified() {
        let t = FlowToken { slot: 7, generation: 3 };
        let mut out = FORWARDED.to_vec();
        stamp(&keys(), &mut out, t, b"cid@x").unwrap();
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(s.contains("branch=z9hG4bKslb00000000000000010123456789abcdef;slb-flow=0000000300000007"), "{s}");
        let resp = response_to(&out);
        assert_eq!(of_response(&keys(), &resp), FlowCheck::Token(t));
        // Another key, another Call-ID, another token: forged.
        assert_eq!(of_response(&Keys::new(Key::from_secret(b"another secret 16+"), None), &resp), FlowCheck::Forged);
        let other_cid = String::from_utf8(resp.clone()).unwrap().replace("cid@x", "cid@y");
        assert_eq!(of_response(&keys(), other_cid.as_bytes()), FlowCheck::Forged);
        let other_slot =
            String::from_utf8(resp.clone()).unwrap().replace("slb-flow=0000000300000007", "slb-flow=0000000300000008");
        assert_eq!(of_response(&keys(), other_slot.as_bytes()), FlowCheck::Forged);
        // Without the parameter: not a flow.
        assert_eq!(of_response(&keys(), &response_to(FORWARDED)), FlowCheck::None);
    }

    #[test]
    fn token_in_a_lower_via_is_not_ours() {
        let mut out = FORWARDED.to_vec();
        stamp(&keys(), &mut out, FlowToken { slot: 1, generation: 1 }, b"cid@x").unwrap();
        // A response whose top Via is someone else's, the flow below it.
        let resp = response_to(&out);
        let s = String::from_utf8(resp).unwrap().replacen(
            "Via:",
            "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKz\r\nVia:",
            1,
        );
        assert_eq!(of_response(&keys(), s.as_bytes()), FlowCheck::None);
    }

    #[test]
    fn stamp_needs_our_via_first() {
        let mut out = b"INVITE sip:b@x SIP/2.0\r\nCall-ID: c\r\n\r\n".to_vec();
        assert_eq!(stamp(&keys(), &mut out, FlowToken { slot: 0, generation: 0 }, b"c"), Err(StampError::NoOwnVia));
        assert_eq!(FlowToken::from_u64(FlowToken { slot: 9, generation: u32::MAX }.to_u64()).generation, u32::MAX);
    }
}
