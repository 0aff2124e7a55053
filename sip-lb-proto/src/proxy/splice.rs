//! Emitting a datagram with a few edits: copy the original bytes, and at a
//! handful of positions insert or replace something. Every change the proxy
//! makes (own Via, received/rport, Max-Forwards, Route removal, Via removal)
//! is one [`Edit`], so the original is never copied twice and nothing
//! allocates beyond `out`.

use crate::sip::text::{write_decimal, write_hex64, write_ip};
use std::net::IpAddr;

/// What to write at an edit position.
#[derive(Clone, Copy, Debug)]
pub enum Insert<'a> {
    Nothing,
    Bytes(&'a [u8]),
    /// `prefix` + 16 hex digits of `hash` + 16 placeholder digits for the
    /// MAC (patched in after emission, see [`Emitted::marks`]) + CRLF: our Via line.
    ViaLine {
        prefix: &'a [u8],
        hash: u64,
    },
    Decimal(u64),
    /// `;received=<ip>`
    Received(IpAddr),
    /// `<ip>` (replacing an existing received value)
    Ip(IpAddr),
    /// `=<port>` after a bare `rport`
    RportValue(u16),
    /// `;tag=<16 hex>`
    Tag(u64),
    /// Writes nothing; records the output position in `Emitted::marks[n]`.
    Mark(usize),
}

/// Replace `at..skip_to` with `insert` (`at == skip_to`: pure insertion).
#[derive(Clone, Copy, Debug)]
pub struct Edit<'a> {
    pub at: u32,
    pub skip_to: u32,
    pub insert: Insert<'a>,
}

impl Edit<'_> {
    fn is_insertion(&self) -> bool {
        self.at == self.skip_to
    }
}

/// Capacity of an edit list: a request needs at most 23 (see `request.rs`:
/// 3 marks, our Via, Max-Forwards, 3 Route edits, our two Record-Routes
/// and Path, and up to `via::MAX_STAMP_PARAMS` + 1 received/rport edits).
const CAP: usize = 24;

/// Output positions recorded by [`Insert::Mark`]s.
pub const MARKS: usize = 3;

/// A small fixed list of edits, applied in position order. At one position,
/// insertions come first (in push order), then the edit that removes or
/// replaces bytes from there. Edits that overlap are a bug: `emit` refuses
/// them instead of skipping one silently.
#[derive(Clone, Copy, Debug)]
pub struct Edits<'a> {
    list: [Edit<'a>; CAP],
    len: usize,
    overflow: bool,
}

/// Why `emit` refused to write a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpliceError {
    /// An edit starts inside the bytes an earlier edit removes or replaces.
    Overlap,
    /// More edits were pushed than the list holds.
    Overflow,
}

/// What `emit` learnt while writing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emitted {
    /// Output offsets of the [`Insert::Mark`]s, by mark number.
    pub marks: [usize; MARKS],
}

impl<'a> Default for Edits<'a> {
    fn default() -> Self {
        Edits { list: [Edit { at: 0, skip_to: 0, insert: Insert::Nothing }; CAP], len: 0, overflow: false }
    }
}

impl<'a> Edits<'a> {
    pub fn insert(&mut self, at: usize, insert: Insert<'a>) {
        self.replace(at, at, insert);
    }

    pub fn remove(&mut self, at: usize, to: usize) {
        self.replace(at, to, Insert::Nothing);
    }

    /// Records the output position of input position `at` as mark `n`
    /// (after whatever was inserted at `at` before this call).
    pub fn mark(&mut self, at: usize, n: usize) {
        self.insert(at, Insert::Mark(n));
    }

    pub fn replace(&mut self, at: usize, to: usize, insert: Insert<'a>) {
        let edit = Edit { at: at as u32, skip_to: to.max(at) as u32, insert };
        let Some(slot) = self.list.get_mut(self.len) else {
            self.overflow = true;
            return;
        };
        *slot = edit;
        // Stable insertion sort by (position, insertions first); tiny list.
        let key = |e: &Edit<'_>| (e.at, !e.is_insertion());
        let mut i = self.len;
        while i > 0 && key(&self.list[i - 1]) > key(&self.list[i]) {
            self.list.swap(i - 1, i);
            i -= 1;
        }
        self.len += 1;
    }

