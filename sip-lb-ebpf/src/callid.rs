//! Finding and hashing the Call-ID in a UDP payload that the caller copied
//! into the per-CPU `SCAN_BUF` (XDP: `bpf_xdp_load_bytes`, SK_REUSEPORT:
//! `bpf_skb_load_bytes`). Shared by both programs, so both steer alike.
//!
//! Strategy (what the verifier accepts, and what is cheap here):
//! - the payload, at most `SCAN_WINDOW` bytes, sits in a map value; every
//!   index is masked with `SCAN_BUF_MASK`, and zero bytes follow the copy so
//!   reads just past the end see no stale data;
//! - header search: one flat bounded loop; an iteration either loads the next
//!   32 bytes (4 aligned words) and finds '\n' bytes with a SWAR zero-byte
//!   test (no per-byte loop), or takes the next '\n' of the current word and
//!   checks the line after it: `call-id` / `i` in any case (one 8-byte compare),
//!   optional SP/HT, ':'; a blank line ends the header block;
//! - value: a second bounded loop finds its end, 8 bytes per iteration while
//!   none is a control/blank byte, else one; leading LWS (incl. a fold) is
//!   skipped, and the end after the last non-blank byte is kept; a third loop
//!   then hashes that range with `sip_lb_common::CallIdHasher`, one 8-byte
//!   chunk (one multiply) per iteration, the last chunk masked, so the result
//!   is `call_id_hash(trim_lws(v))`;
//!   the value is taken only if the header field ends at its first CR/LF
//!   (no fold or lone CR after it), else the scan gives up: wherever XDP and
//!   userspace both find a Call-ID, they hash the same bytes. The exact rules
//!   (and loop bounds) are `sip_lb_common::callid_scan`, the model that
//!   `sip-lb/tests/xdp_differential.rs` holds this code to;
//! - indices, the start position, `len`, `cut` and the value start are
//!   "laundered" through the map value (see `Buf`), so the verifier never
//!   tracks positions precisely and each loop costs it ~iterations x body;
//! - no function calls in the loops: `bpf_loop` callbacks cost a call and a
//!   return per step, and returns are expensive under SRSO/retpoline
//!   mitigations (measured: ~2x slower on the dev machine).

use core::ptr::{read_volatile, write_volatile};

use sip_lb_common::{
    callid_scan::{MAX_LEADING_LWS, SEARCH_STEPS, VALUE_STEPS},
    chunk_mask,
    maps::{PassReason, ScanBuf, MAX_CALL_ID_SPAN, SCAN_BUF_MASK as MASK},
    CallIdHasher,
};

use crate::maps::SCAN_BUF;

/// Chunks of the longest value: it ends before `start + MAX_CALL_ID_SPAN + 7`.
const HASH_CHUNKS: usize = (MAX_CALL_ID_SPAN + 7).div_ceil(8);

// Loop bounds (`SEARCH_STEPS`, `VALUE_STEPS`, `MAX_LEADING_LWS`) live in
// `sip_lb_common::callid_scan`, next to the model that must match this code.

/// "call-id" little-endian in the low 7 bytes.
const CALL_ID: u64 = u64::from_le_bytes(*b"call-id\0");
/// Case folding for the letters of "call-id" only: byte 4 (the '-') is not
/// OR-ed with 0x20, since `'\r' | 0x20 == '-'` would let `Call\rID:` match.
/// For the letters c, a, l, i, d, `b | 0x20 == letter` exactly when `b` is
/// that letter in either case.
const NAME_FOLD: u64 = 0x0020_2000_2020_2020;
const LOW7: u64 = 0x00ff_ffff_ffff_ffff;
const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const LF: u64 = 0x0a0a_0a0a_0a0a_0a0a;
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// This CPU's scan buffer (payload bytes first, then the loop state).
#[inline(always)]
pub fn scan_buf() -> Option<*mut ScanBuf> {
    SCAN_BUF.get_ptr_mut(0)
}

/// Reads from the scan buffer at indices "laundered" through the map value:
/// the index is stored and loaded back (volatile), so the verifier sees an
/// unknown scalar, masks it into bounds, and never tracks the loop position
/// precisely (which would make every iteration a new state). The loop
/// variables themselves stay in registers; the store/load is only on the
/// address path, not on the loop-carried chain.
struct Buf {
    d: *const u8,
    slot: *mut u64,
}

impl Buf {
    #[inline(always)]
    fn new(b: *mut ScanBuf) -> Buf {
        // SAFETY: this CPU's map value.
        Buf { d: b as *const u8, slot: unsafe { &raw mut (*b).state.idx } }
    }

