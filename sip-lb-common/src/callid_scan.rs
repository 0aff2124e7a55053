//! The Call-ID scan of the eBPF programs (`sip-lb-ebpf/src/callid.rs`),
//! written as a plain byte-at-a-time function: the exact model of what the
//! kernel code finds, step limits included. The `callid_diff` fuzz target
//! compares it with the userspace parser (`sip_lb::sip::Message`), and
//! `sip-lb/tests/xdp_differential.rs` compares it (and the parser) with the
//! loaded XDP program. The guarantee: wherever the scan and the parser both
//! find a Call-ID, they find the same bytes, so the same `call_id_hash`.
//! The scan may *miss* a Call-ID the parser finds (the datagram is then
//! passed unsteered and userspace still hashes it); it never finds another.
//!
//! Rules (over the *window* `payload[..min(len, max_scan)]`; `cut` means the
//! payload is longer than the window; bytes past the window read as 0, like
//! the zeroed guard after the copy in the kernel):
//! 1. The payload must be at least [`MIN_SIP_LEN`] bytes and start with three
//!    upper-case ASCII letters, else `NotSip` (so leading CR/LF, RFC 3261 §7.5,
//!    are not skipped: such a datagram is passed).
//! 2. Header lines are the lines after each LF, in order. A line starting
//!    with CR or LF ends the header block (`NoCallId`; a lone CR there ends it
//!    too: a miss). The search has [`SEARCH_STEPS`] steps: one per 8..32
//!    bytes read (4 aligned words) or per line checked; when they run out or
//!    the window ends: `TooLong` if cut, else `NoCallId`.
//! 3. A line is the Call-ID when it starts with `call-id` (ASCII case-insensitive,
//!    the `-` exact) or `i`/`I`, then 0..=7 SP/HT, then `:`. If the name is
//!    followed by 8 SP/HT, the scan gives up (`NoCallId`): userspace allows any
//!    number before the colon. Otherwise a line that does not match is skipped.
//! 4. Value: up to [`MAX_LEADING_LWS`] leading SP/HT/CR bytes and LFs followed
//!    by SP/HT (folds) are skipped; an LF followed by anything else means an
//!    empty value (`NoCallId`); still LWS after that: `NoCallId`.
//! 5. The value then runs to the first CR or LF, trailing SP/HT trimmed. It
//!    is accepted only if the header field ends right there: `\r\n` or `\n`,
//!    then a byte that is not SP/HT (or the end of a non-cut datagram). A
//!    lone CR, a fold after the value, or `\r\r\n`: `NoCallId` (userspace
//!    would keep more bytes; such a value is not a valid RFC 3261 `callid`).
//!    If that next byte is past a cut window: `TooLong`.
//! 6. Value limits: [`VALUE_STEPS`] steps (8 bytes per step while no byte is
//!    below 0x21, else one), and the value must end before `start +
//!    MAX_CALL_ID_SPAN` (start = after the colon; an 8-byte step may pass it by
//!    up to 7). Running out: `TooLong`; reaching the end of a non-cut
//!    datagram inside the value: `NoCallId`.
//!
//! Never panics, no allocation, `O(max_scan)`.

use crate::maps::{PassReason, MAX_CALL_ID_SPAN, SCAN_WINDOW};

/// Shortest payload taken for SIP ("ACK x SIP/2.0" is longer).
pub const MIN_SIP_LEN: usize = 12;
/// Header-search iterations. An iteration either reads 32 bytes or checks
/// one line, so a 2 KiB window of lines averaging >= 16 bytes (SIP headers
/// are 20-100) fits: 64 + 2 x 128. A window of shorter lines runs out of
/// steps and is passed as `TooLong`/`NoCallId`. The verifier walks every
/// iteration, so this bound is what its 1M-instruction budget pays for.
pub const SEARCH_STEPS: usize = SCAN_WINDOW / 32 + 2 * (SCAN_WINDOW / 16);
/// Value iterations: one per byte at worst.
pub const VALUE_STEPS: usize = MAX_CALL_ID_SPAN + 1;
/// Leading whitespace bytes (incl. folds) skipped before the value.
pub const MAX_LEADING_LWS: usize = 16;

/// `(start, end)` of the Call-ID value the eBPF program hashes, looking at no
/// more than the first `max_scan` bytes; `None` where it passes the datagram.
pub fn find_call_id(payload: &[u8], max_scan: usize) -> Option<(usize, usize)> {
    scan(payload, max_scan).ok()
}

