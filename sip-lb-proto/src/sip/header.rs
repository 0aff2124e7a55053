//! Header names: case-insensitive, with the compact forms of RFC 3261 §7.3.3
//! and §20 (plus the registered ones later RFCs added). Only the headers the
//! forwarding step looks at get a variant; everything else is `Other`.

/// A recognised header name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    ContentType,
    Route,
    RecordRoute,
    ProxyRequire,
    Require,
    Supported,
    Contact,
    Subject,
    ContentEncoding,
    Event,
    AllowEvents,
    ReferTo,
    Other,
}

impl HeaderName {
    /// Classifies a header name as written (`Via`, `VIA`, `v`, ...).
    pub fn parse(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        if let [c] = name {
            return match c.to_ascii_lowercase() {
                b'v' => Via,
                b'f' => From,
                b't' => To,
                b'i' => CallId,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'm' => Contact,
                b'k' => Supported,
                b's' => Subject,
                b'e' => ContentEncoding,
                b'o' => Event,
                b'u' => AllowEvents,
                b'r' => ReferTo,
                _ => Other,
            };
        }
        // Pick the one candidate by length and first letter, then compare
        // once: a header costs one match and at most one memcmp.
        let Some(first) = name.first() else { return Other };
        let (want, h): (&[u8], HeaderName) = match (name.len(), first.to_ascii_lowercase()) {
            (2, b't') => (b"to", To),
            (3, b'v') => (b"via", Via),
            (4, b'f') => (b"from", From),
            (4, b'c') => (b"cseq", CSeq),
            (5, b'r') => (b"route", Route),
            (5, b'e') => (b"event", Event),
            (7, b'c') => (b"call-id", CallId),
            (7, b'r') => (b"require", Require),
            (7, b's') => (b"subject", Subject),
            (8, b'r') => (b"refer-to", ReferTo),
            (9, b's') => (b"supported", Supported),
            (12, b'm') => (b"max-forwards", MaxForwards),
            (12, b'c') => (b"content-type", ContentType),
            (12, b'r') => (b"record-route", RecordRoute),
            (12, b'a') => (b"allow-events", AllowEvents),
            (13, b'p') => (b"proxy-require", ProxyRequire),
            (14, b'c') => (b"content-length", ContentLength),
            (16, b'c') => (b"content-encoding", ContentEncoding),
            _ => return Other,
        };
        if name.eq_ignore_ascii_case(want) {
            return h;
        }
        // The two seven-letter c-names share a bucket.
        if name.eq_ignore_ascii_case(b"contact") {
            return Contact;
        }
        Other
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName::{self, *};

    #[test]
    fn long_and_compact_forms_any_case() {
        for (n, h) in [
            (&b"Via"[..], Via),
            (b"v", Via),
            (b"V", Via),
            (b"vIA", Via),
            (b"i", CallId),
            (b"CALL-ID", CallId),
            (b"f", From),
            (b"t", To),
            (b"m", Contact),
            (b"l", ContentLength),
            (b"c", ContentType),
            (b"k", Supported),
            (b"s", Subject),
            (b"e", ContentEncoding),
            (b"o", Event),
            (b"u", AllowEvents),
            (b"r", ReferTo),
            (b"MaX-fOrWaRdS", MaxForwards),
            (b"cseq", CSeq),
            (b"Proxy-Require", ProxyRequire),
            (b"Route", Route),
            (b"Record-Route", RecordRoute),
            (b"NewFangledHeader", Other),
            (b"x", Other),
            (b"", Other),
        ] {
            assert_eq!(HeaderName::parse(n), h, "{}", String::from_utf8_lossy(n));
        }
    }
}
