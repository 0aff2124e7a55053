//! The Call-ID scan as the XDP program must do it, written as a plain
//! function: the specification the eBPF code is held to, and the model the
//! `callid_diff` fuzz target compares with the userspace parser
//! (`sip_lb::sip::Message`). Where both find a Call-ID they must find the
//! same bytes, so a Call-ID steers to the worker whose hash picks the backend.
//!
//! Rules, in the order the scan applies them (all over `payload[..max_scan]`,
//! the *window*; `cut` means the payload is longer than the window):
//! 1. Leading CR/LF bytes are skipped (RFC 3261 §7.5); the line after them is
//!    the start line and is never a header.
//! 2. Every following line (ending at LF, CR before it optional) is a header
//!    line, until the first empty line (`\r\n` or `\n`): the header block
//!    ends there and nothing after it is looked at.
//! 3. A header line is the Call-ID when it *starts* with `Call-ID` or `i`, in
//!    any case, then any number of SP/HT, then `:`. Exact letters: `call-id`
//!    compared with ASCII case folding, not `| 0x20` (which would let a CR
//!    stand for the `-`). A line starting with SP/HT is a fold, not a header.
//!    The first Call-ID line wins.
//! 4. The value runs from after the `:` to the end of the header field: the
//!    end of its line, plus every following fold line (a line starting with
//!    SP or HT). A lone CR inside a line is part of the value (only LF ends a
//!    line). The value is then trimmed of LWS (SP, HT, CR, LF) at both ends;
//!    inner bytes, folds included, stay (= `hash::trim_lws`).
//! 5. Not found (`None`) when: no Call-ID line before the empty line; the
//!    trimmed value is empty; or the field's end is not seen inside the
//!    window. The field ends at an LF whose next byte is not SP/HT, or at the
//!    end of the payload when the payload is not `cut` (a field cut by the
//!    window might continue in a fold we cannot see).
//!
//! The returned `(start, end)` are byte offsets of the trimmed value in
//! `payload`; [`crate::call_id_hash`] of that slice is the steering hash.
//! Never panics, no allocation, `O(max_scan)`.

use crate::hash::is_lws;

/// `(start, end)` of the trimmed Call-ID value in `payload`, looking at no
/// more than the first `max_scan` bytes. See the module documentation.
pub fn find_call_id(payload: &[u8], max_scan: usize) -> Option<(usize, usize)> {
    let cut = payload.len() > max_scan;
    let w = &payload[..payload.len().min(max_scan)];
    // Rule 1: skip leading CR/LF, then the start line.
    let mut pos = 0;
    while pos < w.len() && (w[pos] == b'\r' || w[pos] == b'\n') {
        pos += 1;
    }
    pos = next_line(w, pos)?;
    // Rule 2/3: header lines up to the empty line.
    loop {
        if pos >= w.len() {
            return None;
        }
        let b0 = w[pos];
        if b0 == b'\n' || (b0 == b'\r' && w.get(pos + 1) == Some(&b'\n')) {
            return None; // end of the header block
        }
        if let Some(colon) = call_id_colon(w, pos) {
            return value(w, colon + 1, cut);
        }
        pos = next_line(w, pos)?;
    }
}

/// Index just past the next LF at or after `pos`.
fn next_line(w: &[u8], mut pos: usize) -> Option<usize> {
    while pos < w.len() {
        if w[pos] == b'\n' {
            return Some(pos + 1);
        }
        pos += 1;
    }
    None
}

/// If the line at `pos` is a Call-ID header, the index of its colon.
fn call_id_colon(w: &[u8], pos: usize) -> Option<usize> {
    const LONG: &[u8] = b"call-id";
    let rest = &w[pos..];
    let name_len = if rest.len() >= LONG.len() && rest[..LONG.len()].eq_ignore_ascii_case(LONG) {
        LONG.len()
    } else if rest.first().is_some_and(|b| b.eq_ignore_ascii_case(&b'i')) {
        1
    } else {
        return None;
    };
    let mut q = pos + name_len;
    while q < w.len() && (w[q] == b' ' || w[q] == b'\t') {
        q += 1;
    }
    (w.get(q) == Some(&b':')).then_some(q)
}

/// Rule 4/5: the trimmed value of the field whose value starts at `start`.
fn value(w: &[u8], start: usize, cut: bool) -> Option<(usize, usize)> {
    let mut i = start;
    let end = loop {
        if i >= w.len() {
            if cut {
                return None;
            }
            break w.len();
        }
        if w[i] == b'\n' {
            match w.get(i + 1) {
                Some(b' ' | b'\t') => {}
                Some(_) => break i,
                None if cut => return None,
                None => break i,
            }
        }
        i += 1;
    };
    let mut a = start;
    let mut b = end;
    while a < b && is_lws(w[a]) {
        a += 1;
    }
    while b > a && is_lws(w[b - 1]) {
        b -= 1;
    }
    (a < b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::find_call_id;

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
    fn folds_are_part_of_the_field_and_trimmed_at_the_ends() {
        assert_eq!(found(b"A s:x SIP/2.0\r\nCall-ID:\r\n  abc\r\n\r\n"), Some(&b"abc"[..]));
        assert_eq!(found(b"A s:x SIP/2.0\r\nCall-ID: abc\r\n \r\nX: y\r\n\r\n"), Some(&b"abc"[..]));
        assert_eq!(found(b"A s:x SIP/2.0\r\nCall-ID: a\r\n b\r\n\r\n"), Some(&b"a\r\n b"[..]));
        assert_eq!(found(b"A s:x SIP/2.0\r\nCall-ID: a\rb\r\n\r\n"), Some(&b"a\rb"[..]));
    }

    #[test]
    fn not_a_call_id() {
        // Start line, fold line, other headers, after the empty line.
        assert_eq!(found(b"Call-ID: x\r\nVia: y\r\n\r\n"), None);
        assert_eq!(found(b"A s:x SIP/2.0\r\nVia: y\r\n Call-ID: x\r\n\r\n"), None);
        assert_eq!(found(b"A s:x SIP/2.0\r\nCall-IDs: x\r\nCall-I: x\r\nix: y\r\n\r\n"), None);
        assert_eq!(found(b"A s:x SIP/2.0\r\nVia: y\r\n\r\nCall-ID: x\r\n"), None);
        assert_eq!(found(b"A s:x SIP/2.0\r\nCall\rID: x\r\n\r\n"), None);
        assert_eq!(found(b"A s:x SIP/2.0\r\nCall-ID:  \r\n\r\n"), None);
        assert_eq!(found(b""), None);
        assert_eq!(found(b"\r\n\r\n"), None);
    }

    #[test]
    fn leading_crlf_is_skipped() {
        assert_eq!(found(b"\r\n\r\nA s:x SIP/2.0\r\ni: z\r\n\r\n"), Some(&b"z"[..]));
    }

    #[test]
    fn window_limits() {
        let p = b"A s:x SIP/2.0\r\nCall-ID: abc\r\nVia: y\r\n\r\n";
        let line_end = p.iter().position(|&b| b == b'c').unwrap() + 1;
        // The value's line end and the next byte must be inside the window.
        assert_eq!(find_call_id(p, line_end + 3), Some((line_end - 3, line_end)));
        assert_eq!(find_call_id(p, line_end + 2), None);
        assert_eq!(find_call_id(p, 10), None);
        // Not cut: the datagram end ends the value.
        assert_eq!(found(b"A s:x SIP/2.0\r\nCall-ID: abc"), Some(&b"abc"[..]));
        assert_eq!(find_call_id(b"A s:x SIP/2.0\r\nCall-ID: abcdef", 25), None);
    }
}