    /// Copies `buf[from..to]` into `out` with the edits inside that range
    /// applied; edits outside it are left out (a reply copies single header
    /// lines with the Via edits of the whole message). On error `out` holds
    /// a partial message that must not be sent.
    pub fn emit(&self, buf: &[u8], from: usize, to: usize, out: &mut Vec<u8>) -> Result<Emitted, SpliceError> {
        if self.overflow {
            debug_assert!(false, "edit list overflow: raise CAP");
            return Err(SpliceError::Overflow);
        }
        let to = to.min(buf.len());
        let from = from.min(to);
        let mut cur = from;
        let mut done = Emitted::default();
        for e in &self.list[..self.len] {
            let (at, skip) = (e.at as usize, e.skip_to as usize);
            if at < from || skip > to {
                continue;
            }
            if at < cur {
                debug_assert!(false, "overlapping edits at {at} (copied up to {cur}): {:?}", &self.list[..self.len]);
                return Err(SpliceError::Overlap);
            }
            out.extend_from_slice(&buf[cur..at]);
            if let Insert::Mark(n) = e.insert {
                if let Some(m) = done.marks.get_mut(n) {
                    *m = out.len();
                }
            } else {
                write_insert(out, e.insert);
            }
            cur = skip;
        }
        out.extend_from_slice(&buf[cur..to]);
        Ok(done)
    }
}

/// Length of the MAC placeholder a [`Insert::ViaLine`] writes after the hash.
pub const MAC_DIGITS: usize = 16;

fn write_insert(out: &mut Vec<u8>, insert: Insert<'_>) {
    match insert {
        Insert::Nothing => {}
        Insert::Bytes(b) => out.extend_from_slice(b),
        Insert::ViaLine { prefix, hash } => {
            out.extend_from_slice(prefix);
            write_hex64(out, hash);
            out.extend_from_slice(&[b'0'; MAC_DIGITS]);
            out.extend_from_slice(b"\r\n");
        }
        Insert::Mark(_) => {}
        Insert::Decimal(n) => write_decimal(out, n),
        Insert::Received(ip) => {
            out.extend_from_slice(b";received=");
            write_ip(out, ip);
        }
        Insert::Ip(ip) => write_ip(out, ip),
        Insert::RportValue(p) => {
            out.push(b'=');
            write_decimal(out, u64::from(p));
        }
        Insert::Tag(h) => {
            out.extend_from_slice(b";tag=");
            write_hex64(out, h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_in_position_order_and_push_order() {
        let buf = b"0123456789";
        let mut e = Edits::default();
        e.replace(7, 9, Insert::Bytes(b"X"));
        e.insert(2, Insert::Bytes(b"a"));
        e.insert(2, Insert::Bytes(b"b"));
        e.remove(4, 5);
        let mut out = Vec::new();
        e.emit(buf, 0, buf.len(), &mut out).unwrap();
        assert_eq!(out, b"01ab2356X9");
        out.clear();
        e.emit(buf, 3, 8, &mut out).unwrap();
        assert_eq!(out, b"3567");
    }

    #[test]
    fn insertions_at_a_removed_position_are_kept() {
        // The bug of a Route as the first header line: its removal and our
        // Via insertion start at the same byte.
        let buf = b"AAAABBBBCCCC";
        let mut e = Edits::default();
        e.remove(4, 8);
        e.insert(4, Insert::Bytes(b"via "));
        e.mark(4, 0);
        e.insert(4, Insert::Bytes(b"mf "));
        let mut out = Vec::new();
        let done = e.emit(buf, 0, buf.len(), &mut out).unwrap();
        assert_eq!(out, b"AAAAvia mf CCCC");
        assert_eq!(done.marks[0], 8);
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn overlapping_edits_are_refused() {
        let buf = b"abcdef";
        let mut e = Edits::default();
        e.remove(1, 4);
        e.insert(2, Insert::Bytes(b"Z"));
        assert_eq!(e.emit(buf, 0, buf.len(), &mut Vec::new()), Err(SpliceError::Overlap));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "overlapping edits")]
    fn overlapping_edits_assert_in_debug_builds() {
        let buf = b"abcdef";
        let mut e = Edits::default();
        e.remove(1, 4);
        e.insert(2, Insert::Bytes(b"Z"));
        let _ = e.emit(buf, 0, buf.len(), &mut Vec::new());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "overflow")]
    fn overflow_asserts_in_debug_builds() {
        let mut e = Edits::default();
        for i in 0..=CAP {
            e.insert(i, Insert::Nothing);
        }
        let _ = e.emit(b"x", 0, 1, &mut Vec::new());
    }
}
