//! Stream framing (RFC 3261 §18.3): on a stream, Content-Length is the only
//! way to find the end of a message, so it is required. A head is the bytes
//! up to and including the first empty line; the body is Content-Length
//! bytes after it.
//!
//! Between messages, `CRLF CRLF` is a keep-alive ping answered with one
//! `CRLF` (RFC 5626 §4.4.1) and a lone `CRLF` (a pong, or padding before a
//! start line, §7.5) is skipped.
//!
//! The framer borrows the connection's buffer on every call and allocates
//! nothing. Between two calls the caller may only append to the buffer,
//! unless the previous call returned a frame, which the caller then removes
//! from the front (exactly `len` bytes, or the connection is closed).

/// What the front of the buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not a whole frame yet: read more.
    NeedMore,
    /// `CRLF CRLF` (`len` = 4): answer with one CRLF.
    Ping { len: usize },
    /// A CRLF outside a message: drop it, answer nothing.
    Skip { len: usize },
    /// One whole message, `buf[..len]`. `call_id` is the trimmed value of
    /// the first Call-ID header (`i:` compact form too), if any: the driver
    /// picks the worker with it.
    Message { len: usize, call_id: Option<(usize, usize)> },
    /// A head, `buf[..len]`, without Content-Length but also without
    /// Content-Type: it has no body, so the next message starts right after
    /// it. Answer 400 (§18.3: the length is mandatory) and carry on.
    NoLength { len: usize },
    /// The stream cannot be framed any further: answer if `head` (the length
    /// of a complete head at the front) allows, then close.
    Fatal { error: FrameError, head: Option<usize> },
}

/// Why the stream cannot be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The head, or the head plus Content-Length, exceeds the maximum
    /// message size (answer 513 when the head is complete).
    TooLarge,
    /// No Content-Length but a Content-Type: a body of unknown length
    /// follows, so where the next message begins is unknown (answer 400).
    NoLength,
    /// Content-Length is not a decimal number, or two differ (answer 400).
    BadLength,
}

impl FrameError {
    /// Metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            FrameError::TooLarge => "too_large",
            FrameError::NoLength => "no_length_with_body",
            FrameError::BadLength => "bad_length",
        }
    }
}

/// Largest Content-Length value parsed (more is [`FrameError::TooLarge`]
/// anyway; this only keeps the arithmetic in range).
const MAX_LENGTH_DIGITS: usize = 10;

/// The framer of one connection.
#[derive(Clone, Debug)]
pub struct Framer {
    max: usize,
    /// How far the search for the end of the head got (no rescan of a head
    /// that arrives a few bytes at a time).
    scanned: usize,
    /// A head already parsed whose body is still arriving: (total length,
    /// Call-ID).
    pending: Option<(usize, Option<(usize, usize)>)>,
}

impl Framer {
    /// `max`: the largest message (head plus body) accepted, in bytes.
    pub fn new(max: usize) -> Framer {
        Framer { max, scanned: 0, pending: None }
    }

    /// The largest message accepted.
    pub fn max(&self) -> usize {
        self.max
    }

    /// What the front of `buf` holds (see the module doc for the contract).
    pub fn next(&mut self, buf: &[u8]) -> Frame {
        if let Some((total, call_id)) = self.pending {
            if buf.len() < total {
                return Frame::NeedMore;
            }
            return self.done(Frame::Message { len: total, call_id });
        }
        if buf.starts_with(b"\r\n") {
            return match &buf[2..] {
                [b'\r', b'\n', ..] => self.done(Frame::Ping { len: 4 }),
                // Could still become a ping.
                [] | [b'\r'] => Frame::NeedMore,
                _ => self.done(Frame::Skip { len: 2 }),
            };
        }
        let from = self.scanned.saturating_sub(3);
        let Some(end) = buf.get(from..).and_then(|s| memchr::memmem::find(s, b"\r\n\r\n")).map(|i| from + i) else {
            self.scanned = buf.len();
            if buf.len() > self.max {
                return self.done(Frame::Fatal { error: FrameError::TooLarge, head: None });
            }
            return Frame::NeedMore;
        };
        let head_len = end + 4;
        if head_len > self.max {
            return self.done(Frame::Fatal { error: FrameError::TooLarge, head: None });
        }
        let head = Head::scan(&buf[..head_len]);
        let fatal = |error| Frame::Fatal { error, head: Some(head_len) };
        let frame = match head.length {
            Length::Bad => fatal(FrameError::BadLength),
            Length::Missing if head.has_type => fatal(FrameError::NoLength),
            Length::Missing => Frame::NoLength { len: head_len },
            Length::Is(n) if n > (self.max - head_len) as u64 => fatal(FrameError::TooLarge),
            Length::Is(n) => {
                let total = head_len + n as usize;
                if buf.len() < total {
                    self.pending = Some((total, head.call_id));
                    return Frame::NeedMore;
                }
                Frame::Message { len: total, call_id: head.call_id }
            }
        };
        self.done(frame)
    }

