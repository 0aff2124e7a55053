//! One Via value (RFC 3261 §20.42, RFC 3581): sent-protocol, sent-by and the
//! params the proxy reads or edits. LWS (including folds) is allowed between
//! every token, as in RFC 4475 "wsinv". Positions are absolute offsets into
//! the datagram so the forwarding step can splice at them.

use super::scan::name_mask;
use super::span::Span;
use super::text::{eq_fold, is_lws, parse_decimal, parse_ip, skip_lws};
use super::values::value_end;
use std::net::IpAddr;

/// Prefix of every branch made by an RFC 3261 element.
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// How many `received`/`rport` params a Via may carry: more is not a Via we
/// can stamp safely, and the request gets 400.
pub const MAX_STAMP_PARAMS: usize = 4;

/// Which param a [`StampParam`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StampKind {
    Received,
    Rport,
}

/// A `received` or `rport` param, located for rewriting (§18.2.1, RFC 3581).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StampParam {
    pub kind: StampKind,
    /// The `;` before the name: removing `start..end` removes the param.
    pub start: u32,
    pub name_end: u32,
    /// After `=`, possibly empty (`rport=`); `None` without `=`.
    pub value: Option<Span>,
    pub end: u32,
}

impl StampParam {
    const EMPTY: StampParam = StampParam { kind: StampKind::Rport, start: 0, name_end: 0, value: None, end: 0 };
}

/// The first value of a Via field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via {
    /// Transport (`UDP`, `TCP`, ...).
    pub transport: Span,
    /// Host as written, IPv6 references with their brackets.
    pub host: Span,
    pub port: Option<u16>,
    pub branch: Option<Span>,
    pub received: Option<Span>,
    /// `rport` present: `Some(None)` when it has no value (RFC 3581 request,
    /// also `rport=`), `Some(Some(v))` with a value.
    pub rport: Option<Option<Span>>,
    /// Every `received` and `rport` param, in order.
    stamp: [StampParam; MAX_STAMP_PARAMS],
    stamp_len: u8,
    /// End of this value without trailing LWS: where new params go.
    pub end: u32,
    /// Start of the next value in the same field after the comma, if any.
    pub next: Option<u32>,
}

impl Via {
    /// Parses the first via-parm of `buf[span]`. `None` if it is not one.
    pub fn parse(buf: &[u8], span: Span) -> Option<Via> {
        let end = span.end().min(buf.len());
        // One walk: the value ends at the first comma the grammar does not
        // consume. Every byte before it is a token, host, port, param or a
        // quoted param value, so `values::value_end` would find the same
        // comma, unless a bracketed host holds a quote, angle bracket or
        // comma (which would change value_end's view of the rest): only
        // then is the end found first, with a separate quote-aware scan.
        match Via::parse_in(buf, span.start(), end, end, true) {
            Ok(via) => via,
            Err(Unusual) => Via::parse_unusual(buf, span.start(), end),
        }
    }

    /// The value end found first by the quote-aware scan (see [`Via::parse`]).
    #[cold]
    #[inline(never)]
    fn parse_unusual(buf: &[u8], start: usize, end: usize) -> Option<Via> {
        Via::parse_in(buf, start, value_end(buf, start, end), end, false).ok()?
    }

    /// Parses `buf[start..stop]`, the first value of a field ending at
    /// `end`. With `at_comma`, `stop` is `end` and the walk itself stops
    /// at the comma after the value.
    /// Inlined (with [`Via::walk`]) into both callers: the ~170-byte `Via`
    /// is then built where it is returned instead of copied out twice.
    #[inline(always)]
    fn parse_in(buf: &[u8], start: usize, stop: usize, end: usize, at_comma: bool) -> Result<Option<Via>, Unusual> {
        let lim = buf.get(..stop).unwrap_or(buf);
        let mut c = Cursor { buf: lim, pos: start, at_comma, unusual: false };
        let via = Via::walk(&mut c, buf, stop, end);
        if c.unusual {
            return Err(Unusual);
        }
        Ok(via)
    }

