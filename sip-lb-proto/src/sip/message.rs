//! A view over one SIP datagram: the start line split into its parts and the
//! header block indexed into fixed header slots (like httparse), all as byte
//! ranges into the borrowed datagram.
//!
//! Parsing is lenient on purpose: a broken start line or header line is
//! recorded as a [`Defect`] while the rest is still indexed, so the proxy can
//! answer 400 to the top Via instead of silently dropping.

use std::mem::MaybeUninit;

use super::header::HeaderName;
use super::scan::{name_mask, LineFeeds};
use super::span::Span;
use super::text::{eq_fold, is_token, is_ws, trim};

/// Header slots the proxy gives a message; more headers is a [`ParseError`].
pub const MAX_HEADERS: usize = 128;

/// Caller-provided header storage (like httparse): parsing writes the slots,
/// the [`Message`] borrows them, so the view itself stays small and is never
/// copied around with kilobytes of slots inside.
pub type Slots = [Header; MAX_HEADERS];

/// Largest datagram accepted (the UDP payload limit).
pub const MAX_DATAGRAM: usize = 65_535;

/// Why a datagram is not a SIP message at all (nothing to answer to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Only CR/LF bytes: a keep-alive (RFC 5626 §3.5.1), or nothing at all.
    KeepAlive,
    /// No line after the start line: no Via to answer to.
    NoHeaders,
    /// More than [`MAX_HEADERS`] header fields.
    TooManyHeaders,
    /// Larger than [`MAX_DATAGRAM`].
    TooLarge,
}

/// Something wrong inside an otherwise indexed message (answerable with 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    StartLine,
    HeaderLine,
    /// The header block does not end with an empty line.
    Unterminated,
}

/// The first line, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Span,
        uri: Span,
        version: Span,
    },
    Response {
        version: Span,
        code: u16,
        reason: Span,
    },
    /// Unparseable; `is_response` tells whether it started with `SIP/`.
    Invalid {
        is_response: bool,
    },
}

/// One header field (possibly folded over several lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    /// From the first byte of the name to the end of the value, without the
    /// final line terminator.
    pub line: Span,
    /// The value, LWS-trimmed (folds inside stay as they are). Trimmed as
    /// each line is indexed: a fold re-trims from the trimmed start.
    pub value: Span,
    /// Just past the line terminator: removing `line.start..next` removes the
    /// whole field.
    pub next: u32,
}

impl Header {
    pub const EMPTY: Header = Header { name: HeaderName::Other, line: Span::EMPTY, value: Span::EMPTY, next: 0 };
}

/// An indexed SIP datagram.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    /// Start of the start line (leading CRLFs are skipped, RFC 3261 §7.5).
    pub start: u32,
    pub start_line: StartLine,
    /// First byte of the header block.
    pub head_start: u32,
    /// First byte after the empty line (= datagram end if unterminated).
    pub body_start: u32,
    pub defect: Option<Defect>,
    headers: &'a [Header],
}

impl<'a> Message<'a> {
    /// Fresh header storage for [`Message::parse`].
    pub const fn slots() -> Slots {
        [Header::EMPTY; MAX_HEADERS]
    }