    /// `i`, unknown to the verifier (and to LLVM).
    #[inline(always)]
    fn launder(&self, i: usize) -> usize {
        // SAFETY: this CPU's map value, only we touch it.
        unsafe {
            write_volatile(self.slot, i as u64);
            read_volatile(self.slot) as usize
        }
    }

    #[inline(always)]
    fn index(&self, i: usize) -> usize {
        self.launder(i) & MASK
    }

    /// Byte at `i` without laundering: for reads outside the loops (exit
    /// paths), where precise tracking costs the verifier nothing.
    #[inline(always)]
    fn byte_direct(&self, i: usize) -> u8 {
        // SAFETY: masked, < 4096 <= SCAN_BUF_LEN.
        unsafe { *self.d.add(i & MASK) }
    }

    #[inline(always)]
    fn byte(&self, i: usize) -> u8 {
        // SAFETY: index() < 4096 <= SCAN_BUF_LEN.
        unsafe { *self.d.add(self.index(i)) }
    }

    /// Aligned word at `i & !7`.
    #[inline(always)]
    fn word(&self, i: usize) -> u64 {
        // SAFETY: masked, 8-aligned, + 8 <= SCAN_BUF_LEN.
        unsafe { *(self.d.add(self.index(i) & !7) as *const u64) }
    }

    /// The four aligned words after the one at `at & !7`.
    #[inline(always)]
    fn words4_after(&self, at: usize) -> [u64; 4] {
        // SAFETY: masked, 8-aligned, + 40 <= SCAN_BUF_LEN.
        unsafe {
            let p = self.d.add(self.index(at) & !7) as *const u64;
            [*p.add(1), *p.add(2), *p.add(3), *p.add(4)]
        }
    }

    /// The 8 bytes starting at any `i`, from two aligned words (little endian).
    #[inline(always)]
    fn bytes8(&self, i: usize) -> u64 {
        let k = self.index(i);
        // SAFETY: masked, 8-aligned, + 16 <= SCAN_BUF_LEN.
        let (lo, hi) = unsafe {
            let p = self.d.add(k & !7) as *const u64;
            (*p, *p.add(1))
        };
        let s = ((k & 7) * 8) as u32;
        if s == 0 {
            lo
        } else {
            (lo >> s) | (hi << (64 - s))
        }
    }
}

/// 0x80 in every byte of `x` that is zero, exactly (no false positives).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    !(((x & LO7).wrapping_add(LO7)) | x | LO7)
}

/// Non-zero iff some byte of `x` is below `n` (n <= 0x80). May flag extra
/// bytes above a true one, so only a pre-test.
#[inline(always)]
fn has_less(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * n as u64) & !x & HIGHS
}

