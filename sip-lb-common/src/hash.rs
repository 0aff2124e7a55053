//! The Call-ID hash. Both the XDP program and userspace call exactly this
//! code, so a Call-ID lands on the same worker (XDP steering) whose backend
//! choice (userspace) uses the same 64-bit value.
//!
//! The function ("word hash"), over the trimmed value `v` of `n` bytes:
//! - split `v` into 8-byte chunks from its first byte, the last one shorter
//!   if `n % 8 != 0`; each chunk is read little-endian, zero-padded to a u64;
//! - `h = SEED`; per chunk `w`: `h = (h ^ w) * P; h ^= h >> 32` (wrapping);
//! - result: xxh64's avalanche of `h ^ n`.
//!
//! One multiply per 8 bytes instead of FNV-1a's one per byte: the XDP
//! program finds the value's end first (no hashing in that loop), then hashes
//! the known-length range with a loop of `n.div_ceil(8)` steps. The xor-shift
//! after each multiply carries high bits down, so differences in the top bits
//! of one chunk are not cancelled by the next; `n` in the final mix keeps
//! `ab` and `ab\0` (same zero-padded chunk) apart; the avalanche fixes the
//! weak low bits for `worker_for_hash` and the backend ring.

/// Initial state (FNV-1a's offset basis, kept from the previous hash).
const SEED: u64 = 0xcbf2_9ce4_8422_2325;
/// Per-chunk multiplier: xxh64's PRIME64_1 (odd, so each step is a bijection).
const P: u64 = 0x9E37_79B1_85EB_CA87;

/// Streaming form for callers that see the value 8 bytes at a time (XDP).
/// Feed every chunk with [`write_chunk`](Self::write_chunk), then
/// [`finish`](Self::finish) with the value's length.
#[derive(Clone, Copy, Debug)]
pub struct CallIdHasher {
    state: u64,
}

impl Default for CallIdHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl CallIdHasher {
    #[inline(always)]
    pub const fn new() -> Self {
        Self { state: SEED }
    }

    /// One chunk: 8 value bytes little-endian, or, for the last chunk of a
    /// value whose length is not a multiple of 8, its `n % 8` bytes with the
    /// high bytes zero (see [`chunk_mask`]).
    #[inline(always)]
    pub fn write_chunk(&mut self, w: u64) {
        let h = (self.state ^ w).wrapping_mul(P);
        self.state = h ^ (h >> 32);
    }

    /// The hash of the `len`-byte value whose chunks were written.
    #[inline(always)]
    pub const fn finish(self, len: usize) -> u64 {
        avalanche(self.state ^ len as u64)
    }
}

/// Mask keeping the low `rem` bytes of a chunk (`rem >= 8`: all of them).
#[inline(always)]
pub const fn chunk_mask(rem: usize) -> u64 {
    if rem >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * rem as u32)) - 1
    }
}

/// xxh64's final mix.
#[inline(always)]
const fn avalanche(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= h >> 29;
    h = h.wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 32;
    h
}

/// Linear whitespace around a header value: SP, HTAB and the CR/LF of a fold.
#[inline(always)]
pub const fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The Call-ID value without surrounding linear whitespace.
pub fn trim_lws(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if !is_lws(*first) {
            break;
        }
        v = rest;
    }
    while let [rest @ .., last] = v {
        if !is_lws(*last) {
            break;
        }
        v = rest;
    }
    v
}

/// Hash of a Call-ID value. The value is trimmed first, so `Call-ID:  x ` and
/// `i:x` hash alike; otherwise it is byte-exact (RFC 3261 compares Call-IDs
/// case-sensitively).
pub fn call_id_hash(value: &[u8]) -> u64 {
    let v = trim_lws(value);
    let mut h = CallIdHasher::new();
    for chunk in v.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h.write_chunk(u64::from_le_bytes(w));
    }
    h.finish(v.len())
}

