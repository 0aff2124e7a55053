//! The parts of a URI the proxy checks: the scheme (416 for unknown ones,
//! RFC 3261 §16.3) and, for sip/sips, host and port (is this Route or
//! Request-URI us? §16.4).

use super::params::params;
use super::scan::set_mask;
use super::span::Span;
use super::text::{eq_fold, parse_decimal, parse_ip};
use std::net::IpAddr;

/// The bytes the hostport walk of [`Uri::parse`] stops at (the same set
/// as its `set_mask` call).
static URI_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'@' as usize] = true;
    t[b';' as usize] = true;
    t[b'?' as usize] = true;
    t[b':' as usize] = true;
    t[b']' as usize] = true;
    t
};

/// What the hostport walk of [`Uri::parse`] records, relative to the last
/// `@` seen so far (every `@` starts the hostport candidate afresh).
struct HostWalk {
    /// Just past the last `@` (0 without one).
    at: usize,
    /// First `;` or `?`: the end of hostport.
    stop: Option<usize>,
    /// First `?`: the end of the params.
    query: Option<usize>,
    /// First `:` before `stop`.
    colon: Option<usize>,
    /// First `]` before `stop`.
    close: Option<usize>,
}

impl HostWalk {
    /// The special byte `b` (one of [`URI_SPECIAL`]) at `i`.
    #[inline(always)]
    fn special(&mut self, b: u8, i: usize) {
        match b {
            b'@' => *self = HostWalk { at: i + 1, stop: None, query: None, colon: None, close: None },
            b';' => self.stop = self.stop.or(Some(i)),
            b'?' => {
                self.stop = self.stop.or(Some(i));
                self.query = self.query.or(Some(i));
            }
            b':' if self.stop.is_none() => self.colon = self.colon.or(Some(i)),
            b']' if self.stop.is_none() => self.close = self.close.or(Some(i)),
            _ => {}
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// A syntactically valid scheme we do not route.
    Other,
}

/// A URI view. `host`/`port` are only filled for sip and sips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    /// The scheme as written (without the colon).
    pub scheme_text: Span,
    pub host: Span,
    pub port: Option<u16>,
    /// sip/sips: the `;params` after hostport, up to `?` or the end
    /// (empty otherwise).
    pub params: Span,
}

impl Uri {
    /// `None` if `span` does not start with `scheme ":"` (RFC 3986 scheme
    /// syntax) or, for sip/sips, has no usable host.
    pub fn parse(buf: &[u8], span: Span) -> Option<Uri> {
        let s = span.of(buf);
        // The scheme is a few bytes: a plain loop, not `memchr`'s dispatch.
        let colon = s.iter().position(|&b| b == b':')?;
        let scheme = &s[..colon];
        let valid = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme.iter().all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !valid {
            return None;
        }
        let scheme = if eq_fold(scheme, b"sip") {
            Scheme::Sip
        } else if eq_fold(scheme, b"sips") {
            Scheme::Sips
        } else if eq_fold(scheme, b"tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let scheme_text = Span::new(span.start(), span.start() + colon);
        if !matches!(scheme, Scheme::Sip | Scheme::Sips) {
            // An absolute URI needs something after the scheme.
            if colon + 1 == s.len() {
                return None;
            }
            return Some(Uri { scheme, scheme_text, host: Span::EMPTY, port: None, params: Span::EMPTY });
        }
        // hostport ends at the first `;` (params) or `?` (headers); userinfo
        // ends at the last `@` before that (a password may not contain `;`,
        // but a user part may, e.g. `sip:user;par=x@host`: so the last `@`
        // of all counts). One forward walk: every `@` starts the hostport
        // candidate afresh, and the positions the host and port need are
        // recorded relative to the last one.
        let base = span.start() + colon + 1;
        let rest = &s[colon + 1..];
        let mut w = HostWalk { at: 0, stop: None, query: None, colon: None, close: None };
        // 16 bytes a step where the datagram has them (the bytes past the
        // URI are masked off), byte by byte for the last few.
        let mut i = 0;
        while i < rest.len() {
            let Some(chunk) = buf.get(base + i..base + i + 16).and_then(|c| <&[u8; 16]>::try_from(c).ok()) else {
                for (j, &b) in rest.iter().enumerate().skip(i) {
                    if URI_SPECIAL[usize::from(b)] {
                        w.special(b, j);
                    }
                }
                break;
            };
            let left = rest.len() - i;
            let mut m = set_mask(chunk, *b"@;?:]");
            if left < 16 {
                m &= (1 << left) - 1;
            }
            while m != 0 {
                let j = i + m.trailing_zeros() as usize;
                w.special(rest[j], j);
                m &= m - 1;
            }
            i += 16;
        }
        let HostWalk { at, stop, query, colon: first_colon, close: first_close } = w;
        let hp_end = stop.unwrap_or(rest.len());
        let params_start = base + hp_end;
        let params_end = match query {
            Some(q) => base + q,
            None => span.end(),
        };
        let hp = &rest[at..hp_end];
        let (host_len, port) = if hp.first() == Some(&b'[') {
            let close = first_close? - at + 1;
            match hp.get(close) {
                None => (close, None),
                Some(b':') => (close, Some(hp.get(close + 1..)?)),
                Some(_) => return None,
            }
        } else {
            match first_colon {
                Some(c) => (c - at, Some(&hp[c - at + 1..])),
                None => (hp.len(), None),
            }
        };
        if host_len == 0 {
            return None;
        }
        let port = match port {
            Some(p) => Some(parse_decimal(p, 65_535)? as u16),
            None => None,
        };
        let host = Span::new(base + at, base + at + host_len);
        Some(Uri { scheme, scheme_text, host, port, params: Span::new(params_start, params_end) })
    }

    /// Whether the sip/sips URI has the parameter `name` (e.g. `lr`).
    pub fn has_param(&self, buf: &[u8], name: &[u8]) -> bool {
        params(buf, self.params.start(), self.params.end()).any(|p| p.name.of(buf).eq_ignore_ascii_case(name))
    }

    pub fn host_ip(&self, buf: &[u8]) -> Option<IpAddr> {
        parse_ip(self.host.of(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[u8]) -> Option<(Scheme, Vec<u8>, Option<u16>)> {
        Uri::parse(s, Span::new(0, s.len())).map(|u| (u.scheme, u.host.of(s).to_vec(), u.port))
    }

    #[test]
    fn schemes() {
        assert_eq!(p(b"sip:bob@biloxi.com"), Some((Scheme::Sip, b"biloxi.com".to_vec(), None)));
        assert_eq!(p(b"SIPS:bob@10.0.0.1:5071;transport=tcp"), Some((Scheme::Sips, b"10.0.0.1".to_vec(), Some(5071))));
        assert_eq!(p(b"tel:+1-212-555-1212").map(|x| x.0), Some(Scheme::Tel));
        assert_eq!(p(b"nobarf:foo@bar").map(|x| x.0), Some(Scheme::Other));
        assert_eq!(p(b"NoSuchScheme:x").map(|x| x.0), Some(Scheme::Other));
        assert_eq!(p(b"no-colon"), None);
        assert_eq!(p(b"1sip:x"), None);
        assert_eq!(p(b"sip:"), None);
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(p(b"sip:[2001:db8::10]:5070;lr"), Some((Scheme::Sip, b"[2001:db8::10]".to_vec(), Some(5070))));
        assert_eq!(p(b"sip:[2001:db8::10]"), Some((Scheme::Sip, b"[2001:db8::10]".to_vec(), None)));
        assert_eq!(p(b"sip:user:pw@127.0.0.1:5060?x=y"), Some((Scheme::Sip, b"127.0.0.1".to_vec(), Some(5060))));
        assert_eq!(p(b"sip:h:99999"), None);
        assert_eq!(p(b"sip:[::1]x"), None);
    }

    #[test]
    fn uri_params() {
        let s = b"sip:+1555@192.0.2.10;lr;slb=abc?h=x;y";
        let u = Uri::parse(s, Span::new(0, s.len())).unwrap();
        assert_eq!(u.params.of(s), b";lr;slb=abc");
        assert!(u.has_param(s, b"slb") && u.has_param(s, b"LR") && !u.has_param(s, b"y"));
        assert_eq!(u.scheme_text.of(s), b"sip");
        assert_eq!(p(b"urn:").map(|x| x.0), None);
        assert_eq!(p(b"urn:service:sos").map(|x| x.0), Some(Scheme::Other));
    }

    /// `Uri::parse` as it was before the one-walk hostport (memrchr for the
    /// last `@`, then separate searches): the reference of the walk.
    fn reference(buf: &[u8], span: Span) -> Option<Uri> {
        use memchr::memchr;
        let s = span.of(buf);
        let colon = s.iter().position(|&b| b == b':')?;
        let scheme = &s[..colon];
        let valid = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme.iter().all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !valid {
            return None;
        }
        let scheme = if scheme.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let scheme_text = Span::new(span.start(), span.start() + colon);
        if !matches!(scheme, Scheme::Sip | Scheme::Sips) {
            if colon + 1 == s.len() {
                return None;
            }
            return Some(Uri { scheme, scheme_text, host: Span::EMPTY, port: None, params: Span::EMPTY });
        }
        let base = span.start() + colon + 1;
        let rest = &s[colon + 1..];
        let at = memchr::memrchr(b'@', rest).map_or(0, |i| i + 1);
        let hp = &rest[at..];
        let hp_len = hp.iter().position(|&b| b == b';' || b == b'?').unwrap_or(hp.len());
        let params_start = base + at + hp_len;
        let params_end = match memchr(b'?', &hp[hp_len..]) {
            Some(q) => params_start + q,
            None => span.end(),
        };
        let hp = &hp[..hp_len];
        let (host_len, port) = if hp.first() == Some(&b'[') {
            let close = memchr(b']', hp)? + 1;
            match hp.get(close) {
                None => (close, None),
                Some(b':') => (close, Some(hp.get(close + 1..)?)),
                Some(_) => return None,
            }
        } else {
            match memchr(b':', hp) {
                Some(i) => (i, Some(&hp[i + 1..])),
                None => (hp.len(), None),
            }
        };
        if host_len == 0 {
            return None;
        }
        let port = match port {
            Some(p) => Some(parse_decimal(p, 65_535)? as u16),
            None => None,
        };
        let host = Span::new(base + at, base + at + host_len);
        Some(Uri { scheme, scheme_text, host, port, params: Span::new(params_start, params_end) })
    }

    /// The one-walk hostport against [`reference`], on URIs built from the
    /// bytes that matter (`@ ; ? : [ ]`, digits) inside a larger buffer.
    #[test]
    fn walk_matches_the_reference() {
        const ALPHABET: &[u8] = b"@;?:[]19ah.=";
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for n in 0..300_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 20) as usize;
            let mut y = x;
            let mut buf = b"xx".to_vec();
            buf.extend_from_slice([&b"sip:"[..], b"sips:", b"SIP:", b"tel:", b"x:"][(x >> 40) as usize % 5]);
            buf.extend((0..len).map(|_| {
                y = y.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(u64::from(n));
                ALPHABET[(y >> 59) as usize % ALPHABET.len()]
            }));
            let span = Span::new(2, buf.len());
            buf.extend_from_slice(b"@;?");
            let bytes = span.of(&buf);
            assert_eq!(Uri::parse(&buf, span), reference(&buf, span), "{:?}", String::from_utf8_lossy(bytes));
        }
        for s in [&b"sip:a@b@c:5;x?y@z:7"[..], b"sip:[::1]:5060;lr", b"sip:u;p=@[::1]", b"sip:@", b"sip:a?b"] {
            let span = Span::new(0, s.len());
            assert_eq!(Uri::parse(s, span), reference(s, span), "{}", String::from_utf8_lossy(s));
        }
    }
}
