//! Deterministic identifiers: our Via branch (RFC 3261 §16.11) and the To
//! tag of stateless replies. No random state, so every worker and every
//! restart computes the same value for the same request.
//!
//! Our branch is `z9hG4bKslb` + 16 hex digits of the transaction hash (this
//! file) + 16 hex digits of a keyed MAC over the next hop (`mac.rs`).

use crate::sip::span::Span;
use crate::sip::via::{Via, MAGIC_COOKIE};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Our branches start with this: the RFC 3261 cookie plus a sip-lb marker,
/// so a response's top Via can be recognised as one we made.
pub const BRANCH_PREFIX: &[u8] = b"z9hG4bKslb";

/// Hex digits of each of the two numbers after [`BRANCH_PREFIX`].
const DIGITS: usize = 16;

/// Fixed seed: the hash must be the same in every process.
const SEED: u64 = 0x5195_1b5e_ed00_3261;

/// Chains `parts` through xxh3, each part seeding the next (no buffer to
/// concatenate into; the length is mixed in so `ab|c` differs from `a|bc`).
fn chain(parts: &[&[u8]]) -> u64 {
    parts.iter().fold(SEED, |h, p| xxh3_64_with_seed(p, h ^ (p.len() as u64).rotate_left(32)))
}

/// Inputs of the branch, as bytes of the request.
pub struct BranchInput<'a> {
    pub top_via: &'a Via,
    /// The first Via value as written (`start..via.end`).
    pub top_via_raw: &'a [u8],
    pub from_tag: &'a [u8],
    pub call_id: &'a [u8],
    pub cseq_number: &'a [u8],
    pub request_uri: &'a [u8],
}

/// The hash that follows [`BRANCH_PREFIX`] in our Via.
///
/// With an RFC 3261 client branch, hash that branch and the sent-by: a
/// retransmission, the CANCEL and the non-2xx ACK all carry the INVITE's top
/// Via (§9.1, §17.1.1.3), so they get the INVITE's branch downstream, and the
/// method is deliberately left out. Otherwise (RFC 2543 clients, and a branch
/// that is only the cookie, RFC 4475 "badbranch") hash the fields §16.11
/// lists except the To tag: the non-2xx ACK carries the tag its INVITE did
/// not, and must still get the INVITE's branch.
pub fn branch_hash(buf: &[u8], i: &BranchInput<'_>) -> u64 {
    let branch = i.top_via.branch_bytes(buf);
    if branch.len() > MAGIC_COOKIE.len() && branch.starts_with(MAGIC_COOKIE) {
        let port = i.top_via.port.unwrap_or(5060).to_be_bytes();
        return chain(&[b"3261", branch, i.top_via.host.of(buf), &port]);
    }
    chain(&[b"2543", i.top_via_raw, i.from_tag, i.call_id, i.cseq_number, i.request_uri])
}

/// The transaction hash carries, in its low byte, the listener the request
/// arrived on: the response must leave from the address the client sent to
/// (RFC 3581 §4), which is not the one our Via names when the backend is of
/// the other address family. The MAC covers it like the rest.
pub fn with_arrival(hash: u64, listener: usize) -> u64 {
    (hash & !0xff) | (listener as u64 & 0xff)
}

/// The arrival listener recorded by [`with_arrival`].
pub fn arrival(txn: u64) -> usize {
    (txn & 0xff) as usize
}

/// The transaction hash and MAC of a branch of ours, if it has our shape.
pub fn parse_ours(branch: &[u8]) -> Option<(u64, u64)> {
    let rest = branch.strip_prefix(BRANCH_PREFIX)?;
    if rest.len() != 2 * DIGITS {
        return None;
    }
    let (hash, mac) = rest.split_at(DIGITS);
    Some((parse_hex64(hash)?, parse_hex64(mac)?))
}

fn parse_hex64(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |n, &b| match HEX[usize::from(b)] {
        NOT_HEX => None,
        d => Some(n << 4 | u64::from(d)),
    })
}

