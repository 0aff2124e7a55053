//! Splitting a header value on the commas that join several values
//! (RFC 3261 §7.3.1), skipping commas inside quoted strings and `<...>`.

use super::span::Span;
use super::text::trim;

/// Iterator over the comma-separated values of `span` in `buf`, each trimmed.
/// Empty values (`a,,b`) are skipped.
pub struct Values<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

/// The values of one header field.
pub fn values(buf: &[u8], span: Span) -> Values<'_> {
    Values { buf, pos: span.start(), end: span.end().min(buf.len()) }
}

/// Index of the first comma at or after `pos` that separates values, or `end`.
pub fn value_end(buf: &[u8], mut pos: usize, end: usize) -> usize {
    let mut quoted = false;
    let mut angle = false;
    while pos < end {
        match buf.get(pos) {
            Some(b'\\') if quoted => pos += 1,
            Some(b'"') => quoted = !quoted,
            Some(b'<') if !quoted => angle = true,
            Some(b'>') if !quoted => angle = false,
            Some(b',') if !quoted && !angle => return pos,
            None => return end,
            _ => {}
        }
        pos += 1;
    }
    end
}

impl Iterator for Values<'_> {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        while self.pos < self.end {
            let stop = value_end(self.buf, self.pos, self.end);
            let (a, b) = trim(self.buf, self.pos, stop);
            self.pos = stop + 1;
            if a < b {
                return Some(Span::new(a, b));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &[u8]) -> Vec<&[u8]> {
        values(s, Span::new(0, s.len())).map(|v| v.of(s)).collect()
    }

    #[test]
    fn splits_outside_quotes_and_angles() {
        assert_eq!(
            split(b"<sip:a@b;x=\"1,2\">, \"Doe, J\" <sip:c@d>,sip:e"),
            vec![&b"<sip:a@b;x=\"1,2\">"[..], b"\"Doe, J\" <sip:c@d>", b"sip:e"]
        );
        assert_eq!(
            split(b"SIP/2.0/UDP a;branch=1 ,\r\n SIP/2.0/UDP b"),
            vec![&b"SIP/2.0/UDP a;branch=1"[..], b"SIP/2.0/UDP b"]
        );
        assert_eq!(split(b" , ,"), Vec::<&[u8]>::new());
        assert_eq!(split(b"\"a\\\",b\",c"), vec![&b"\"a\\\",b\""[..], b"c"]);
    }
}