    /// Indexes `buf`, writing its header fields into `slots` (more fields
    /// than slots is an error). Never panics; allocation free.
    pub fn parse(buf: &'a [u8], slots: &'a mut [Header]) -> Result<Message<'a>, ParseError> {
        // SAFETY: `MaybeUninit<Header>` has the size, alignment and layout of
        // `Header`, and `parse_uninit` only ever stores initialised
        // `Header`s through this view (`MaybeUninit::write`), so `slots` is
        // still fully initialised when the borrow ends (httparse does the
        // same in `Request::parse`).
        let uninit = unsafe { &mut *(slots as *mut [Header] as *mut [MaybeUninit<Header>]) };
        Message::parse_uninit(buf, uninit)
    }

    /// [`Message::parse`] into header slots that need not be initialised:
    /// the forwarding step keeps 3 KiB of slots on the stack and would
    /// otherwise fill them all for every datagram. Only the slots of the
    /// fields found are written.
    pub fn parse_uninit(buf: &'a [u8], slots: &'a mut [MaybeUninit<Header>]) -> Result<Message<'a>, ParseError> {
        if buf.len() > MAX_DATAGRAM {
            return Err(ParseError::TooLarge);
        }
        let start = buf.iter().position(|&b| b != b'\r' && b != b'\n');
        let Some(start) = start else {
            return Err(ParseError::KeepAlive);
        };
        // One scanner finds the start line's end and then every header
        // line's, in order.
        let mut lfs = LineFeeds::new(buf, start);
        let Some(nl) = lfs.next_lf() else {
            return Err(ParseError::NoHeaders);
        };
        let line_end = if nl > start && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
        let start_line = parse_start_line(buf, start, line_end);
        let mut defect = match start_line {
            StartLine::Invalid { .. } => Some(Defect::StartLine),
            _ => None,
        };
        let (count, body_start) = index_headers(buf, nl + 1, &mut lfs, slots, &mut defect)?;
        let written = slots.get(..count).unwrap_or(&[]);
        // SAFETY: `index_headers` wrote slots `0..count` (every field it
        // counts is stored with `MaybeUninit::write` before it returns), and
        // `MaybeUninit<Header>` has the layout of `Header`.
        let headers = unsafe { &*(written as *const [MaybeUninit<Header>] as *const [Header]) };
        Ok(Message {
            buf,
            start: start as u32,
            start_line,
            head_start: (nl + 1) as u32,
            body_start: body_start as u32,
            defect,
            headers,
        })
    }

    /// The datagram this view borrows.
    #[inline]
    pub fn buf(&self) -> &'a [u8] {
        self.buf
    }

    /// Bytes of a span of this message.
    #[inline]
    pub fn get(&self, span: Span) -> &'a [u8] {
        span.of(self.buf)
    }

    /// All header fields, in order.
    #[inline]
    pub fn headers(&self) -> &'a [Header] {
        self.headers
    }

    /// The first header field with this name.
    pub fn find(&self, name: HeaderName) -> Option<&'a Header> {
        self.headers().iter().find(|h| h.name == name)
    }

    /// All header fields with this name.
    pub fn all(&self, name: HeaderName) -> impl Iterator<Item = &'a Header> + 'a {
        self.headers().iter().filter(move |h| h.name == name)
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start_line, StartLine::Request { .. } | StartLine::Invalid { is_response: false })
    }

    /// The request method (empty for responses and broken start lines).
    pub fn method(&self) -> &'a [u8] {
        match self.start_line {
            StartLine::Request { method, .. } => self.get(method),
            _ => &[],
        }
    }

    /// Bytes after the empty line, up to the datagram end.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.body_start as usize..).unwrap_or(&[])
    }
}

/// Indexes the header block from `pos`: returns the field count and where
/// the body starts. Slots `0..count` are written, the others untouched.
/// `lfs` yields the line feeds from `pos` on.
fn index_headers(
    buf: &[u8],
    mut pos: usize,
    lfs: &mut LineFeeds<'_>,
    slots: &mut [MaybeUninit<Header>],
    defect: &mut Option<Defect>,
) -> Result<(usize, usize), ParseError> {
    // Fields stored so far; a copy of the last one, which folds may extend
    // (they store it again).
    let mut count: usize = 0;
    let mut last = Header::EMPTY;
    let mut body_start = buf.len();
    // Whether the previous line was a header a fold may continue.
    let mut open = false;
    loop {
        if pos >= buf.len() {
            note(defect, Defect::Unterminated);
            break;
        }
        let (nl, next) = match lfs.next_lf() {
            Some(i) => (i, i + 1),
            None => (buf.len(), buf.len()),
        };
        let end = if nl > pos && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
        if end == pos {
            if next == buf.len() && nl == buf.len() {
                note(defect, Defect::Unterminated);
            }
            body_start = next;
            break;
        }
        if is_ws(buf[pos]) {
            // Folded continuation (RFC 3261 §7.3.1).
            let slot = count.checked_sub(1).and_then(|i| slots.get_mut(i));
            match slot {
                Some(slot) if open => {
                    // Trimming again from the trimmed start is trimming the
                    // whole value: all before that start is LWS.
                    let (a, b) = trim(buf, last.value.start(), end);
                    last.line.end = end as u32;
                    last.value = Span::new(a, b);
                    last.next = next as u32;
                    slot.write(last);
                }
                _ => note(defect, Defect::HeaderLine),
            }
        } else if let Some(h) = parse_header_line(buf, pos, end, next) {
            let slot = slots.get_mut(count).ok_or(ParseError::TooManyHeaders)?;
            slot.write(h);
            last = h;
            count += 1;
            open = true;
        } else {
            note(defect, Defect::HeaderLine);
            open = false;
        }
        pos = next;
    }
    Ok((count, body_start))
}