/// Byte index of the lowest flagged byte of a non-zero `zero_bytes` mask,
/// without branches (each branch would be a verifier path).
#[inline(always)]
fn first_flagged(m: u64) -> usize {
    let low = m & m.wrapping_neg(); // 0x80 << 8j
    ((low >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

/// Payload starts with three upper-case letters (a method, or "SIP/").
#[inline(always)]
pub fn looks_like_sip(d: *const u8) -> bool {
    // SAFETY: offset 0 of the map value.
    let w = unsafe { *(d as *const u64) };
    let b0 = w as u8;
    let b1 = (w >> 8) as u8;
    let b2 = (w >> 16) as u8;
    b0.is_ascii_uppercase() && b1.is_ascii_uppercase() && b2.is_ascii_uppercase()
}

/// Zeroes the bytes from `len` to past `len + 32` in `d`, keeping those
/// before `len` (five aligned word stores).
#[inline(always)]
pub fn guard(d: *mut u8, len: usize) {
    let at = len & MASK & !7;
    let keep_bits = ((len & 7) * 8) as u32;
    // SAFETY: masked, 8-aligned.
    let w = unsafe { *(d.add(at) as *const u64) };
    let kept = if keep_bits == 0 { 0 } else { w & ((1u64 << keep_bits) - 1) };
    // SAFETY: aligned, masked into the map value (at + 40 <= SCAN_BUF_LEN).
    // Volatile: otherwise LLVM merges the stores into a call to a byte-loop
    // memset.
    unsafe {
        let p = d.add(at) as *mut u64;
        write_volatile(p, kept);
        write_volatile(p.add(1), 0);
        write_volatile(p.add(2), 0);
        write_volatile(p.add(3), 0);
        write_volatile(p.add(4), 0);
    }
}

/// What the line starting at `p` is.
enum Line {
    Other,
    /// The blank line ending the header block.
    End,
    /// A Call-ID header; its value starts at the index.
    CallId(usize),
    /// `Call-ID`/`i` followed by 8+ SP/HT: userspace may take it for the
    /// Call-ID (any number of SP/HT before ':'), we cannot see the ':', so
    /// give up rather than match a later line.
    Unsure,
}

/// SP or HT bytes of `w`, as 0x80 flags.
#[inline(always)]
fn blanks(w: u64) -> u64 {
    zero_bytes(w ^ (ONES * b' ' as u64)) | zero_bytes(w ^ (ONES * b'\t' as u64))
}

/// Branch-light on purpose: this runs once per header line inside a loop the
/// verifier walks ~800 times, so each extra path costs it ~800 x its length.
#[inline(always)]
fn check_line(buf: &Buf, p: usize, len: usize) -> Line {
    if p >= len {
        return Line::Other;
    }
    let w = buf.bytes8(p);
    let b0 = w as u8;
    if b0 == b'\r' || b0 == b'\n' {
        return Line::End;
    }
    let name_len = if (w | NAME_FOLD) & LOW7 == CALL_ID {
        7
    } else if (w as u8) | 0x20 == b'i' {
        1
    } else {
        return Line::Other;
    };
    // Up to 7 SP/HT, then ':' (found 8 bytes at a time).
    let q = p + name_len;
    let after = buf.bytes8(q);
    let not_blank = !blanks(after) & HIGHS;
    if not_blank == 0 {
        return Line::Unsure;
    }
    let j = first_flagged(not_blank);
    if (after >> (8 * j as u32)) as u8 != b':' {
        return Line::Other;
    }
    Line::CallId(q + j + 1)
}

/// The Call-ID hash of a payload just copied into this CPU's scan buffer
/// (`loaded`: the copy helper's return value). The one tail shared by the
/// XDP and reuseport programs, which differ only in how they copy.
#[inline(always)]
pub fn hash_copied(loaded: i64, b: *mut ScanBuf, len: usize, cut: bool) -> Result<u64, PassReason> {
    if loaded != 0 {
        return Err(PassReason::Truncated);
    }
    let d = b as *mut u8;
    if !looks_like_sip(d) {
        return Err(PassReason::NotSip);
    }
    guard(d, len);
    find_and_hash(b, len, cut)
}

/// Hash of the Call-ID value in the `len` payload bytes of `b` (copied and
/// guarded). `cut`: the datagram is longer than the window.
#[inline(always)]
pub fn find_and_hash(b: *mut ScanBuf, len: usize, cut: bool) -> Result<u64, PassReason> {
    let buf = Buf::new(b);
    // Offset 0 (the start line) is not a header: only lines after a '\n'.
    // Laundered: a constant start would let the verifier decide the loop's
    // bound checks, mark `at` precise and walk every position separately.
    let mut at = buf.launder(0);
    // Laundered too: compared with a `len` of known range, `at` would get
    // refined bounds, some checks would become decidable and precise.
    let len = buf.launder(len);
    // And `cut`: a known true/false would split every state below in two.
    let cut = buf.launder(cut as usize) != 0;
    let mut m = zero_bytes(buf.word(0) ^ LF);
    let mut value_at = None;
    for _ in 0..SEARCH_STEPS {
        if m == 0 {
            // Next 32 bytes, 4 aligned words; the guard zeroes what lies
            // past `len`, so no false '\n' there.
            if at + 8 >= len {
                break;
            }
            let [x0, x1, x2, x3] = buf.words4_after(at).map(|w| w ^ LF);
            let (h0, h1, h2, h3) = (has_less(x0, 1), has_less(x1, 1), has_less(x2, 1), has_less(x3, 1));
            (at, m) = if h0 | h1 | h2 | h3 == 0 {
                (at + 32, 0)
            } else if h0 != 0 {
                (at + 8, zero_bytes(x0))
            } else if h1 != 0 {
                (at + 16, zero_bytes(x1))
            } else if h2 != 0 {
                (at + 24, zero_bytes(x2))
            } else {
                (at + 32, zero_bytes(x3))
            };
            continue;
        }
        let p = at + first_flagged(m) + 1;
        m &= m - 1;
        match check_line(&buf, p, len) {
            Line::Other => {}
            Line::End | Line::Unsure => return Err(PassReason::NoCallId),
            Line::CallId(v) => {
                value_at = Some(v);
                break;
            }
        }
    }
    let Some(v) = value_at else {
        return Err(if cut { PassReason::TooLong } else { PassReason::NoCallId });
    };
    // Fresh unknowns: every search iteration that finds the header then
    // reaches the value loop in the same verifier state, so the verifier
    // walks that loop once instead of once per search iteration.
    hash_value(&buf, buf.launder(v), buf.launder(len), cut)
}

/// Hashes the value starting at `start` up to the end of its line.
#[inline(always)]
fn hash_value(buf: &Buf, start: usize, len: usize, cut: bool) -> Result<u64, PassReason> {
    let limit = start + MAX_CALL_ID_SPAN;
    let mut i = start;
    // Leading LWS, including folds (CRLF followed by SP/HT).
    for _ in 0..MAX_LEADING_LWS {
        if i >= len {
            break;
        }
        let c = buf.byte(i);
        if c == b' ' || c == b'\t' || c == b'\r' {
            i += 1;
            continue;
        }
        if c == b'\n' {
            let next = buf.byte(i + 1);
            if next == b' ' || next == b'\t' {
                i += 1;
                continue;
            }
            return Err(PassReason::NoCallId); // empty value
        }
        break;
    }
    // Still in LWS after MAX_LEADING_LWS bytes: give up (hashing from here
    // would include whitespace userspace trims). At `len` the guard byte is 0.
    let c = buf.byte_direct(i);
    if c == b' ' || c == b'\t' || c == b'\r' || c == b'\n' {
        return Err(PassReason::NoCallId);
    }
    // Fresh unknown again, so the value loop is walked once by the verifier.
    let mut i = buf.launder(i);
    let first = i;
    let mut end = i; // after the last non-SP/HT byte
    for _ in 0..VALUE_STEPS {
        if i >= len || i >= limit {
            break;
        }
        if i + 8 <= len {
            let w = buf.bytes8(i);
            if has_less(w, 0x21) == 0 {
                i += 8;
                end = i;
                continue;
            }
        }
        let c = buf.byte(i);
        if c == b'\r' || c == b'\n' {
            value_end(buf, i, c, len, cut)?;
            // Fresh unknowns: the hash loop is walked once by the verifier.
            return Ok(hash_range(buf, buf.launder(first), buf.launder(end - first)));
        }
        if c != b' ' && c != b'\t' {
            end = i + 1;
        }
        i += 1;
    }
    if i >= len && !cut {
        // Datagram ends inside the value: not a well-formed header block.
        return Err(PassReason::NoCallId);
    }
    Err(PassReason::TooLong)
}

/// `call_id_hash` of the `n` bytes at `start` (`n <= MAX_CALL_ID_SPAN + 7`):
/// 8-byte chunks from `start`, the last one masked (bytes past it may be
/// whitespace, CR/LF or the zeroed guard).
#[inline(always)]
fn hash_range(buf: &Buf, start: usize, n: usize) -> u64 {
    let mut h = CallIdHasher::new();
    let mut k = 0;
    for _ in 0..HASH_CHUNKS {
        if k >= n {
            break;
        }
        h.write_chunk(buf.bytes8(start + k) & chunk_mask(n - k));
        k += 8;
    }
    h.finish(n)
}

/// At the first CR/LF (`c`, at `i`) after the value's first byte: `Ok` only
/// if the header field ends right here, i.e. `\r\n` or `\n` followed by a
/// byte that is not SP/HT. Otherwise the field goes on (a lone CR, or a fold)
/// and userspace's value would be longer than ours (`a\rb`, `a\r\n b`): we
/// give up (`NoCallId`; such a value is not a valid `callid` anyway, RFC 3261
/// §25.1) rather than steer by a different hash. `\r\r\n` and trailing
/// whitespace folds are given up too (conservative: a miss is allowed).
#[inline(always)]
fn value_end(buf: &Buf, i: usize, c: u8, len: usize, cut: bool) -> Result<(), PassReason> {
    let mut j = i + 1;
    if c == b'\r' {
        if buf.byte_direct(j) != b'\n' {
            return Err(PassReason::NoCallId); // lone CR (or CR at the end)
        }
        j += 1;
    }
    if j >= len && cut {
        return Err(PassReason::TooLong); // a fold may follow past the window
    }
    // At `len` (not cut) the guard byte is 0: the datagram ends the field.
    let n = buf.byte_direct(j);
    if n == b' ' || n == b'\t' {
        return Err(PassReason::NoCallId); // folded value
    }
    Ok(())
}
