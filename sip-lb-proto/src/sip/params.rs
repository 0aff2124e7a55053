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
    let p = header_params_start(buf, s, e);
    params(buf, p + 1, e)
        .find(|p| p.name.of(buf).eq_ignore_ascii_case(name))
        .map(|p| p.value.unwrap_or(Span::new(p.name.end(), p.name.end())))
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

    #[test]
    fn param_list() {
        let v = b"lr;maddr=1.2.3.4; x = \"a;b\"";
        let ps: Vec<_> = params(v, 0, v.len()).map(|p| (p.name.of(v), p.value.map(|x| x.of(v)))).collect();
        assert_eq!(ps, vec![(&b"lr"[..], None), (b"maddr", Some(&b"1.2.3.4"[..])), (b"x", Some(b"\"a;b\""))]);
    }
}
