//! Byte-level helpers shared by the views and the forwarding step: linear
//! whitespace, decimal and hex numbers, IP literals. No allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// SP or HTAB.
#[inline]
pub fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Linear whitespace including the CR/LF of a folded line.
#[inline]
pub fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 `token` characters, as a table: header names and methods are
/// scanned byte by byte on the hot path.
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~');
        i += 1;
    }
    t
};

#[inline]
pub fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// `s` equals `lower` ignoring ASCII case, where `lower` is a constant
/// with its letters in lower case: its non-letters must match exactly and
/// each letter in either case. The same answer as `eq_ignore_ascii_case`;
/// with a constant `lower` it compiles to a few word compares instead of a
/// byte loop that lower-cases both sides.
#[inline(always)]
pub(crate) fn eq_fold<const N: usize>(s: &[u8], lower: &[u8; N]) -> bool {
    let Some(c) = s.first_chunk::<N>() else { return false };
    let mut same = s.len() == N;
    let mut i = 0;
    while i < N {
        // OR-ing 0x20 folds A-Z onto a-z and maps nothing else onto a
        // lower-case letter.
        let fold = if lower[i].is_ascii_lowercase() { 0x20 } else { 0 };
        same &= (c[i] | fold) == lower[i];
        i += 1;
    }
    same
}

/// First index in `start..end` that is not LWS.
#[inline]
pub fn skip_lws(buf: &[u8], mut i: usize, end: usize) -> usize {
    while i < end && buf.get(i).is_some_and(|&b| is_lws(b)) {
        i += 1;
    }
    i
}

/// `start..end` without LWS at either end.
#[inline]
pub fn trim(buf: &[u8], start: usize, mut end: usize) -> (usize, usize) {
    let start = skip_lws(buf, start, end);
    while end > start && buf.get(end - 1).is_some_and(|&b| is_lws(b)) {
        end -= 1;
    }
    (start, end)
}

/// The slice without LWS at either end.
#[inline]
pub fn trim_slice(s: &[u8]) -> &[u8] {
    let (a, b) = trim(s, 0, s.len());
    s.get(a..b).unwrap_or(&[])
}

/// Decimal digits only (no sign, no spaces), at most `max`.
pub fn parse_decimal(s: &[u8], max: u64) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    if max < 1 << 59 {
        // `v <= max` after every digit, so `10 * v + 9 < 2^63`: no checks
        // for overflow needed (every caller's limit is this small).
        for &b in s {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v = v * 10 + u64::from(d);
            if v > max {
                return None;
            }
        }
        return Some(v);
    }
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if v > max {
            return None;
        }
    }
    Some(v)
}

/// Appends `n` in decimal (itoa without the crate).
pub fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Writes `n` (< 256) in decimal at `tmp[at..]`, returns the new end.
#[inline]
fn put_octet(tmp: &mut [u8; 15], at: usize, n: u8) -> usize {
    let (h, t, o) = (n / 100, n / 10 % 10, n % 10);
    let mut i = at;
    if h > 0 {
        tmp[i] = b'0' + h;
        i += 1;
    }
    if n >= 10 {
        tmp[i] = b'0' + t;
        i += 1;
    }
    tmp[i] = b'0' + o;
    i + 1
}

/// Appends `h` as 16 lowercase hex digits.
pub fn write_hex64(out: &mut Vec<u8>, h: u64) {
    out.extend_from_slice(&hex64(h));
}

/// `h` as 16 lowercase hex digits (SWAR: each nibble spread into a byte,
/// then mapped to ASCII eight at a time; no table loop).
pub fn hex64(h: u64) -> [u8; 16] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    /// Nibbles of `x` into the bytes of a word, most significant nibble in
    /// the most significant byte, each mapped to `0-9a-f`.
    fn eight(x: u32) -> u64 {
        let x = u64::from(x);
        let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
        let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
        let x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
        // Bytes of 10 and more get `'a' - '0' - 10` on top of `'0'`.
        let letters = ((x + 6 * ONES) >> 4) & ONES;
        x + 0x30 * ONES + letters * 39
    }
    let mut tmp = [0u8; 16];
    tmp[..8].copy_from_slice(&eight((h >> 32) as u32).to_be_bytes());
    tmp[8..].copy_from_slice(&eight(h as u32).to_be_bytes());
    tmp
}