fn note(defect: &mut Option<Defect>, d: Defect) {
    defect.get_or_insert(d);
}

fn parse_start_line(buf: &[u8], start: usize, end: usize) -> StartLine {
    let line = &buf[start..end];
    let is_response = line.get(..4).is_some_and(|p| eq_fold(p, b"sip/"));
    let invalid = StartLine::Invalid { is_response };
    // The spaces are a few bytes in: plain loops, not `memchr`'s dispatch.
    let Some(sp1) = line.iter().position(|&b| b == b' ') else { return invalid };
    if is_response {
        // SIP-Version SP Status-Code SP Reason-Phrase (reason may be empty).
        let code = &line[sp1 + 1..];
        let (digits, reason_at) = match code.iter().position(|&b| b == b' ') {
            Some(i) => (&code[..i], sp1 + 1 + i + 1),
            None => (code, line.len()),
        };
        let ok = digits.len() == 3 && digits.iter().all(u8::is_ascii_digit);
        if !ok || !eq_fold(&line[..sp1], b"sip/2.0") {
            return invalid;
        }
        let code = digits.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&code) {
            return invalid;
        }
        return StartLine::Response {
            version: Span::new(start, start + sp1),
            code,
            reason: Span::new(start + reason_at.min(line.len()), end),
        };
    }
    // Method SP Request-URI SP SIP-Version, single spaces (§7.1).
    // One walk over the URI finds the second space and checks the bytes
    // before it: the first byte that is not visible ASCII must be that
    // space (any other would be inside the URI, which is then invalid).
    let after = &line[sp1 + 1..];
    let uri_len = after.iter().position(|&b| !(b > b' ' && b < 0x7f)).unwrap_or(after.len());
    if after.get(uri_len) != Some(&b' ') {
        return invalid;
    }
    let sp2 = sp1 + 1 + uri_len;
    let method = &line[..sp1];
    let version = &line[sp2 + 1..];
    let ok = !method.is_empty() && method.iter().all(|&b| is_token(b)) && uri_len > 0 && eq_fold(version, b"sip/2.0");
    if !ok {
        return invalid;
    }
    StartLine::Request {
        method: Span::new(start, start + sp1),
        uri: Span::new(start + sp1 + 1, start + sp2),
        version: Span::new(start + sp2 + 1, end),
    }
}

/// `name *WS ":" value` (whitespace before the colon is allowed, RFC 4475 wsinv).
#[inline(always)]
fn parse_header_line(buf: &[u8], pos: usize, end: usize, next: usize) -> Option<Header> {
    // Fast path: the 16 bytes from the line start hold a name of letters,
    // digits and `-` followed directly by the colon. That name is what the
    // token scan below would find (those are token characters and `:` is
    // not), and the loaded word is what `classify` compares.
    if let Some(chunk) = buf.get(pos..pos + 16).and_then(|c| <&[u8; 16]>::try_from(c).ok()) {
        let name_len = (!name_mask(chunk)).trailing_zeros() as usize;
        if name_len > 0 && pos + name_len < end && chunk.get(name_len) == Some(&b':') {
            let (a, b) = trim(buf, pos + name_len + 1, end);
            return Some(Header {
                name: HeaderName::classify_word(u128::from_le_bytes(*chunk), name_len),
                line: Span::new(pos, end),
                value: Span::new(a, b),
                next: next as u32,
            });
        }
    }
    parse_header_line_slow(buf, pos, end, next)
}