    fn done(&mut self, f: Frame) -> Frame {
        self.scanned = 0;
        self.pending = None;
        f
    }
}

enum Length {
    Missing,
    Is(u64),
    Bad,
}

/// What framing needs from a head.
struct Head {
    length: Length,
    has_type: bool,
    call_id: Option<(usize, usize)>,
}

impl Head {
    /// Walks the header fields of a complete head (ending in CRLF CRLF);
    /// folded lines (starting with SP/HT) continue the field before them.
    fn scan(head: &[u8]) -> Head {
        let mut h = Head { length: Length::Missing, has_type: false, call_id: None };
        // Skip the start line.
        let Some(first) = memchr::memmem::find(head, b"\r\n") else { return h };
        let mut at = first + 2;
        while at < head.len() {
            let mut end = field_end(head, at);
            let field = &head[at..end];
            if field.is_empty() {
                break;
            }
            if let Some(colon) = memchr::memchr(b':', field) {
                let name = trim_ws(&field[..colon]);
                let (vs, ve) = trim_lws(head, at + colon + 1, end);
                h.field(name, head, vs, ve);
            }
            end += 2;
            at = end;
        }
        h
    }

    fn field(&mut self, name: &[u8], head: &[u8], vs: usize, ve: usize) {
        let is = |long: &[u8], short: &[u8]| name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short);
        if is(b"content-length", b"l") {
            let v = &head[vs..ve];
            let n = if !v.is_empty() && v.len() <= MAX_LENGTH_DIGITS && v.iter().all(u8::is_ascii_digit) {
                v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'))
            } else {
                self.length = Length::Bad;
                return;
            };
            self.length = match self.length {
                Length::Missing => Length::Is(n),
                Length::Is(m) if m == n => Length::Is(n),
                _ => Length::Bad,
            };
        } else if is(b"content-type", b"c") {
            self.has_type = true;
        } else if is(b"call-id", b"i") && self.call_id.is_none() {
            self.call_id = Some((vs, ve));
        }
    }
}

/// End of the field starting at `at`: the CRLF not followed by SP/HT.
fn field_end(head: &[u8], at: usize) -> usize {
    let mut from = at;
    loop {
        match memchr::memmem::find(&head[from..], b"\r\n") {
            Some(i) if matches!(head.get(from + i + 2), Some(b' ' | b'\t')) => from += i + 2,
            Some(i) => return from + i,
            None => return head.len(),
        }
    }
}

fn trim_ws(s: &[u8]) -> &[u8] {
    let a = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let b = s.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(a, |i| i + 1);
    &s[a..b.max(a)]
}

