//! `;name[=value]` parameter lists of header values: the `tag` of To/From
//! (after the name-addr or addr-spec, RFC 3261 §20.10) and URI parameters
//! such as `lr`.

use super::span::Span;
use super::text::{is_lws, trim};

/// One parameter: name and optional value, LWS-trimmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: Span,
    pub value: Option<Span>,
}

/// Iterates `;`-separated params in `start..end`; `start` is just past the
/// first `;` or the start of the list. Quote aware.
pub struct Params<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

pub fn params(buf: &[u8], start: usize, end: usize) -> Params<'_> {
    Params { buf, pos: start, end: end.min(buf.len()) }
}

impl Iterator for Params<'_> {
    type Item = Param;

    fn next(&mut self) -> Option<Param> {
        while self.pos < self.end {
            let start = self.pos;
            let mut quoted = false;
            let mut eq = None;
            let mut i = start;
            while i < self.end {
                match self.buf.get(i) {
                    Some(b'\\') if quoted => i += 1,
                    Some(b'"') => quoted = !quoted,
                    Some(b'=') if !quoted && eq.is_none() => eq = Some(i),
                    Some(b';') if !quoted => break,
                    _ => {}
                }
                i += 1;
            }
            let stop = i.min(self.end);
            self.pos = stop + 1;
            let (n0, n1) = trim(self.buf, start, eq.unwrap_or(stop));
            if n0 == n1 {
                continue;
            }
            let value = eq.map(|e| {
                let (v0, v1) = trim(self.buf, e + 1, stop);
                Span::new(v0, v1)
            });
            return Some(Param { name: Span::new(n0, n1), value });
        }
        None
    }
}

/// Where the header params of a To/From/Route/Contact value begin (index of
/// the first `;` after the address), or `end` if none. With `<...>` they start
/// after `>`; without, the first `;` ends the addr-spec (§20.10).
pub fn header_params_start(buf: &[u8], start: usize, end: usize) -> usize {
    let mut quoted = false;
    let mut i = start;
    let mut after_angle = None;
    while i < end {
        match buf.get(i) {
            Some(b'\\') if quoted => i += 1,
            Some(b'"') => quoted = !quoted,
            Some(b'<') if !quoted => {
                let close = buf.get(i..end).and_then(|s| memchr::memchr(b'>', s));
                match close {
                    Some(c) => {
                        after_angle = Some(i + c + 1);
                        break;
                    }
                    None => return end,
                }
            }
            _ => {}
        }
        i += 1;
    }
    let from = after_angle.unwrap_or(start);
    let rest = buf.get(from..end).unwrap_or(&[]);
    match memchr::memchr(b';', rest) {
        Some(s) => from + s,
        None => end,
    }
}

/// The value of the header param `name` (e.g. `tag`) of a name-addr value.
/// `Some(empty span)` if present without a value.
pub fn header_param(buf: &[u8], value: Span, name: &[u8]) -> Option<Span> {
    let (s, e) = (value.start(), value.end());
    param_at(buf, header_params_start(buf, s, e), e, name)
}

/// [`header_param`] when [`header_params_start`] is known (`at`, the index
/// of the `;` or `end`).
pub fn param_at(buf: &[u8], at: usize, end: usize, name: &[u8]) -> Option<Span> {
    let end = end.min(buf.len());
    // Fast path: the first param is `;name=` exactly (the From tag nearly
    // always is) and its value has no quote: then it is what `params`
    // would return first, the value running to the next `;`.
    let n0 = at + 1;
    let eq = n0 + name.len();
    if at < end
        && !name.is_empty()
        && name.iter().all(u8::is_ascii_alphabetic)
        && buf.get(at) == Some(&b';')
        && buf.get(n0..eq).is_some_and(|n| n.eq_ignore_ascii_case(name))
        && buf.get(eq) == Some(&b'=')
        && eq < end
    {
        let value = buf.get(eq + 1..end).unwrap_or(&[]);
        let stop = value.iter().position(|&b| b == b';' || b == b'"').unwrap_or(value.len());
        if value.get(stop) != Some(&b'"') {
            let (v0, v1) = trim(buf, eq + 1, eq + 1 + stop);
            return Some(Span::new(v0, v1));
        }
    }
    params(buf, at + 1, end)
        .find(|p| p.name.of(buf).eq_ignore_ascii_case(name))
        .map(|p| p.value.unwrap_or(Span::new(p.name.end(), p.name.end())))
}

/// A To/From value taken apart in one walk: what [`addr_uri`] and
/// [`header_params_start`] return, and whether it has `<` / `>` anywhere
/// (quoted or not), the inputs of the From/To syntax check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrParts {
    /// `addr_uri(buf, value)`.
    pub uri: Span,
    /// `header_params_start(buf, value.start(), value.end())`.
    pub params: usize,
    /// A `<` somewhere in the value.
    pub has_lt: bool,
    /// A `>` somewhere in the value; only computed when `has_lt` (else false).
    pub has_gt: bool,
}

