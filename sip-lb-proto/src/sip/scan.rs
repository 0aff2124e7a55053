//! Byte scans 16 bytes at a time (SSE2 on x86_64, portable elsewhere):
//! the line feeds of a datagram in order, so the header block is indexed
//! with one pass over its bytes instead of one `memchr` call (and its
//! dispatch, ~40 instructions) per line; the letters/digits/`-` of header
//! names and Via tokens; a small set of bytes (the URI walk's specials).

/// Yields the positions of the `\n` bytes of `buf` from a start position
/// on, in order. Reads at most one 16-byte chunk past the last `\n` it
/// returns (never past the end of `buf`).
pub(crate) struct LineFeeds<'a> {
    buf: &'a [u8],
    /// Start of the chunk `mask` describes.
    base: usize,
    /// Bit `i` set: `buf[base + i]` is a `\n` not yet returned.
    mask: u32,
}

impl<'a> LineFeeds<'a> {
    /// The line feeds at or after `from`.
    #[inline]
    pub(crate) fn new(buf: &'a [u8], from: usize) -> LineFeeds<'a> {
        let base = from.min(buf.len());
        LineFeeds { buf, base, mask: chunk_mask(buf, base) }
    }

    /// The next line feed, or `None` when there is none left.
    #[inline]
    pub(crate) fn next_lf(&mut self) -> Option<usize> {
        let buf = self.buf;
        let mut base = self.base;
        let mut mask = self.mask;
        while mask == 0 {
            // `base` only grows by a chunk per step from at most
            // `buf.len()` (< 2^16 for a datagram, and never near
            // `usize::MAX` for any slice): no overflow.
            base += CHUNK;
            match buf.get(base..base + CHUNK) {
                Some(chunk) => mask = lf_mask(chunk.try_into().unwrap_or(&[0; CHUNK])),
                None => {
                    mask = tail_mask(buf.get(base..).unwrap_or(&[]));
                    if mask == 0 {
                        // Stay exhausted: the next call looks past the end.
                        self.base = buf.len();
                        self.mask = 0;
                        return None;
                    }
                }
            }
        }
        self.base = base;
        self.mask = mask & (mask - 1);
        Some(base + mask.trailing_zeros() as usize)
    }
}

const CHUNK: usize = 16;

/// The `\n` bits of `buf[at..at + 16]` (fewer bytes near the end).
#[inline]
fn chunk_mask(buf: &[u8], at: usize) -> u32 {
    match buf.get(at..at + CHUNK) {
        Some(chunk) => lf_mask(chunk.try_into().unwrap_or(&[0; CHUNK])),
        None => tail_mask(buf.get(at..).unwrap_or(&[])),
    }
}

/// The last bytes of a datagram, fewer than a chunk.
#[inline(never)]
fn tail_mask(rest: &[u8]) -> u32 {
    rest.iter().take(CHUNK).enumerate().fold(0, |m, (i, &b)| m | (u32::from(b == b'\n') << i))
}

/// Bit `i` set when `chunk[i]` is `\n`: SSE2 (x86_64 baseline), one
/// compare and one movemask.
#[cfg(target_arch = "x86_64")]
#[inline]
fn lf_mask(chunk: &[u8; CHUNK]) -> u32 {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    // SAFETY: `chunk` is a reference to 16 initialised bytes, exactly the
    // 16 bytes `_mm_loadu_si128` reads, and that load has no alignment
    // requirement; the intrinsics need SSE2, which every x86_64 target has
    // (it is part of the x86_64 baseline, enabled by default).
    let bits = unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
        _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8)))
    };
    (bits as u32) & 0xffff
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn lf_mask(chunk: &[u8; CHUNK]) -> u32 {
    lf_mask_swar(chunk)
}

