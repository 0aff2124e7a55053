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
    /// `prefix` + 16 hex digits of `hash` + CRLF: our Via line.
    ViaLine { prefix: &'a [u8], hash: u64 },
    Decimal(u64),
    /// `;received=<ip>`
    Received(IpAddr),
    /// `<ip>` (replacing an existing received value)
    Ip(IpAddr),
    /// `=<port>` after an empty `rport`
    RportValue(u16),
    /// `;tag=<16 hex>`
    Tag(u64),
}

/// Replace `at..skip_to` with `insert` (`at == skip_to`: pure insertion).
#[derive(Clone, Copy, Debug)]
pub struct Edit<'a> {
    pub at: u32,
    pub skip_to: u32,
    pub insert: Insert<'a>,
}

/// Capacity of an edit list: a request needs at most 8 (see `request.rs`).
const CAP: usize = 10;

/// A small fixed list of edits, applied in position order. Edits pushed at
/// the same position are written in push order.
#[derive(Clone, Copy, Debug)]
pub struct Edits<'a> {
    list: [Edit<'a>; CAP],
    len: usize,
}

impl<'a> Default for Edits<'a> {
    fn default() -> Self {
        Edits { list: [Edit { at: 0, skip_to: 0, insert: Insert::Nothing }; CAP], len: 0 }
    }
}

impl<'a> Edits<'a> {
    pub fn insert(&mut self, at: usize, insert: Insert<'a>) {
        self.replace(at, at, insert);
    }

    pub fn remove(&mut self, at: usize, to: usize) {
        self.replace(at, to, Insert::Nothing);
    }

    pub fn replace(&mut self, at: usize, to: usize, insert: Insert<'a>) {
        let edit = Edit { at: at as u32, skip_to: to.max(at) as u32, insert };
        // Stable insertion sort by position; the list is tiny.
        if let Some(slot) = self.list.get_mut(self.len) {
            *slot = edit;
            let mut i = self.len;
            while i > 0 && self.list[i - 1].at > self.list[i].at {
                self.list.swap(i - 1, i);
                i -= 1;
            }
            self.len += 1;
        }
        // Full: unreachable with CAP above the callers' maximum; dropping
        // the edit is preferred to a panic on the hot path.
    }

    /// Copies `buf[from..to]` into `out` with the edits inside that range
    /// applied (an edit straddling the range end is left out). Overlapping
    /// edits are skipped rather than corrupting output.
    pub fn emit(&self, buf: &[u8], from: usize, to: usize, out: &mut Vec<u8>) {
        let to = to.min(buf.len());
        let mut cur = from.min(to);
        for e in &self.list[..self.len] {
            let (at, skip) = (e.at as usize, e.skip_to as usize);
            if at < cur || at < from || skip > to {
                continue;
            }
            out.extend_from_slice(&buf[cur..at]);
            write_insert(out, e.insert);
            cur = skip;
        }
        out.extend_from_slice(&buf[cur..to]);
    }
}

fn write_insert(out: &mut Vec<u8>, insert: Insert<'_>) {
    match insert {
        Insert::Nothing => {}
        Insert::Bytes(b) => out.extend_from_slice(b),
        Insert::ViaLine { prefix, hash } => {
            out.extend_from_slice(prefix);
            write_hex64(out, hash);
            out.extend_from_slice(b"\r\n");
        }
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
        e.emit(buf, 0, buf.len(), &mut out);
        assert_eq!(out, b"01ab2356X9");
        out.clear();
        e.emit(buf, 3, 8, &mut out);
        assert_eq!(out, b"3567");
    }

    #[test]
    fn overlapping_edit_is_skipped() {
        let buf = b"abcdef";
        let mut e = Edits::default();
        e.remove(1, 4);
        e.insert(2, Insert::Bytes(b"Z"));
        let mut out = Vec::new();
        e.emit(buf, 0, buf.len(), &mut out);
        assert_eq!(out, b"aef");
    }
}
