//! Finding and hashing the Call-ID in a UDP payload that the caller copied
//! into the per-CPU `SCAN_BUF` (XDP: `bpf_xdp_load_bytes`, SK_REUSEPORT:
//! `bpf_skb_load_bytes`). Shared by both programs, so both steer alike.
//!
//! Strategy (what the verifier accepts and what is cheap):
//! - the payload, at most `SCAN_WINDOW` bytes, sits in a map value; every index
//!   is masked with `SCAN_BUF_MASK`, and 16 zero bytes follow the copy so
//!   reads just past the end see no stale data;
//! - `bpf_loop` walks the window one header line per step: the line start is
//!   checked for `call-id` / `i` (any case, one 8-byte compare), optional
//!   SP/HT, then ':'; the next '\n' is found 8 bytes at a time with a SWAR
//!   zero-byte test on aligned words (no per-byte loop). The callback is
//!   verified once, so the window costs the verifier nothing extra;
//! - the value is hashed byte by byte with `sip_lb_common::CallIdHasher` in a
//!   bounded loop of `MAX_CALL_ID_SPAN` steps: leading LWS (incl. a fold) is
//!   skipped, and the hash state is committed after each non-blank byte so
//!   trailing SP/HT are not part of the result (= `call_id_hash(trim_lws(v))`).

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_loop;
use sip_lb_common::{
    maps::{PassReason, ScanBuf, MAX_CALL_ID_SPAN, SCAN_BUF_MASK as MASK, SCAN_WINDOW},
    CallIdHasher,
};

use crate::maps::SCAN_BUF;

/// Enough steps for a window of one-byte lines.
const STEPS: u32 = SCAN_WINDOW as u32 + 1;
const CONTINUE: i64 = -1;
const END_OF_HEADERS: i64 = -2;
/// "call-id" little-endian in the low 7 bytes.
const CALL_ID: u64 = u64::from_le_bytes(*b"call-id\0");
const LOWER: u64 = 0x2020_2020_2020_2020;
const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const LF: u64 = 0x0a0a_0a0a_0a0a_0a0a;

/// This CPU's scan buffer (payload bytes first, then the scan state).
#[inline(always)]
pub fn scan_buf() -> Option<*mut ScanBuf> {
    SCAN_BUF.get_ptr_mut(0)
}

#[inline(always)]
fn byte(d: *const u8, i: usize) -> u8 {
    // SAFETY: masked into the SCAN_BUF_LEN-byte map value.
    unsafe { *d.add(i & MASK) }
}

/// Aligned word at `i & !7`.
#[inline(always)]
fn word(d: *const u8, i: usize) -> u64 {
    // SAFETY: masked into the map value (+8 <= SCAN_BUF_LEN), 8-aligned
    // offset in an 8-aligned map value.
    unsafe { *(d.add(i & MASK & !7) as *const u64) }
}

/// The 8 bytes starting at any `i`, from two aligned words (little endian).
#[inline(always)]
fn bytes8(d: *const u8, i: usize) -> u64 {
    let lo = word(d, i);
    let hi = word(d, i + 8);
    let s = ((i & 7) * 8) as u32;
    if s == 0 {
        lo
    } else {
        (lo >> s) | (hi << (64 - s))
    }
}

/// 0x80 in every byte of `x` that is zero, exactly (no false positives).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    !(((x & LO7).wrapping_add(LO7)) | x | LO7)
}

/// Payload starts with an upper-case token (a method) or "SIP/".
#[inline(always)]
pub fn looks_like_sip(d: *const u8) -> bool {
    let w = word(d, 0);
    let b0 = w as u8;
    let b1 = (w >> 8) as u8;
    let b2 = (w >> 16) as u8;
    b0.is_ascii_uppercase() && b1.is_ascii_uppercase() && b2.is_ascii_uppercase()
}

/// Is the line starting at `p` a Call-ID header? Returns the index after its
/// ':', `CONTINUE`, or `END_OF_HEADERS` for the blank line.
#[inline(always)]
fn check_line(d: *const u8, p: usize, len: usize) -> i64 {
    if p >= len {
        return CONTINUE;
    }
    let b0 = byte(d, p);
    if b0 == b'\r' || b0 == b'\n' {
        return END_OF_HEADERS;
    }
    let w = bytes8(d, p) | LOWER;
    let mut q = if w & 0x00ff_ffff_ffff_ffff == CALL_ID {
        p + 7
    } else if w as u8 == b'i' {
        p + 1
    } else {
        return CONTINUE;
    };
    // Optional SP/HT before the colon.
    for _ in 0..8 {
        let c = byte(d, q);
        if c == b':' {
            return (q + 1) as i64;
        }
        if c != b' ' && c != b'\t' {
            return CONTINUE;
        }
        q += 1;
    }
    CONTINUE
}