/// Portable [`lf_mask`]: two 64-bit words, exact zero-byte test, high bits
/// gathered by a multiply.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn lf_mask_swar(chunk: &[u8; CHUNK]) -> u32 {
    fn eight(bytes: &[u8]) -> u32 {
        const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
        let mut w = [0u8; 8];
        w.copy_from_slice(bytes);
        let t = u64::from_le_bytes(w) ^ 0x0a0a_0a0a_0a0a_0a0a;
        // High bit of each byte set exactly when that byte of `t` is 0
        // (no carry between bytes: each sum stays below 0x100).
        let zero = !(((t & LO7) + LO7) | t | LO7);
        ((zero >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
    }
    let (lo, hi) = chunk.split_at(8);
    eight(lo) | (eight(hi) << 8)
}

/// Bit `i` set when `chunk[i]` is an ASCII letter, digit or `-` (what
/// nearly every header name is made of; all are token characters).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn name_mask(chunk: &[u8; CHUNK]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_sub_epi8,
    };
    // SAFETY: as in `lf_mask`: `chunk` is 16 initialised bytes, the load is
    // unaligned, and SSE2 is part of the x86_64 baseline.
    let bits = unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
        // `x <= n` unsigned is `min(x, n) == x`.
        let le = |x, n: u8| _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(n as i8)), x);
        // OR-ing 0x20 maps A-Z onto a-z and nothing else onto a-z.
        let letter = le(_mm_sub_epi8(_mm_or_si128(v, _mm_set1_epi8(0x20)), _mm_set1_epi8(b'a' as i8)), 25);
        let digit = le(_mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8)), 9);
        let dash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'-' as i8));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(letter, digit), dash))
    };
    (bits as u32) & 0xffff
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(crate) fn name_mask(chunk: &[u8; CHUNK]) -> u32 {
    name_mask_scalar(chunk)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn name_mask_scalar(chunk: &[u8; CHUNK]) -> u32 {
    chunk.iter().enumerate().fold(0, |m, (i, &b)| m | (u32::from(b.is_ascii_alphanumeric() || b == b'-') << i))
}

/// Bit `i` set when `chunk[i]` is one of `set`: SSE2, one compare per
/// byte of `set` (unrolled: `set` is a constant at every call).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn set_mask<const N: usize>(chunk: &[u8; CHUNK], set: [u8; N]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
    };
    // SAFETY: as in `lf_mask`: `chunk` is 16 initialised bytes, the load is
    // unaligned, and SSE2 is part of the x86_64 baseline.
    let bits = unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
        let mut hit = _mm_setzero_si128();
        for b in set {
            hit = _mm_or_si128(hit, _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8)));
        }
        _mm_movemask_epi8(hit)
    };
    (bits as u32) & 0xffff
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn set_mask<const N: usize>(chunk: &[u8; CHUNK], set: [u8; N]) -> u32 {
    set_mask_scalar(chunk, set)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn set_mask_scalar<const N: usize>(chunk: &[u8; CHUNK], set: [u8; N]) -> u32 {
    chunk.iter().enumerate().fold(0, |m, (i, b)| m | (u32::from(set.contains(b)) << i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &[u8], from: usize) -> Vec<usize> {
        (from..buf.len()).filter(|&i| buf[i] == b'\n').collect()
    }

    fn scanned(buf: &[u8], from: usize) -> Vec<usize> {
        let mut lf = LineFeeds::new(buf, from);
        let mut v = Vec::new();
        while let Some(i) = lf.next_lf() {
            v.push(i);
        }
        // Exhausted stays exhausted.
        assert_eq!(lf.next_lf(), None);
        v
    }

    /// Exercises the SSE2 load (the `unsafe` above) on every length and
    /// offset up to 70 bytes, and the portable version on the same chunks.
    #[test]
    fn finds_every_line_feed_in_order() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..70 {
            for round in 0..40 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Mostly LF-adjacent bytes, some high bytes.
                        [b'\n', b'\r', b'a', 0x8a, 0x0b, 0x09, 0xff, 0x00][(x >> (round % 8 + 40)) as usize % 8]
                    })
                    .collect();
                for from in 0..=len {
                    assert_eq!(scanned(&buf, from), naive(&buf, from), "{buf:?} from {from}");
                }
                for chunk in buf.windows(CHUNK) {
                    let c: &[u8; CHUNK] = chunk.try_into().unwrap();
                    let want = tail_mask(chunk);
                    assert_eq!(lf_mask(c), want);
                    assert_eq!(lf_mask_swar(c), want);
                }
            }
        }
        assert_eq!(scanned(b"", 0), Vec::<usize>::new());
        assert_eq!(scanned(b"\n", 5), Vec::<usize>::new());
    }

    /// The `unsafe` SSE2 name classes against the scalar definition, for
    /// every byte value in every lane.
    #[test]
    fn name_mask_is_letters_digits_dash() {
        for b in 0..=255u8 {
            for lane in 0..CHUNK {
                let mut chunk = [b'a'; CHUNK];
                chunk[lane] = b;
                assert_eq!(name_mask(&chunk), name_mask_scalar(&chunk), "{b} at {lane}");
                let mut chunk = [b':'; CHUNK];
                chunk[lane] = b;
                assert_eq!(name_mask(&chunk), name_mask_scalar(&chunk), "{b} at {lane}");
            }
        }
        // `Call-ID` (bits 0-6), then `:` and space, then value bytes.
        assert_eq!(name_mask(b"Call-ID: a84b4c7"), 0xfe7f);
    }

    /// The `unsafe` SSE2 set test against the scalar one, every byte value
    /// in every lane.
    #[test]
    fn set_mask_finds_the_set_bytes() {
        const SET: [u8; 5] = *b"@;?:]";
        for b in 0..=255u8 {
            for lane in 0..CHUNK {
                let mut chunk = *b"sip:a@b;c?d:e]f!";
                chunk[lane] = b;
                assert_eq!(set_mask(&chunk, SET), set_mask_scalar(&chunk, SET), "{b} at {lane}");
            }
        }
        assert_eq!(set_mask(b"sip:a@b;c?d:e]f!", SET), 0b0010_1010_1010_1000);
    }
}
