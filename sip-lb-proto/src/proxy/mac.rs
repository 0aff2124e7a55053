//! The keyed MAC in our Via branch: it binds the branch to the next hop a
//! response will be relayed to (the client's Via as we forwarded it) and to
//! the Call-ID, so nobody without the key can make us relay a response
//! anywhere (a forged `SIP/2.0 200` naming a victim in its second Via).
//!
//! SipHash-2-4 with a 128-bit key: a PRF made for short inputs, ~50 ns for a
//! Via line. The key comes from the `[security]` secret (SHA-256 of it), so
//! every node sharing the secret accepts the others' branches; a previous
//! key stays accepted during rotation.

use sha2::{Digest, Sha256};
use std::fmt;

/// One 128-bit SipHash key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; 16]);

impl Key {
    /// The key for a configured secret (any length; config asks for >= 16 bytes).
    pub fn from_secret(secret: &[u8]) -> Key {
        let digest = Sha256::new().chain_update(b"sip-lb branch key v1\0").chain_update(secret).finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&digest[..16]);
        Key(k)
    }

    /// A key from 16 bytes (the control plane's random per-process key
    /// when no secret is configured: the core itself draws no randomness).
    pub fn from_bytes(bytes: [u8; 16]) -> Key {
        Key(bytes)
    }

    /// A short public name for the key (logs, config digest): not the key.
    pub fn id(&self) -> String {
        let d = Sha256::new().chain_update(b"sip-lb key id\0").chain_update(self.0).finalize();
        d[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// MAC of one branch: our transaction hash, the next Via value as
    /// forwarded, the Call-ID. Lengths are mixed in so fields cannot slide.
    ///
    /// The input is the byte stream `txn` (8 bytes LE), `len(next_via)` (4
    /// bytes LE), `next_via`, `len(call_id)` (4 bytes LE), `call_id`: what
    /// `siphasher`'s `write_u64`/`write_u32`/`write` feed, hashed here word
    /// by word without its byte buffer (tests check it against `siphasher`).
    pub fn mac(&self, txn: u64, next_via: &[u8], call_id: &[u8]) -> u64 {
        let mut s = Sip24::new(&self.0);
        s.word(txn);
        let mut tail = Tail { word: u64::from(next_via.len() as u32), len: 4 };
        tail.absorb(&mut s, next_via);
        tail.absorb(&mut s, &(call_id.len() as u32).to_le_bytes());
        tail.absorb(&mut s, call_id);
        let total = 16 + next_via.len() + call_id.len();
        s.finish(tail.word | ((total as u64) << 56))
    }
}

/// SipHash-2-4 state (Aumasson & Bernstein), fed whole 64-bit LE words.
struct Sip24 {
    v: [u64; 4],
}

impl Sip24 {
    fn new(key: &[u8; 16]) -> Sip24 {
        let (mut k0, mut k1) = ([0u8; 8], [0u8; 8]);
        k0.copy_from_slice(&key[..8]);
        k1.copy_from_slice(&key[8..]);
        let (k0, k1) = (u64::from_le_bytes(k0), u64::from_le_bytes(k1));
        Sip24 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        let [mut v0, mut v1, mut v2, mut v3] = self.v;
        v0 = v0.wrapping_add(v1);
        v1 = v1.rotate_left(13) ^ v0;
        v0 = v0.rotate_left(32);
        v2 = v2.wrapping_add(v3);
        v3 = v3.rotate_left(16) ^ v2;
        v0 = v0.wrapping_add(v3);
        v3 = v3.rotate_left(21) ^ v0;
        v2 = v2.wrapping_add(v1);
        v1 = v1.rotate_left(17) ^ v2;
        v2 = v2.rotate_left(32);
        self.v = [v0, v1, v2, v3];
    }

    #[inline(always)]
    fn word(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.round();
        self.v[0] ^= m;
    }

    /// `last`: the final partial word with the length byte on top.
    #[inline(always)]
    fn finish(mut self, last: u64) -> u64 {
        self.word(last);
        self.v[2] ^= 0xff;
        for _ in 0..4 {
            self.round();
        }
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

/// The bytes of the stream not yet in a whole word (`len` < 8, LE order).
struct Tail {
    word: u64,
    len: u32,
}

impl Tail {
    #[inline(always)]
    fn absorb(&mut self, s: &mut Sip24, mut bytes: &[u8]) {
        if self.len > 0 {
            let need = (8 - self.len) as usize;
            let take = need.min(bytes.len());
            let (head, rest) = bytes.split_at(take);
            self.word |= le_partial(head) << (8 * self.len);
            self.len += take as u32;
            bytes = rest;
            if self.len < 8 {
                return;
            }
            s.word(self.word);
            self.word = 0;
            self.len = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            s.word(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        self.word = le_partial(rest);
        self.len = rest.len() as u32;
    }
}

/// Up to 7 bytes as the low bytes of a LE word: two overlapping loads (or
/// three single bytes), no `memcpy` call for the variable length.
#[inline(always)]
fn le_partial(b: &[u8]) -> u64 {
    let n = b.len();
    debug_assert!(n < 8);
    match n {
        0 => 0,
        1..=3 => u64::from(b[0]) | u64::from(b[n / 2]) << (8 * (n / 2)) | u64::from(b[n - 1]) << (8 * (n - 1)),
        _ => {
            let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let hi = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
            u64::from(lo) | u64::from(hi) << (8 * (n - 4))
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

/// The current key, which signs, and the previous one, still accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys {
    pub current: Key,
    pub previous: Option<Key>,
}

impl Keys {
    pub fn new(current: Key, previous: Option<Key>) -> Keys {
        Keys { current, previous }
    }

    /// Whether `mac` was made by the current or the previous key.
    pub fn verify(&self, mac: u64, txn: u64, next_via: &[u8], call_id: &[u8]) -> bool {
        self.current.mac(txn, next_via, call_id) == mac
            || self.previous.is_some_and(|k| k.mac(txn, next_via, call_id) == mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_derives_a_stable_key_and_each_field_counts() {
        let k = Key::from_secret(b"0123456789abcdef");
        assert_eq!(k, Key::from_secret(b"0123456789abcdef"));
        assert_ne!(k, Key::from_secret(b"0123456789abcdeg"));
        let m = k.mac(7, b"SIP/2.0/UDP a;branch=z9hG4bKx", b"c@x");
        assert_ne!(m, k.mac(8, b"SIP/2.0/UDP a;branch=z9hG4bKx", b"c@x"));
        assert_ne!(m, k.mac(7, b"SIP/2.0/UDP a;branch=z9hG4bKy", b"c@x"));
        assert_ne!(m, k.mac(7, b"SIP/2.0/UDP a;branch=z9hG4bKx", b"c@y"));
        // Field boundaries are part of the input.
        assert_ne!(k.mac(7, b"ab", b"c"), k.mac(7, b"a", b"bc"));
        assert_ne!(m, Key::from_bytes([7; 16]).mac(7, b"SIP/2.0/UDP a;branch=z9hG4bKx", b"c@x"));
        assert_eq!(k.id().len(), 8);
    }

    /// The reference: what `mac` computed before it hashed word by word.
    fn mac_siphasher(key: &Key, txn: u64, next_via: &[u8], call_id: &[u8]) -> u64 {
        use std::hash::Hasher as _;
        let mut h = siphasher::sip::SipHasher24::new_with_key(&key.0);
        h.write_u64(txn);
        h.write_u32(next_via.len() as u32);
        h.write(next_via);
        h.write_u32(call_id.len() as u32);
        h.write(call_id);
        h.finish()
    }

    #[test]
    fn mac_is_bit_identical_to_siphasher() {
        let mut x: u64 = 0x243f_6a88_85a3_08d3;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut via = Vec::new();
        let mut cid = Vec::new();
        // Every length pair up to 40 (all tail offsets), then random ones.
        for i in 0..20_000u32 {
            let (lv, lc) = if i < 41 * 41 {
                ((i / 41) as usize, (i % 41) as usize)
            } else {
                ((next() % 300) as usize, (next() % 100) as usize)
            };
            via.clear();
            cid.clear();
            via.extend((0..lv).map(|_| next() as u8));
            cid.extend((0..lc).map(|_| next() as u8));
            let mut kb = [0u8; 16];
            kb[..8].copy_from_slice(&next().to_le_bytes());
            kb[8..].copy_from_slice(&next().to_le_bytes());
            let key = Key::from_bytes(kb);
            let txn = next();
            assert_eq!(key.mac(txn, &via, &cid), mac_siphasher(&key, txn, &via, &cid), "{lv} {lc}");
        }
    }

    #[test]
    fn previous_key_is_accepted_during_rotation() {
        let old = Key::from_secret(b"old secret, 16+ bytes");
        let new = Key::from_secret(b"new secret, 16+ bytes");
        let mac = old.mac(1, b"v", b"c");
        assert!(Keys::new(new, Some(old)).verify(mac, 1, b"v", b"c"));
        assert!(!Keys::new(new, None).verify(mac, 1, b"v", b"c"));
        assert!(Keys::new(old, None).verify(mac, 1, b"v", b"c"));
    }
}