/// Which of `workers` workers owns a hash. Multiply-shift instead of `%`:
/// no division in the XDP program and an even split for any worker count.
#[inline(always)]
pub const fn worker_for_hash(hash: u64, workers: u32) -> u32 {
    (((hash >> 32) * workers as u64) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_makes_forms_equal() {
        assert_eq!(call_id_hash(b"abc@host"), call_id_hash(b" \tabc@host \r\n"));
        assert_eq!(call_id_hash(b"abc@host"), call_id_hash(b"\r\n abc@host"));
        assert_ne!(call_id_hash(b"abc@host"), call_id_hash(b"ABC@host"));
    }

    /// The XDP program's way: 8-byte loads from any offset, the last chunk
    /// masked with `chunk_mask`.
    fn streamed(v: &[u8]) -> u64 {
        let mut h = CallIdHasher::new();
        let mut k = 0;
        while k < v.len() {
            let mut w = [0u8; 8];
            let take = (v.len() - k).min(8);
            w[..take].copy_from_slice(&v[k..k + take]);
            // Bytes past the value (here: 0xff) must be masked off.
            w[take..].fill(0xff);
            h.write_chunk(u64::from_le_bytes(w) & chunk_mask(v.len() - k));
            k += 8;
        }
        h.finish(v.len())
    }

    #[test]
    fn streaming_equals_one_shot() {
        let id = b"f81d4fae-7dec-11d0-a765-00a0c91e6bf6@192.0.2.4;and-more-bytes";
        for n in 0..=id.len() {
            assert_eq!(streamed(&id[..n]), call_id_hash(&id[..n]), "{n}");
        }
        assert_eq!(CallIdHasher::new().finish(0), call_id_hash(b""));
        assert_eq!(chunk_mask(0), 0);
        assert_eq!(chunk_mask(3), 0xff_ffff);
        assert_eq!(chunk_mask(8), u64::MAX);
    }

    #[test]
    fn length_and_padding_are_distinct() {
        assert_ne!(call_id_hash(b"ab"), call_id_hash(b"ab\0"));
        assert_ne!(call_id_hash(b"abcdefgh"), call_id_hash(b"abcdefgh\0"));
        assert_ne!(call_id_hash(b"abcdefgh\x80abcdefgh"), call_id_hash(b"abcdefghabcdefgh\x80"));
    }

    /// Literal hashes, worked out independently of this code (a 15-line
    /// Python model of the word hash described at the top of this file):
    /// two sip-lb versions in one farm, and the XDP program and userspace,
    /// must agree on every Call-ID. A changed seed, multiplier, mixing
    /// constant, chunking or trimming rule fails here. Lengths 0, 1, 8, 9,
    /// 16, 17, 31 and 46 (across the chunk boundaries).
    const PINNED: [(&[u8], u64); 8] = [
        (b"", 0x4fa8_d3e0_a94e_aa96),
        (b"a", 0x9f35_3908_b6b7_f280),
        (b"abcdefgh", 0x862d_19d5_bc06_12fe),
        (b"abcdefghi", 0xd4f0_43b0_4f4e_be80),
        (b"0123456789abcdef", 0x8c75_4165_33b2_16fa),
        (b"0123456789abcdef0", 0x03bc_4200_3ab0_58aa),
        (b"a84b4c76e66710@pc33.atlanta.com", 0x7c3c_98b3_4a15_9653),
        (b"f81d4fae-7dec-11d0-a765-00a0c91e6bf6@192.0.2.4", 0x6065_edc0_5518_c3ce),
    ];

    #[test]
    fn known_values_are_stable_across_releases() {
        for (id, want) in PINNED {
            let name = core::str::from_utf8(id).unwrap();
            assert_eq!(call_id_hash(id), want, "{name:?}");
            assert_eq!(streamed(id), want, "{name:?} streamed");
        }
        // Surrounding LWS is not part of the value.
        assert_eq!(call_id_hash(b" \t a84b4c76e66710@pc33.atlanta.com\r\n"), 0x7c3c_98b3_4a15_9653);
        assert_eq!(call_id_hash(b" \r\n\t"), 0x4fa8_d3e0_a94e_aa96);
    }

    #[test]
    fn worker_choices_are_pinned() {
        // (hash of PINNED[i], workers 2, 3, 4, 7) -> worker: XDP steering and
        // userspace must agree, release after release (same Python model).
        let want: [[u32; 4]; 8] = [
            [0, 0, 1, 2],
            [1, 1, 2, 4],
            [1, 1, 2, 3],
            [1, 2, 3, 5],
            [1, 1, 2, 3],
            [0, 0, 0, 0],
            [0, 1, 1, 3],
            [0, 1, 1, 2],
        ];
        for ((id, hash), want) in PINNED.iter().zip(want) {
            let got = [2, 3, 4, 7].map(|w| worker_for_hash(*hash, w));
            assert_eq!(got, want, "{:?}", core::str::from_utf8(id).unwrap());
        }
        assert_eq!(worker_for_hash(u64::MAX, 7), 6);
        assert_eq!(worker_for_hash(0, 7), 0);
    }

    #[test]
    fn workers_split_evenly() {
        for workers in 1..=8u32 {
            let mut counts = [0u32; 8];
            let n = 80_000u32;
            for i in 0..n {
                let mut buf = [0u8; 24];
                let id = fmt_id(i, &mut buf);
                let w = worker_for_hash(call_id_hash(id), workers);
                assert!(w < workers);
                counts[w as usize] += 1;
            }
            let even = n / workers;
            for &c in &counts[..workers as usize] {
                assert!(c.abs_diff(even) * 20 < even, "{workers} workers: {counts:?}");
            }
        }
    }

    fn fmt_id(mut i: u32, buf: &mut [u8; 24]) -> &[u8] {
        let mut n = 0;
        loop {
            buf[n] = b'0' + (i % 10) as u8;
            n += 1;
            i /= 10;
            if i == 0 {
                break;
            }
        }
        buf[n..n + 5].copy_from_slice(b"@host");
        &buf[..n + 5]
    }
}
