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

    /// Literal hashes, worked out independently of this code (FNV-1a 64 then
    /// xxh64's avalanche): two sip-lb versions in one farm, and the XDP
    /// program and userspace, must agree on every Call-ID. A changed offset,
    /// prime, mixing constant or trimming rule fails here. Lengths 0, 1, 8,
    /// 9, 16, 17, 31 and 46 (across any word or stripe boundary a future
    /// implementation might have).
    const PINNED: [(&[u8], u64); 8] = [
        (b"", 0x4fa8_d3e0_a94e_aa96),
        (b"a", 0x5605_a118_43b2_c2ad),
        (b"abcdefgh", 0xb729_4d90_7521_35ec),
        (b"abcdefghi", 0xfd80_a5aa_198f_8202),
        (b"0123456789abcdef", 0xc1ba_9e98_d21a_edb9),
        (b"0123456789abcdef0", 0xaccd_9f91_eedd_f853),
        (b"a84b4c76e66710@pc33.atlanta.com", 0xc538_ca3e_5797_53dc),
        (b"f81d4fae-7dec-11d0-a765-00a0c91e6bf6@192.0.2.4", 0x8c45_86e4_490a_fdc5),
    ];

    #[test]
    fn known_values_are_stable_across_releases() {
        for (id, want) in PINNED {
            let name = core::str::from_utf8(id).unwrap();
            assert_eq!(call_id_hash(id), want, "{name:?}");
            let mut h = CallIdHasher::new();
            id.iter().for_each(|&b| h.write_u8(b));
            assert_eq!(h.finish(), want, "{name:?} streamed");
        }
        // Surrounding LWS is not part of the value.
        assert_eq!(call_id_hash(b" \t a84b4c76e66710@pc33.atlanta.com\r\n"), 0xc538_ca3e_5797_53dc);
        assert_eq!(call_id_hash(b" \r\n\t"), 0x4fa8_d3e0_a94e_aa96);
        // The raw state an XDP program carries across bpf_loop callbacks.
        assert_eq!(CallIdHasher::new().state(), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn worker_choices_are_pinned() {
        // (hash of PINNED[i], workers 2, 3, 4, 7) -> worker: XDP steering and
        // userspace must agree, release after release.
        let want: [[u32; 4]; 8] = [
            [0, 0, 1, 2],
            [0, 1, 1, 2],
            [1, 2, 2, 5],
            [1, 2, 3, 6],
            [1, 2, 3, 5],
            [1, 2, 2, 4],
            [1, 2, 3, 5],
            [1, 1, 2, 3],
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