/// [`parse_header_line`] for any name (other token characters, whitespace
/// before the colon, a line near the end of the datagram).
fn parse_header_line_slow(buf: &[u8], pos: usize, end: usize, next: usize) -> Option<Header> {
    let line = &buf[pos..end];
    let name_len = line.iter().position(|&b| !is_token(b))?;
    if name_len == 0 {
        return None;
    }
    let mut i = name_len;
    while i < line.len() && is_ws(line[i]) {
        i += 1;
    }
    if line.get(i) != Some(&b':') {
        return None;
    }
    let (a, b) = trim(buf, pos + i + 1, end);
    Some(Header {
        name: HeaderName::classify(buf, pos, name_len),
        line: Span::new(pos, end),
        value: Span::new(a, b),
        next: next as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test shorthand: leaks the slots so the view can outlive this call.
    fn parse(buf: &[u8]) -> Result<Message<'_>, ParseError> {
        Message::parse(buf, Box::leak(Box::new(Message::slots())))
    }

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    #[test]
    fn indexes_rfc3261_invite() {
        let m = parse(INVITE).unwrap();
        assert_eq!(m.defect, None);
        assert!(m.is_request());
        assert_eq!(m.method(), b"INVITE");
        let StartLine::Request { uri, version, .. } = m.start_line else { panic!() };
        assert_eq!(m.get(uri), b"sip:bob@biloxi.com");
        assert_eq!(m.get(version), b"SIP/2.0");
        assert_eq!(m.headers().len(), 9);
        let cid = m.find(HeaderName::CallId).unwrap();
        assert_eq!(m.get(cid.value), b"a84b4c76e66710@pc33.atlanta.com");
        assert_eq!(m.get(cid.line), b"Call-ID: a84b4c76e66710@pc33.atlanta.com");
        assert_eq!(m.rest(), b"v=0\n");
    }

    #[test]
    fn folded_header_and_space_before_colon() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nVia  : SIP/2.0/UDP\r\n  192.0.2.2;branch=z9hG4bKx\r\nsubject :\r\n\r\n";
        let m = parse(msg).unwrap();
        assert_eq!(m.defect, None);
        let v = m.find(HeaderName::Via).unwrap();
        assert_eq!(m.get(v.value), b"SIP/2.0/UDP\r\n  192.0.2.2;branch=z9hG4bKx");
        assert_eq!(v.next as usize, msg.len() - 13);
        let s = m.find(HeaderName::Subject).unwrap();
        assert_eq!(m.get(s.value), b"");
        assert_eq!(m.rest(), b"");
    }

    #[test]
    fn response_line_with_and_without_reason() {
        let m = parse(b"SIP/2.0 200 OK\r\nv: x\r\n\r\n").unwrap();
        assert!(matches!(m.start_line, StartLine::Response { code: 200, .. }));
        let m = parse(b"SIP/2.0 100\r\nv: x\r\n\r\n").unwrap();
        let StartLine::Response { code, reason, .. } = m.start_line else { panic!() };
        assert_eq!((code, m.get(reason)), (100, &b""[..]));
        let m = parse(b"SIP/2.0 2000 OK\r\nv: x\r\n\r\n").unwrap();
        assert_eq!(m.start_line, StartLine::Invalid { is_response: true });
    }

    #[test]
    fn keepalive_and_errors() {
        assert_eq!(parse(b"\r\n\r\n").unwrap_err(), ParseError::KeepAlive);
        assert_eq!(parse(b"").unwrap_err(), ParseError::KeepAlive);
        assert_eq!(parse(b"INVITE").unwrap_err(), ParseError::NoHeaders);
        let mut many = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"X: y\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many).unwrap_err(), ParseError::TooManyHeaders);
    }

    #[test]
    fn defects_are_recorded_not_fatal() {
        let m = parse(b"INVITE sip:a@b SIP/7.0\r\nVia: SIP/2.0/UDP h\r\n\r\n").unwrap();
        assert_eq!(m.defect, Some(Defect::StartLine));
        assert_eq!(m.headers().len(), 1);
        let m = parse(b"INVITE sip:a b SIP/2.0\r\nVia: x\r\n\r\n").unwrap();
        assert_eq!(m.defect, Some(Defect::StartLine));
        let m = parse(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nno colon here\r\n\r\n").unwrap();
        assert_eq!(m.defect, Some(Defect::HeaderLine));
        let m = parse(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n").unwrap();
        assert_eq!(m.defect, Some(Defect::Unterminated));
    }

    #[test]
    fn uninit_slots_give_the_same_view() {
        // Exercises the `unsafe` of `parse`/`parse_uninit`: only the slots of
        // the fields found are written, and exactly those are read back
        // (a Miri run of this test would check it; Miri is not installed here).
        let folded = b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n y\r\nbad\r\n z\r\nTo:\r\n <sip:a@b>\r\n\r\n";
        for msg in [INVITE, &folded[..], b"SIP/2.0 200 OK\r\nv: x\r\n", b"INVITE x\r\n"] {
            let mut uninit = [const { MaybeUninit::<Header>::uninit() }; MAX_HEADERS];
            let a = Message::parse_uninit(msg, &mut uninit).unwrap();
            let b = parse(msg).unwrap();
            assert_eq!(a.headers(), b.headers());
            assert_eq!((a.start_line, a.defect, a.body_start), (b.start_line, b.defect, b.body_start));
        }
        let m = parse(folded).unwrap();
        let to = m.find(HeaderName::To).unwrap();
        assert_eq!(m.get(to.value), b"<sip:a@b>");
        assert_eq!(m.get(m.find(HeaderName::Via).unwrap().value), b"x\r\n y");
        assert_eq!(m.defect, Some(Defect::HeaderLine));
        // Exactly as many fields as slots fit; one more does not.
        let mut msg = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
        for _ in 0..3 {
            msg.extend_from_slice(b"X: y\r\n");
        }
        let mut three = [const { MaybeUninit::<Header>::uninit() }; 3];
        assert_eq!(Message::parse_uninit(&msg, &mut three).unwrap().headers().len(), 3);
        let mut two = [const { MaybeUninit::<Header>::uninit() }; 2];
        assert_eq!(Message::parse_uninit(&msg, &mut two).unwrap_err(), ParseError::TooManyHeaders);
        let mut none: [MaybeUninit<Header>; 0] = [];
        assert_eq!(Message::parse_uninit(&msg, &mut none).unwrap_err(), ParseError::TooManyHeaders);
        assert_eq!(Message::parse_uninit(b"OPTIONS x\r\n\r\n", &mut none).unwrap().headers().len(), 0);
    }

    #[test]
    fn leading_crlf_skipped_and_bare_lf_accepted() {
        let m = parse(b"\r\nOPTIONS sip:a@b SIP/2.0\nVia: x\n\nbody").unwrap();
        assert_eq!(m.start, 2);
        assert_eq!(m.defect, None);
        assert_eq!(m.rest(), b"body");
    }

    /// The 16-byte fast path of `parse_header_line` against the token scan
    /// it short-cuts, on lines of name bytes, colons, LWS and other token
    /// characters, at every distance from the end of the buffer.
    #[test]
    fn header_line_fast_path_matches_the_scan() {
        const ALPHABET: &[u8] = b"aZ9-:: \t._!vFiT\r";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let mut y = x;
            let mut buf: Vec<u8> = (0..len)
                .map(|_| {
                    y = y.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(u64::from(n));
                    ALPHABET[(y >> 59) as usize % ALPHABET.len()]
                })
                .collect();
            let end = buf.len();
            buf.extend_from_slice(&b"\r\nX: y\r\n"[..(x >> 50) as usize % 9]);
            let next = (end + 2).min(buf.len());
            let fast = parse_header_line(&buf, 0, end, next);
            assert_eq!(fast, parse_header_line_slow(&buf, 0, end, next), "{:?}", String::from_utf8_lossy(&buf));
        }
    }
}
