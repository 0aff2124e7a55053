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
        // Bucket by length so a header costs at most a couple of compares.
        const TABLE: &[(&[u8], HeaderName)] = &[
            (b"via", Via),
            (b"from", From),
            (b"to", To),
            (b"call-id", CallId),
            (b"cseq", CSeq),
            (b"max-forwards", MaxForwards),
            (b"content-length", ContentLength),
            (b"content-type", ContentType),
            (b"route", Route),
            (b"record-route", RecordRoute),
            (b"proxy-require", ProxyRequire),
            (b"require", Require),
            (b"supported", Supported),
            (b"contact", Contact),
            (b"subject", Subject),
            (b"content-encoding", ContentEncoding),
            (b"event", Event),
            (b"allow-events", AllowEvents),
            (b"refer-to", ReferTo),
        ];
        for (n, h) in TABLE {
            if n.len() == name.len() && n.eq_ignore_ascii_case(name) {
                return *h;
            }
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