fn trim_lws(buf: &[u8], mut a: usize, mut b: usize) -> (usize, usize) {
    let lws = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    while a < b && lws(buf[a]) {
        a += 1;
    }
    while b > a && lws(buf[b - 1]) {
        b -= 1;
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
Call-ID: abc@192.0.2.1\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 5\r\n\r\nv=0\r\n";

    /// Every frame of `stream`, fed in pieces of `step` bytes, as the
    /// driver would: consume a frame's length, stop at Fatal.
    fn frames(stream: &[u8], step: usize, max: usize) -> Vec<(Frame, Vec<u8>)> {
        let mut f = Framer::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in stream.chunks(step.max(1)) {
            buf.extend_from_slice(chunk);
            loop {
                let frame = f.next(&buf);
                let len = match frame {
                    Frame::NeedMore => break,
                    Frame::Ping { len }
                    | Frame::Skip { len }
                    | Frame::Message { len, .. }
                    | Frame::NoLength { len } => len,
                    Frame::Fatal { .. } => {
                        out.push((frame, buf.clone()));
                        return out;
                    }
                };
                out.push((frame, buf[..len].to_vec()));
                buf.drain(..len);
            }
        }
        out
    }

    #[test]
    fn messages_with_content_length_in_any_split() {
        let mut stream = INVITE.to_vec();
        stream.extend_from_slice(INVITE);
        for step in [1, 2, 3, 7, 64, stream.len()] {
            let got = frames(&stream, step, 4096);
            assert_eq!(got.len(), 2, "step {step}");
            for (frame, bytes) in &got {
                assert_eq!(bytes, INVITE);
                let Frame::Message { call_id: Some((a, b)), .. } = frame else { panic!("{frame:?}") };
                assert_eq!(&bytes[*a..*b], b"abc@192.0.2.1");
            }
        }
    }

    #[test]
    fn crlf_ping_and_pong() {
        let got = frames(b"\r\n\r\n\r\n", 1, 4096);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [Frame::Ping { len: 4 }]);
        // A pong (lone CRLF) before a message is skipped.
        let mut s = b"\r\n".to_vec();
        s.extend_from_slice(INVITE);
        let got = frames(&s, 5, 4096);
        assert_eq!(got[0].0, Frame::Skip { len: 2 });
        assert!(matches!(got[1].0, Frame::Message { len, .. } if len == INVITE.len()));
    }

    #[test]
    fn compact_length_folded_and_case_insensitive() {
        let m = b"OPTIONS sip:a@b SIP/2.0\r\ni: x\r\nl:\r\n  3\r\n\r\nabcOPTIONS";
        let got = frames(m, 4, 4096);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, Frame::Message { len: m.len() - 7, call_id: Some((28, 29)) });
        let m = b"OPTIONS sip:a@b SIP/2.0\r\nCONTENT-length : 0\r\n\r\n";
        assert!(matches!(frames(m, 100, 4096)[0].0, Frame::Message { .. }));
    }

    #[test]
    fn missing_length_without_body_is_answered_and_framing_goes_on() {
        let head = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: q\r\n\r\n";
        let mut s = head.to_vec();
        s.extend_from_slice(INVITE);
        let got = frames(&s, 3, 4096);
        assert_eq!(got[0].0, Frame::NoLength { len: head.len() });
        assert!(matches!(got[1].0, Frame::Message { .. }));
    }

    #[test]
    fn missing_length_with_body_bad_or_conflicting_length_is_fatal() {
        let with_type = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Type: text/plain\r\n\r\nhello";
        let got = frames(with_type, 1000, 4096);
        assert_eq!(got[0].0, Frame::Fatal { error: FrameError::NoLength, head: Some(with_type.len() - 5) });
        for bad in [
            &b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 1x\r\n\r\n"[..],
            b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab",
            b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
            b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            let got = frames(bad, 1000, 4096);
            assert!(matches!(got[0].0, Frame::Fatal { error: FrameError::BadLength, head: Some(_) }), "{got:?}");
        }
        // Two equal values are one length.
        let same = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2\r\nl: 2\r\n\r\nab";
        assert!(matches!(frames(same, 1000, 4096)[0].0, Frame::Message { .. }));
    }

    #[test]
    fn oversized_head_or_body_is_fatal() {
        // The body would take the message over the limit: refused from its head.
        let big = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n";
        let got = frames(big, 7, 1024);
        assert_eq!(got[0].0, Frame::Fatal { error: FrameError::TooLarge, head: Some(big.len()) });
        // A head that never ends: refused once it is past the limit.
        let endless = [b'a'; 3000];
        let got = frames(&endless, 100, 1024);
        assert_eq!(got[0].0, Frame::Fatal { error: FrameError::TooLarge, head: None });
        // Exactly at the limit is fine.
        let got = frames(INVITE, 10, INVITE.len());
        assert!(matches!(got[0].0, Frame::Message { .. }));
        let got = frames(INVITE, 10, INVITE.len() - 1);
        assert!(matches!(got[0].0, Frame::Fatal { error: FrameError::TooLarge, .. }));
    }
}