/// Marks a byte that is not a hex digit in [`HEX`].
const NOT_HEX: u8 = 0xff;

/// The value of each hex digit (either case, as `char::to_digit(16)`).
static HEX: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 16 {
        t[b"0123456789abcdef"[i] as usize] = i as u8;
        t[b"0123456789ABCDEF"[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// To tag for a stateless reply: stable across retransmissions of the
/// request (§8.2.6.2 asks for the same tag on retransmitted replies).
pub fn reply_tag(call_id: &[u8], from_tag: &[u8], cseq: &[u8], top_via: &[u8]) -> u64 {
    chain(&[b"tag", call_id, from_tag, cseq, top_via])
}

/// The bytes of `s` or empty.
pub fn bytes(buf: &[u8], s: Option<Span>) -> &[u8] {
    s.map(|s| s.of(buf)).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(buf: &'a [u8], via: &'a Via) -> BranchInput<'a> {
        BranchInput {
            top_via: via,
            top_via_raw: buf,
            from_tag: b"1928301774",
            call_id: b"a84b4c76e66710@pc33.atlanta.com",
            cseq_number: b"314159",
            request_uri: b"sip:bob@biloxi.com",
        }
    }

    #[test]
    fn cookie_branch_ignores_other_fields() {
        let v = b"SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds";
        let via = Via::parse(v, Span::new(0, v.len())).unwrap();
        let a = branch_hash(v, &input(v, &via));
        let mut other = input(v, &via);
        other.request_uri = b"sip:x";
        assert_eq!(a, branch_hash(v, &other));
        let v2 = b"SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhdt";
        let via2 = Via::parse(v2, Span::new(0, v2.len())).unwrap();
        assert_ne!(a, branch_hash(v2, &input(v2, &via2)));
    }

    #[test]
    fn rfc2543_branch_uses_16_11_fields() {
        let v = b"SIP/2.0/UDP 192.0.2.2;branch=390skdjuw";
        let via = Via::parse(v, Span::new(0, v.len())).unwrap();
        let a = branch_hash(v, &input(v, &via));
        assert_eq!(a, branch_hash(v, &input(v, &via)));
        let mut other = input(v, &via);
        other.cseq_number = b"314160";
        assert_ne!(a, branch_hash(v, &other));
        assert_ne!(chain(&[b"ab", b"c"]), chain(&[b"a", b"bc"]));
    }

    #[test]
    fn bare_cookie_branch_falls_back_to_rfc2543_fields() {
        let v = b"SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK";
        let via = Via::parse(v, Span::new(0, v.len())).unwrap();
        let a = branch_hash(v, &input(v, &via));
        let mut next = input(v, &via);
        next.cseq_number = b"314160";
        next.call_id = b"another@pc33";
        assert_ne!(a, branch_hash(v, &next), "each transaction of a bare-cookie client gets its own branch");
    }

    #[test]
    fn hex_table_is_to_digit() {
        for b in 0..=255u8 {
            let want = (b as char).to_digit(16).map(|d| d as u8);
            assert_eq!((HEX[usize::from(b)] != NOT_HEX).then_some(HEX[usize::from(b)]), want, "{b}");
        }
        assert_eq!(parse_hex64(b"0123456789ABCDEF"), Some(0x0123_4567_89ab_cdef));
        assert_eq!(parse_hex64(b"00g0"), None);
    }

    #[test]
    fn our_branch_shape() {
        assert_eq!(parse_ours(b"z9hG4bKslb00000000000000ff0123456789abcdef"), Some((0xff, 0x0123_4567_89ab_cdef)));
        assert_eq!(parse_ours(b"z9hG4bKslb00000000000000ff"), None);
        assert_eq!(parse_ours(b"z9hG4bKslb00000000000000ff0123456789abcdeg"), None);
        assert_eq!(parse_ours(b"z9hG4bKxyz00000000000000ff0123456789abcdef"), None);
    }
}