    /// `full` is the whole datagram (`c.buf` ends at `stop`).
    #[inline(always)]
    fn walk(c: &mut Cursor<'_>, full: &[u8], stop: usize, end: usize) -> Option<Via> {
        let buf = c.buf;
        let name = c.token()?;
        c.expect(b'/')?;
        let version = c.token()?;
        c.expect(b'/')?;
        let transport = c.token()?;
        if !eq_fold(name.of(buf), b"sip") || version.of(buf) != b"2.0" {
            return None;
        }
        c.lws();
        let host = c.host()?;
        let mut last = host.end();
        c.lws();
        let mut port = None;
        if c.peek() == Some(b':') {
            c.pos += 1;
            c.lws();
            let p = c.run(&DIGIT);
            port = Some(parse_decimal(p.of(buf), 65_535)? as u16);
            last = p.end();
        }
        let mut via = Via {
            transport,
            host,
            port,
            branch: None,
            received: None,
            rport: None,
            stamp: [StampParam::EMPTY; MAX_STAMP_PARAMS],
            stamp_len: 0,
            end: 0,
            next: None,
        };
        loop {
            c.lws();
            let semi = c.pos;
            match c.peek() {
                None => break,
                Some(b',') if c.at_comma => break,
                Some(b';') => c.pos += 1,
                Some(_) => return None,
            }
            c.lws();
            let pname = c.run_wide(&TOKEN);
            if pname.is_empty() {
                return None;
            }
            last = pname.end();
            c.lws();
            let mut value = None;
            if c.peek() == Some(b'=') {
                c.pos += 1;
                c.lws();
                let v = if c.peek() == Some(b'"') { c.quoted()? } else { c.run_wide(&PARAM) };
                last = last.max(v.end());
                value = Some(v);
            }
            let n = pname.of(buf);
            let kind = if eq_fold(n, b"branch") {
                // A second branch would make the transaction ambiguous.
                if via.branch.is_some() {
                    return None;
                }
                via.branch = value;
                continue;
            } else if eq_fold(n, b"received") {
                via.received = via.received.or(value);
                StampKind::Received
            } else if eq_fold(n, b"rport") {
                via.rport = via.rport.or(Some(value.filter(|v| !v.is_empty())));
                StampKind::Rport
            } else {
                continue;
            };
            let slot = via.stamp.get_mut(usize::from(via.stamp_len))?;
            *slot = StampParam { kind, start: semi as u32, name_end: pname.end, value, end: last as u32 };
            via.stamp_len += 1;
        }
        via.end = last as u32;
        if c.at_comma && c.peek() == Some(b',') {
            via.next = Some(skip_lws(full, c.pos + 1, end) as u32);
        } else if !c.at_comma && stop < end {
            via.next = Some(skip_lws(full, stop + 1, end) as u32);
        }
        Some(via)
    }

    /// sent-by host as an IP, if it is a literal.
    pub fn host_ip(&self, buf: &[u8]) -> Option<IpAddr> {
        parse_ip(self.host.of(buf))
    }

    /// `received` as an IP, if present and valid.
    pub fn received_ip(&self, buf: &[u8]) -> Option<IpAddr> {
        self.received.and_then(|r| parse_ip(r.of(buf)))
    }

    /// `rport` value as a port, if present with a value.
    pub fn rport_value(&self, buf: &[u8]) -> Option<u16> {
        let v = self.rport.flatten()?;
        parse_decimal(v.of(buf), 65_535).map(|p| p as u16)
    }

    /// The `received` and `rport` params, in order.
    pub fn stamp_params(&self) -> &[StampParam] {
        &self.stamp[..usize::from(self.stamp_len)]
    }

    pub fn branch_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        self.branch.map(|b| b.of(buf)).unwrap_or(&[])
    }
}

/// A byte class as a table, for [`Cursor::run`].
type Class = [bool; 256];

/// The table of the bytes `b` for which `$pred` holds.
macro_rules! class {
    (|$b:ident| $pred:expr) => {{
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            let $b = i as u8;
            t[i] = $pred;
            i += 1;
        }
        t
    }};
}

const fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~')
}

/// RFC 3261 token characters (what `text::is_token` accepts).
static TOKEN: Class = class!(|b| token_byte(b));
/// Param value characters: token plus what IPv6 addresses and hosts use.
static PARAM: Class = class!(|b| token_byte(b) || b == b':' || b == b'[' || b == b']');
/// Host name and IPv4 characters.
static HOST: Class = class!(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
static DIGIT: Class = class!(|b| b.is_ascii_digit());

/// A bracketed host that `values::value_end` would read differently from
/// the walk (see [`Via::parse`]).
struct Unusual;

struct Cursor<'a> {
    /// The datagram up to where this walk stops (so one bounds check per
    /// byte: positions stay absolute).
    buf: &'a [u8],
    pos: usize,
    /// A top-level comma ends the value (the walk runs to the field's end).
    at_comma: bool,
    /// Set when `at_comma` cannot be trusted for this value.
    unusual: bool,
}