/// An IP literal host as it appears in a Via or URI: `192.0.2.1`, `[2001:db8::1]`
/// or a bare IPv6 (as in `received=`). Domain names give `None`.
pub fn parse_ip(host: &[u8]) -> Option<IpAddr> {
    let inner = match host {
        [b'[', inner @ .., b']'] => inner,
        _ => host,
    };
    // Every IPv6 literal has a colon: without one, only the dotted quad
    // can match, and that is read here instead of by std's parser (which
    // wants a `&str` first). Same rules as `Ipv4Addr::from_str`.
    if inner.iter().all(|&b| b != b':') {
        return parse_ipv4(inner).map(IpAddr::V4);
    }
    let s = std::str::from_utf8(inner).ok()?;
    if let Ok(v4) = s.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// A dotted quad as `Ipv4Addr::from_str` reads it: four decimal octets of
/// one to three digits, no leading zero unless the octet is `0`, each at
/// most 255, nothing else.
fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, o) in octets.iter_mut().enumerate() {
        if n > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v: u32 = 0;
        while let Some(d) = s.get(i).map(|b| b.wrapping_sub(b'0')).filter(|&d| d <= 9) {
            if i - start == 3 || (i > start && v == 0) {
                // A fourth digit, or a digit after a leading zero.
                return None;
            }
            v = v * 10 + u32::from(d);
            i += 1;
        }
        if i == start || v > 255 {
            return None;
        }
        *o = v as u8;
    }
    (i == s.len()).then_some(Ipv4Addr::from(octets))
}

/// Appends an IP without brackets (the form of `received=`, RFC 5118 §4.5).
pub fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // At most 15 bytes: built on the stack, appended once.
            let [a, b, c, d] = v4.octets();
            let mut tmp = [0u8; 15];
            let mut i = put_octet(&mut tmp, 0, a);
            for o in [b, c, d] {
                tmp[i] = b'.';
                i = put_octet(&mut tmp, i + 1, o);
            }
            out.extend_from_slice(&tmp[..i]);
        }
        // Rare path; io::Write on a Vec only grows `out`, no other allocation.
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `host:port` with IPv6 in brackets (a Via sent-by).
pub fn write_host_port(out: &mut Vec<u8>, ip: IpAddr, port: u16) {
    if ip.is_ipv6() {
        out.push(b'[');
        write_ip(out, ip);
        out.push(b']');
    } else {
        write_ip(out, ip);
    }
    out.push(b':');
    write_decimal(out, u64::from(port));
}