/// Like [`find_call_id`], with the pass reason the program counts.
pub fn scan(payload: &[u8], max_scan: usize) -> Result<(usize, usize), PassReason> {
    if payload.len() < MIN_SIP_LEN {
        return Err(PassReason::NotSip);
    }
    let w = Window { p: payload, len: payload.len().min(max_scan), cut: payload.len() > max_scan };
    if !(0..3).all(|i| w.b(i).is_ascii_uppercase()) {
        return Err(PassReason::NotSip);
    }
    let mut at = 0usize; // an 8-aligned word whose LFs are in `pending`
    let mut pending = w.lf_mask(0);
    let mut value_at = None;
    for _ in 0..SEARCH_STEPS {
        if pending == 0 {
            if at + 8 >= w.len {
                break;
            }
            // The next four words: stop at the first with an LF.
            let mut next = (at + 32, 0);
            for k in 1..=4 {
                let m = w.lf_mask(at + 8 * k);
                if m != 0 {
                    next = (at + 8 * k, m);
                    break;
                }
            }
            (at, pending) = next;
            continue;
        }
        let p = at + pending.trailing_zeros() as usize + 1;
        pending &= pending - 1;
        match w.line(p) {
            Line::Other => {}
            Line::End | Line::Unsure => return Err(PassReason::NoCallId),
            Line::CallId(v) => {
                value_at = Some(v);
                break;
            }
        }
    }
    let Some(v) = value_at else {
        return Err(if w.cut { PassReason::TooLong } else { PassReason::NoCallId });
    };
    w.value(v)
}

enum Line {
    Other,
    End,
    CallId(usize),
    Unsure,
}

struct Window<'a> {
    p: &'a [u8],
    len: usize,
    cut: bool,
}