/// [`AddrParts`] of a value that lies within `buf` (header values do).
pub fn addr_parts(buf: &[u8], value: Span) -> AddrParts {
    let s = value.start();
    let v = value.of(buf);
    let e = s + v.len();
    let mut quoted = false;
    let mut quoted_lt = false;
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'\\' if quoted => {
                // The escaped byte is skipped, but it is still a `<`.
                quoted_lt |= v.get(i + 1) == Some(&b'<');
                i += 1;
            }
            b'"' => quoted = !quoted,
            b'<' if !quoted => {
                let inner = &v[i + 1..];
                let close = memchr::memchr(b'>', inner);
                let (a, b) = trim(buf, s + i + 1, s + i + 1 + close.unwrap_or(inner.len()));
                let (params, has_gt) = match close {
                    Some(c) => {
                        let after = i + 1 + c + 1;
                        let p = memchr::memchr(b';', &v[after..]).map_or(e, |x| s + after + x);
                        (p, true)
                    }
                    None => (e, memchr::memchr(b'>', &v[..i]).is_some()),
                };
                return AddrParts { uri: Span::new(a, b), params, has_lt: true, has_gt };
            }
            b'<' => quoted_lt = true,
            _ => {}
        }
        i += 1;
    }
    let p = memchr::memchr(b';', v).map_or(e, |x| s + x);
    let (a, b) = trim(buf, s, p);
    let has_gt = quoted_lt && memchr::memchr(b'>', v).is_some();
    AddrParts { uri: Span::new(a, b), params: p, has_lt: quoted_lt, has_gt }
}

/// The URI inside a name-addr's `<>`, or the whole addr-spec up to its
/// header params (Route, Record-Route values).
pub fn addr_uri(buf: &[u8], value: Span) -> Span {
    let (s, e) = (value.start(), value.end());
    let bytes = value.of(buf);
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => {
                let inner = &bytes[i + 1..];
                let close = memchr::memchr(b'>', inner).unwrap_or(inner.len());
                let (a, b) = trim(buf, s + i + 1, s + i + 1 + close);
                return Span::new(a, b);
            }
            _ => {}
        }
        i += 1;
    }
    let p = header_params_start(buf, s, e);
    let (a, mut b) = trim(buf, s, p);
    while b > a && buf.get(b - 1).is_some_and(|&c| is_lws(c)) {
        b -= 1;
    }
    Span::new(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(s: &[u8]) -> Span {
        Span::new(0, s.len())
    }

    #[test]
    fn tags_after_name_addr_and_addr_spec() {
        let v = b"\"J; R\" <sip:a@b;tag=no> ;  tag = 98asjd8";
        assert_eq!(header_param(v, sp(v), b"tag").unwrap().of(v), b"98asjd8");
        let v = b"sip:a@b;TAG=1918181833n";
        assert_eq!(header_param(v, sp(v), b"tag").unwrap().of(v), b"1918181833n");
        let v = b"<sip:bob@biloxi.com>";
        assert_eq!(header_param(v, sp(v), b"tag"), None);
    }

    #[test]
    fn route_uri() {
        let v = b"<sip:p1.example.com;lr>;foo=bar";
        assert_eq!(addr_uri(v, sp(v)).of(v), b"sip:p1.example.com;lr");
        let v = b"sip:p1.example.com";
        assert_eq!(addr_uri(v, sp(v)).of(v), b"sip:p1.example.com");
    }

    /// `addr_parts` against the walks it replaces, on values built from the
    /// bytes that matter (quotes, escapes, brackets, `;`, LWS), inside a
    /// larger buffer.
    #[test]
    fn addr_parts_matches_the_separate_walks() {
        const ALPHABET: &[u8] = b"<>\";\\ \t\r\nab:@=";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let mut y = x;
            let buf: Vec<u8> = (0..len + 4)
                .map(|_| {
                    y = y.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(u64::from(n));
                    ALPHABET[(y >> 59) as usize % ALPHABET.len()]
                })
                .collect();
            let v = Span::new(2, 2 + len);
            let got = addr_parts(&buf, v);
            let bytes = v.of(&buf);
            let has_lt = memchr::memchr(b'<', bytes).is_some();
            let want = AddrParts {
                uri: addr_uri(&buf, v),
                params: header_params_start(&buf, v.start(), v.end()),
                has_lt,
                has_gt: has_lt && memchr::memchr(b'>', bytes).is_some(),
            };
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(bytes));
            assert_eq!(param_at(&buf, got.params, v.end(), b"a"), header_param(&buf, v, b"a"));
        }
    }

    #[test]
    fn param_list() {
        let v = b"lr;maddr=1.2.3.4; x = \"a;b\"";
        let ps: Vec<_> = params(v, 0, v.len()).map(|p| (p.name.of(v), p.value.map(|x| x.of(v)))).collect();
        assert_eq!(ps, vec![(&b"lr"[..], None), (b"maddr", Some(&b"1.2.3.4"[..])), (b"x", Some(b"\"a;b\""))]);
    }

    /// `param_at` without its fast path: the `params` walk alone.
    fn param_at_walk(buf: &[u8], at: usize, end: usize, name: &[u8]) -> Option<Span> {
        params(buf, at + 1, end)
            .find(|p| p.name.of(buf).eq_ignore_ascii_case(name))
            .map(|p| p.value.unwrap_or(Span::new(p.name.end(), p.name.end())))
    }

    #[test]
    fn param_at_fast_path_matches_the_walk() {
        const PIECES: [&[u8]; 12] =
            [b";", b"tag", b"TaG", b"=", b"\"", b"\\", b" ", b"\r\n ", b"x", b"9", b";tag=", b"ta"];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut buf = b"<sip:a@b>".to_vec();
            let at = buf.len();
            let mut y = x;
            for _ in 0..(x % 7) {
                y = y.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
                buf.extend_from_slice(PIECES[(y >> 59) as usize % PIECES.len()]);
            }
            // Sometimes the value ends one byte before the list does.
            let end = buf.len() - usize::from(buf.len() > at && x >> 63 == 1);
            buf.extend_from_slice(b";tag=z\r\n");
            for name in [&b"tag"[..], b"t", b""] {
                let want = param_at_walk(&buf, at, end, name);
                assert_eq!(param_at(&buf, at, end, name), want, "{:?}", String::from_utf8_lossy(&buf[at..end]));
            }
        }
    }
}