/// Same address family-independent meaning (an IPv4-mapped IPv6 source from a
/// dual-stack socket equals its IPv4 form).
#[inline]
pub fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_round_trip_and_limits() {
        let mut v = Vec::new();
        write_decimal(&mut v, 0);
        v.push(b' ');
        write_decimal(&mut v, 18_446_744_073_709_551_615);
        assert_eq!(v, b"0 18446744073709551615");
        assert_eq!(parse_decimal(b"0068", 255), Some(68));
        assert_eq!(parse_decimal(b"256", 255), None);
        assert_eq!(parse_decimal(b"-1", 255), None);
        assert_eq!(parse_decimal(b"", 255), None);
        assert_eq!(parse_decimal(b"36893488147419103232", u64::MAX), None);
        // Both loops, at and around their limits.
        assert_eq!(parse_decimal(b"576460752303423487", (1 << 59) - 1), Some((1 << 59) - 1));
        assert_eq!(parse_decimal(b"576460752303423488", (1 << 59) - 1), None);
        assert_eq!(parse_decimal(b"99999999999999999999999", (1 << 59) - 1), None);
        assert_eq!(parse_decimal(b"18446744073709551615", u64::MAX), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616", u64::MAX), None);
        assert_eq!(parse_decimal(b"4294967295", u64::from(u32::MAX)), Some(u64::from(u32::MAX)));
        assert_eq!(parse_decimal(b"4294967296", u64::from(u32::MAX)), None);
        for bad in [&b"1/"[..], b"1:", b" 1", b"1 ", b"+1", b"\x801"] {
            assert_eq!(parse_decimal(bad, 255), None);
            assert_eq!(parse_decimal(bad, u64::MAX), None);
        }
    }

    #[test]
    fn hex_and_ip() {
        let mut v = Vec::new();
        write_hex64(&mut v, 0x0123_4567_89ab_cdef);
        assert_eq!(v, b"0123456789abcdef");
        assert_eq!(parse_ip(b"[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip(b"192.0.2.1"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(parse_ip(b"example.com"), None);
        let mut v = Vec::new();
        write_host_port(&mut v, "2001:db8::1".parse().unwrap(), 5060);
        assert_eq!(v, b"[2001:db8::1]:5060");
    }

    #[test]
    fn hex_and_ipv4_match_std_formatting() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            x = x.rotate_left(7).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (x >> 3);
            assert_eq!(hex64(x), format!("{x:016x}").as_bytes());
            let ip = Ipv4Addr::from(x as u32);
            let mut v = Vec::new();
            write_ip(&mut v, IpAddr::V4(ip));
            assert_eq!(v, ip.to_string().as_bytes());
        }
        for h in [0, u64::MAX, 0x0a0b_0c0d_0e0f_1090] {
            assert_eq!(hex64(h), format!("{h:016x}").as_bytes());
        }
        for ip in ["0.0.0.0", "255.255.255.255", "10.9.100.99", "1.10.100.200"] {
            let mut v = Vec::new();
            write_ip(&mut v, ip.parse().unwrap());
            assert_eq!(v, ip.as_bytes());
        }
    }

    #[test]
    fn eq_fold_is_eq_ignore_ascii_case() {
        fn check<const N: usize>(lower: &[u8; N]) {
            let mut s = lower.to_vec();
            for i in 0..N {
                for b in 0..=255u8 {
                    s[i] = b;
                    assert_eq!(eq_fold(&s, lower), s.eq_ignore_ascii_case(lower), "{s:?}");
                    assert!(!eq_fold(&s[..N - 1], lower) && !eq_fold(&[&s[..], b"x"].concat(), lower));
                }
                s[i] = lower[i];
            }
        }
        check(b"sip/2.0");
        check(b"branch");
        check(b"sips");
        check(b"rport");
        check(b"received");
    }

    #[test]
    fn trims_folds() {
        assert_eq!(trim_slice(b" \r\n\tabc \r\n"), b"abc");
        assert_eq!(trim_slice(b"   "), b"");
    }

    /// `parse_ip` as it was (std's parsers for every host): the reference
    /// of the dotted-quad reader.
    fn parse_ip_std(host: &[u8]) -> Option<IpAddr> {
        let inner = match host {
            [b'[', inner @ .., b']'] => inner,
            _ => host,
        };
        let s = std::str::from_utf8(inner).ok()?;
        if let Ok(v4) = s.parse::<Ipv4Addr>() {
            return Some(IpAddr::V4(v4));
        }
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }

    #[test]
    fn parse_ip_matches_std() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        // Mostly digits and dots (the dotted-quad reader), some colons and
        // hex (std's IPv6 path), brackets, a byte that is not UTF-8.
        const ALPHABET: &[u8] = b"0123456789.....12525::af[]x\xff";
        for n in 0..400_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 20) as usize;
            let mut y = x;
            let s: Vec<u8> = (0..len)
                .map(|_| {
                    y = y.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(u64::from(n));
                    ALPHABET[(y >> 58) as usize % ALPHABET.len()]
                })
                .collect();
            assert_eq!(parse_ip(&s), parse_ip_std(&s), "{:?}", String::from_utf8_lossy(&s));
        }
        for v4 in 0..=u32::from(u16::MAX) {
            let ip = Ipv4Addr::from(v4.wrapping_mul(0x9e37_79b9));
            let s = ip.to_string();
            assert_eq!(parse_ip(s.as_bytes()), Some(IpAddr::V4(ip)));
        }
        for s in [
            &b"0.0.0.0"[..],
            b"255.255.255.255",
            b"256.1.1.1",
            b"01.1.1.1",
            b"1.1.1.00",
            b"1.1.1.1.",
            b".1.1.1",
            b"1..1.1",
            b"1.1.1",
            b"1.1.1.1234",
            b"0001.1.1.1",
            b"1.1.1.+1",
            b"",
            b"[1.2.3.4]",
            b"[::ffff:1.2.3.4]",
            b"::1",
        ] {
            assert_eq!(parse_ip(s), parse_ip_std(s), "{}", String::from_utf8_lossy(s));
        }
    }
}