impl Window<'_> {
    /// Byte `i` of the window; 0 past it (the kernel's zeroed guard).
    fn b(&self, i: usize) -> u8 {
        if i < self.len {
            self.p[i]
        } else {
            0
        }
    }

    /// Bit k set iff byte `base + k` is LF, for k in 0..8.
    fn lf_mask(&self, base: usize) -> u8 {
        (0..8).fold(0, |m, k| m | (u8::from(self.b(base + k) == b'\n') << k))
    }

    fn line(&self, p: usize) -> Line {
        if p >= self.len {
            return Line::Other;
        }
        let b0 = self.b(p);
        if b0 == b'\r' || b0 == b'\n' {
            return Line::End;
        }
        let name_len = if (0..7).all(|k| self.b(p + k).eq_ignore_ascii_case(&b"call-id"[k])) {
            7
        } else if b0.eq_ignore_ascii_case(&b'i') {
            1
        } else {
            return Line::Other;
        };
        let q = p + name_len;
        let Some(j) = (0..8).find(|&j| !matches!(self.b(q + j), b' ' | b'\t')) else {
            return Line::Unsure;
        };
        if self.b(q + j) != b':' {
            return Line::Other;
        }
        Line::CallId(q + j + 1)
    }

    fn value(&self, start: usize) -> Result<(usize, usize), PassReason> {
        let limit = start + MAX_CALL_ID_SPAN;
        let mut i = start;
        for _ in 0..MAX_LEADING_LWS {
            if i >= self.len {
                break;
            }
            match self.b(i) {
                b' ' | b'\t' | b'\r' => i += 1,
                b'\n' if matches!(self.b(i + 1), b' ' | b'\t') => i += 1,
                b'\n' => return Err(PassReason::NoCallId),
                _ => break,
            }
        }
        if matches!(self.b(i), b' ' | b'\t' | b'\r' | b'\n') {
            return Err(PassReason::NoCallId);
        }
        let first = i;
        let mut end = i; // after the last non-SP/HT byte
        for _ in 0..VALUE_STEPS {
            if i >= self.len || i >= limit {
                break;
            }
            if i + 8 <= self.len && (0..8).all(|k| self.b(i + k) >= 0x21) {
                i += 8;
                end = i;
                continue;
            }
            let c = self.b(i);
            if c == b'\r' || c == b'\n' {
                return self.value_end(i, c).map(|()| (first, end));
            }
            if c != b' ' && c != b'\t' {
                end = i + 1;
            }
            i += 1;
        }
        if i >= self.len && !self.cut {
            return Err(PassReason::NoCallId);
        }
        Err(PassReason::TooLong)
    }

    fn value_end(&self, i: usize, c: u8) -> Result<(), PassReason> {
        let mut j = i + 1;
        if c == b'\r' {
            if self.b(j) != b'\n' {
                return Err(PassReason::NoCallId);
            }
            j += 1;
        }
        if j >= self.len && self.cut {
            return Err(PassReason::TooLong);
        }
        if matches!(self.b(j), b' ' | b'\t') {
            return Err(PassReason::NoCallId);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, string::String};

    use super::{find_call_id, scan};
    use crate::maps::PassReason;

    fn found(p: &[u8]) -> Option<&[u8]> {
        find_call_id(p, 2048).map(|(a, b)| &p[a..b])
    }

    #[test]
    fn long_and_compact_any_case_with_space_before_colon() {
        assert_eq!(found(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCall-ID: abc@h\r\n\r\n"), Some(&b"abc@h"[..]));
        assert_eq!(found(b"INVITE sip:a@b SIP/2.0\r\ncALL-iD \t :  abc \r\n\r\n"), Some(&b"abc"[..]));
        assert_eq!(found(b"INVITE sip:a@b SIP/2.0\r\nI:abc\r\n\r\n"), Some(&b"abc"[..]));
        assert_eq!(found(b"SIP/2.0 200 OK\ni:abc\n\n"), Some(&b"abc"[..]));
    }

    #[test]
    fn leading_folds_skipped_inner_folds_and_lone_cr_given_up() {
        assert_eq!(found(b"ABC s:x SIP/2.0\r\nCall-ID:\r\n  abc\r\n\r\n"), Some(&b"abc"[..]));
        // Trailing fold of whitespace, folded value, lone CR: the field goes
        // on past the first CR/LF, so the scan gives up.
        for p in [
            &b"ABC s:x SIP/2.0\r\nCall-ID: abc\r\n \r\nX: y\r\n\r\n"[..],
            b"ABC s:x SIP/2.0\r\nCall-ID: a\r\n b\r\n\r\n",
            b"ABC s:x SIP/2.0\r\nCall-ID: a\rb\r\n\r\n",
            b"ABC s:x SIP/2.0\r\nCall-ID: a\r\r\n\r\n",
        ] {
            assert_eq!(scan(p, 2048), Err(PassReason::NoCallId), "{:?}", String::from_utf8_lossy(p));
        }
        // More than MAX_LEADING_LWS bytes of leading whitespace.
        let p = format!("ABC s:x SIP/2.0\r\nCall-ID:{}abc\r\n\r\n", " ".repeat(17));
        assert_eq!(scan(p.as_bytes(), 2048), Err(PassReason::NoCallId));
        let p = format!("ABC s:x SIP/2.0\r\nCall-ID:{}abc\r\n\r\n", " ".repeat(16));
        assert_eq!(found(p.as_bytes()), Some(&b"abc"[..]));
    }

    #[test]
    fn not_a_call_id() {
        // Start line, fold line, other headers, after the empty line.
        assert_eq!(found(b"Call-ID: x\r\nVia: y\r\n\r\n"), None);
        assert_eq!(found(b"ABC s:x SIP/2.0\r\nVia: y\r\n Call-ID: x\r\n\r\n"), None);
        assert_eq!(found(b"ABC s:x SIP/2.0\r\nCall-IDs: x\r\nCall-I: x\r\nix: y\r\n\r\n"), None);
        assert_eq!(found(b"ABC s:x SIP/2.0\r\nVia: y\r\n\r\nCall-ID: x\r\n"), None);
        assert_eq!(found(b"ABC s:x SIP/2.0\r\nCall\rID: x\r\n\r\n"), None);
        assert_eq!(found(b"ABC s:x SIP/2.0\r\nCall-ID:  \r\n\r\n"), None);
        // 8 blanks after the name: give up, even with a later Call-ID.
        assert_eq!(found(b"ABC s:x SIP/2.0\r\nCall-ID        : x\r\ni: y\r\n\r\n"), None);
        assert_eq!(found(b"ABC s:x SIP/2.0\r\nCall-ID       : x\r\ni: y\r\n\r\n"), Some(&b"x"[..]));
        assert_eq!(found(b""), None);
        assert_eq!(found(b"\r\n\r\n"), None);
        // Leading CRLF are not skipped (a miss).
        assert_eq!(found(b"\r\n\r\nABC s:x SIP/2.0\r\ni: z\r\n\r\n"), None);
    }

    #[test]
    fn window_limits() {
        let p = b"ABC s:x SIP/2.0\r\nCall-ID: abc\r\nVia: y\r\n\r\n";
        let line_end = p.iter().position(|&b| b == b'c').unwrap() + 1;
        // The value's line end and the next byte must be inside the window.
        assert_eq!(find_call_id(p, line_end + 3), Some((line_end - 3, line_end)));
        assert_eq!(scan(p, line_end + 2), Err(PassReason::TooLong));
        assert_eq!(find_call_id(p, 10), None);
        // Not cut: the datagram end ends the field after its LF, not inside the value.
        assert_eq!(found(b"ABC s:x SIP/2.0\r\nCall-ID: abc\r\n"), Some(&b"abc"[..]));
        assert_eq!(scan(b"ABC s:x SIP/2.0\r\nCall-ID: abc", 2048), Err(PassReason::NoCallId));
    }
}