/// Byte index (0..8) of the lowest flagged byte of a non-zero `zero_bytes` mask.
#[inline(always)]
fn first_flagged(mut m: u64) -> usize {
    let mut j = 0;
    if m & 0xffff_ffff == 0 {
        j += 4;
        m >>= 32;
    }
    if m & 0xffff == 0 {
        j += 2;
        m >>= 16;
    }
    if m & 0xff == 0 {
        j += 1;
    }
    j
}

/// Words searched for the next '\n' per `bpf_loop` step.
const WORDS_PER_STEP: usize = 16;

/// `bpf_loop` body: check the line at `pos` (if it starts one), then move
/// `pos` past the next '\n' (searching up to WORDS_PER_STEP words, 8 bytes
/// at a time). One call site of `check_line` keeps the verifier's work small.
#[inline(never)]
extern "C" fn scan_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(b) = scan_buf() else {
        return 1;
    };
    // SAFETY: this CPU's map value; nothing else runs on it meanwhile.
    let sc = unsafe { &mut (*b).state };
    let d = b as *const u8;
    let len = sc.len as usize;
    let pos = sc.pos as usize;
    if pos >= len {
        return 1;
    }
    if sc.line_start != 0 {
        let r = check_line(d, pos, len);
        if r == END_OF_HEADERS {
            sc.end = 1;
            return 1;
        }
        if r != CONTINUE {
            sc.colon = r as u64;
            return 1;
        }
    }
    let mut at = pos & !7;
    // Ignore newlines before `pos` in the first word.
    let mut m = zero_bytes(word(d, at) ^ LF) & (!0u64 << ((pos & 7) * 8));
    for _ in 0..WORDS_PER_STEP {
        if m != 0 {
            sc.pos = (at + first_flagged(m) + 1) as u64;
            sc.line_start = 1;
            return 0;
        }
        at += 8;
        if at >= len {
            return 1;
        }
        m = zero_bytes(word(d, at) ^ LF);
    }
    sc.pos = at as u64;
    sc.line_start = 0;
    0
}

/// Writes the zero guard after the `len` payload bytes in `d`.
#[inline(always)]
pub fn guard(d: *mut u8, len: usize) {
    for i in 0..16 {
        // SAFETY: masked into the map value.
        unsafe { *d.add((len + i) & MASK) = 0 };
    }
}

/// Hash of the Call-ID value in the `len` bytes at `d` (already guarded).
/// `cut`: the datagram is longer than the window.
#[inline(always)]
pub fn find_and_hash(b: *mut ScanBuf, len: usize, cut: bool) -> Result<u64, PassReason> {
    // SAFETY: this CPU's map value.
    unsafe {
        (*b).state.len = len as u64;
        (*b).state.pos = 0;
        (*b).state.line_start = 0; // the start line is not a header
        (*b).state.colon = 0;
        (*b).state.end = 0;
    }
    // SAFETY: static callback, no ctx (the state is in the map), flags 0.
    unsafe { bpf_loop(STEPS, scan_step as *const () as *mut c_void, core::ptr::null_mut(), 0) };
    // SAFETY: as above.
    // Volatile: the callback wrote them behind LLVM's back.
    let (colon, end) = unsafe {
        (
            core::ptr::read_volatile(&(*b).state.colon),
            core::ptr::read_volatile(&(*b).state.end),
        )
    };
    if colon == 0 {
        return Err(if end == 0 && cut { PassReason::TooLong } else { PassReason::NoCallId });
    }
    hash_value(b as *const u8, colon as usize, len, cut)
}

/// Hashes the value from `start` to the end of its line, trimmed of LWS.
#[inline(never)]
fn hash_value(d: *const u8, start: usize, len: usize, cut: bool) -> Result<u64, PassReason> {
    let mut h = CallIdHasher::new();
    let mut committed = h;
    let mut started = false;
    let mut i = start;
    for _ in 0..MAX_CALL_ID_SPAN {
        if i >= len {
            break;
        }
        let b = byte(d, i);
        if !started {
            if b == b' ' || b == b'\t' || b == b'\r' {
                i += 1;
                continue;
            }
            if b == b'\n' {
                let next = byte(d, i + 1);
                if next == b' ' || next == b'\t' {
                    i += 1;
                    continue;
                }
                return Err(PassReason::NoCallId);
            }
            started = true;
        }
        if b == b'\r' || b == b'\n' {
            return Ok(committed.finish());
        }
        h.write_u8(b);
        if b != b' ' && b != b'\t' {
            committed = h;
        }
        i += 1;
    }
    if i >= len && !cut {
        // Datagram ends inside the value: not a well-formed header block.
        return Err(PassReason::NoCallId);
    }
    Err(PassReason::TooLong)
}