impl Cursor<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    #[inline]
    fn lws(&mut self) {
        while self.buf.get(self.pos).is_some_and(|&b| is_lws(b)) {
            self.pos += 1;
        }
    }

    /// The bytes of class `t` from here.
    #[inline]
    fn run(&mut self, t: &Class) -> Span {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or(&[]);
        self.pos = start + rest.iter().position(|&b| !t[usize::from(b)]).unwrap_or(rest.len());
        Span::new(start, self.pos)
    }

    /// [`Cursor::run`] for a class that holds every letter, digit and `-`
    /// (token, param, host): 16 bytes a step while they are all of those
    /// (a branch is ~16-42 of them), then byte by byte.
    #[inline]
    fn run_wide(&mut self, t: &Class) -> Span {
        let start = self.pos;
        let mut pos = start;
        while let Some(chunk) = self.buf.get(pos..pos + 16).and_then(|c| <&[u8; 16]>::try_from(c).ok()) {
            let m = name_mask(chunk);
            pos += (!m).trailing_zeros() as usize;
            if m != 0xffff {
                break;
            }
        }
        let rest = self.buf.get(pos..).unwrap_or(&[]);
        self.pos = pos + rest.iter().position(|&b| !t[usize::from(b)]).unwrap_or(rest.len());
        Span::new(start, self.pos)
    }

    fn run_while(&mut self, f: impl Fn(u8) -> bool) -> Span {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        Span::new(start, self.pos)
    }

    fn token(&mut self) -> Option<Span> {
        self.lws();
        let t = self.run(&TOKEN);
        (!t.is_empty()).then_some(t)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.lws();
        (self.peek() == Some(b)).then(|| self.pos += 1)
    }

    fn host(&mut self) -> Option<Span> {
        let start = self.pos;
        if self.peek() == Some(b'[') {
            let inner = self.run_while(|b| b != b']' && !is_lws(b));
            if self.at_comma && inner.of(self.buf).iter().any(|b| matches!(b, b'"' | b'<' | b'>' | b',')) {
                self.unusual = true;
                return None;
            }
            if self.peek() != Some(b']') {
                return None;
            }
            self.pos += 1;
            return Some(Span::new(start, self.pos));
        }
        let h = self.run_wide(&HOST);
        (!h.is_empty()).then_some(h)
    }

    fn quoted(&mut self) -> Option<Span> {
        let start = self.pos;
        self.pos += 1;
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'\\' => self.pos += 1,
                b'"' => return Some(Span::new(start, self.pos)),
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[u8]) -> Via {
        Via::parse(v, Span::new(0, v.len())).expect("valid via")
    }

    #[test]
    fn plain_via() {
        let v = b"SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds";
        let via = parse(v);
        assert_eq!(via.transport.of(v), b"UDP");
        assert_eq!(via.host.of(v), b"pc33.atlanta.com");
        assert_eq!(via.port, None);
        assert_eq!(via.branch_bytes(v), b"z9hG4bK776asdhds");
        assert_eq!(via.end as usize, v.len());
        assert_eq!(via.next, None);
        assert_eq!(via.host_ip(v), None);
    }

    #[test]
    fn wsinv_whitespace_everywhere() {
        let v = b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw";
        let via = parse(v);
        assert_eq!(via.host.of(v), b"192.0.2.2");
        assert_eq!(via.branch_bytes(v), b"390skdjuw");
        let v = b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239";
        let via = parse(v);
        assert_eq!(via.transport.of(v), b"TCP");
        assert_eq!(via.host.of(v), b"spindle.example.com");
        assert_eq!(via.branch_bytes(v), b"z9hG4bK9ikj8");
        let next = via.next.unwrap() as usize;
        let second = Via::parse(v, Span::new(next, v.len())).unwrap();
        assert_eq!(second.host.of(v), b"192.168.255.111");
        assert_eq!(second.branch_bytes(v), b"z9hG4bK30239");
        assert_eq!(&v[via.end as usize..via.end as usize + 3], b"  ,");
    }

    #[test]
    fn ipv6_port_rport_received() {
        let v = b"SIP/2.0/UDP [2001:db8::9:1]:5070;received=2001:db8::9:255;branch=z9hG4bKas3;rport";
        let via = parse(v);
        assert_eq!(via.host.of(v), b"[2001:db8::9:1]");
        assert_eq!(via.port, Some(5070));
        assert_eq!(via.received_ip(v), Some("2001:db8::9:255".parse().unwrap()));
        assert_eq!(via.rport, Some(None));
        let [rec, rp] = via.stamp_params() else { panic!("two stamp params") };
        assert_eq!(
            (rec.kind, &v[rec.start as usize..rec.end as usize]),
            (StampKind::Received, &b";received=2001:db8::9:255"[..])
        );
        assert_eq!((rp.kind, rp.name_end as usize, rp.value), (StampKind::Rport, v.len(), None));
        let v = b"SIP/2.0/UDP 10.0.0.1 : 5062 ;rport=1234";
        let via = parse(v);
        assert_eq!(via.port, Some(5062));
        assert_eq!(via.rport_value(v), Some(1234));
    }

    #[test]
    fn empty_rport_value_and_duplicates() {
        let v = b"SIP/2.0/UDP h;rport=;received=1.1.1.1;received=2.2.2.2";
        let via = parse(v);
        assert_eq!(via.rport, Some(None));
        assert_eq!(via.received.map(|r| r.of(v)), Some(&b"1.1.1.1"[..]));
        let p = via.stamp_params();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].value.map(|s| s.is_empty()), Some(true));
        assert_eq!(&v[p[2].start as usize..p[2].end as usize], b";received=2.2.2.2");
        let many = b"SIP/2.0/UDP h;rport;rport;rport;rport;rport";
        assert_eq!(Via::parse(many, Span::new(0, many.len())), None);
        let two_branches = b"SIP/2.0/UDP h;branch=z9hG4bKa;branch=z9hG4bKb";
        assert_eq!(Via::parse(two_branches, Span::new(0, two_branches.len())), None);
    }

    #[test]
    fn value_ends_at_the_first_comma_outside_quotes() {
        let v = b"SIP/2.0/UDP h;x=\"a,\\\"b\";branch=z9hG4bKq , SIP/2.0/UDP g";
        let via = parse(v);
        assert_eq!(via.branch_bytes(v), b"z9hG4bKq");
        assert_eq!(&v[via.next.unwrap() as usize..], b"SIP/2.0/UDP g");
        assert_eq!(&v[..via.end as usize], b"SIP/2.0/UDP h;x=\"a,\\\"b\";branch=z9hG4bKq");
        for bad in [&b"SIP/2.0/UDP [::1,SIP/2.0/UDP h]"[..], b"SIP/2.0/UDP h;x=<a,b>", b"SIP/2.0/UDP h;x=\"a,b"] {
            assert_eq!(Via::parse(bad, Span::new(0, bad.len())), None, "{}", String::from_utf8_lossy(bad));
        }
        let v = b"SIP/2.0/UDP h,";
        assert_eq!(parse(v).next, Some(v.len() as u32));
        // A quote inside brackets changes where value_end sees the value
        // end: the walk defers to it.
        let v = b"SIP/2.0/UDP [a\"b];x=\"c\"";
        assert_eq!(parse(v).host.of(v), b"[a\"b]");
        let v = b"SIP/2.0/UDP [\"h],h";
        assert_eq!(Via::parse(v, Span::new(0, v.len())), None);
    }

    #[test]
    fn rejects_garbage() {
        for v in [
            &b""[..],
            b"SIP/2.0",
            b"SIP/2.0/UDP",
            b"HTTP/1.1/UDP h",
            b"SIP/2.0/UDP h x",
            b"SIP/2.0/UDP h:99999",
            b"SIP/2.0/UDP [::1",
        ] {
            assert_eq!(Via::parse(v, Span::new(0, v.len())), None, "{}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn class_tables_match_their_predicates() {
        for b in 0..=255u8 {
            assert_eq!(TOKEN[usize::from(b)], crate::sip::text::is_token(b), "{b}");
            assert_eq!(PARAM[usize::from(b)], crate::sip::text::is_token(b) || b":[]".contains(&b), "{b}");
            assert_eq!(HOST[usize::from(b)], b.is_ascii_alphanumeric() || b".-_".contains(&b), "{b}");
            assert_eq!(DIGIT[usize::from(b)], b.is_ascii_digit(), "{b}");
        }
    }

    /// `run_wide`'s 16-byte steps against the byte loop of `run`.
    #[test]
    fn run_wide_matches_run() {
        const ALPHABET: &[u8] = b"aZ9-._:[]; \"=,\r";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..100_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 48) as usize;
            let mut y = x;
            // Long runs of letters and digits, broken by the other bytes.
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    y = y.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(u64::from(n));
                    let r = (y >> 58) as usize;
                    if r < 48 {
                        b"a1Z9"[r % 4]
                    } else {
                        ALPHABET[r % ALPHABET.len()]
                    }
                })
                .collect();
            for t in [&TOKEN, &PARAM, &HOST] {
                for from in 0..=len.min(3) {
                    let (mut a, mut b) = (
                        Cursor { buf: &buf, pos: from, at_comma: true, unusual: false },
                        Cursor { buf: &buf, pos: from, at_comma: true, unusual: false },
                    );
                    assert_eq!(a.run_wide(t), b.run(t), "{:?}", String::from_utf8_lossy(&buf));
                    assert_eq!(a.pos, b.pos);
                }
            }
        }
    }
}
