//! Header names: case-insensitive, with the compact forms of RFC 3261 §7.3.3
//! and §20 (plus the registered ones later RFCs added). Only the headers the
//! forwarding step looks at get a variant; everything else is `Other`.

use super::text::is_token;

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
        // Every name we know is letters and `-`, so a name with a byte that
        // is not a token character is none of them (and `classify` may
        // assume token bytes).
        if !name.iter().all(|&b| is_token(b)) {
            return HeaderName::Other;
        }
        HeaderName::classify(name, 0, name.len())
    }

    /// Classifies the token `buf[at..at + len]` (the caller has checked that
    /// it is token characters: for those, OR-ing 0x20 into each byte folds
    /// case exactly on letters and leaves `-` and digits alone; only CR
    /// would fold onto `-`). The name, masked to its length and folded, is
    /// compared as one 128-bit word: one load and a couple of compares per
    /// header instead of byte loops.
    #[inline]
    pub(crate) fn classify(buf: &[u8], at: usize, len: usize) -> HeaderName {
        use HeaderName::*;
        if len == 0 || len > 16 {
            return Other;
        }
        let raw = match buf.get(at..at + 16) {
            Some(b) => {
                let mut w = [0u8; 16];
                w.copy_from_slice(b);
                u128::from_le_bytes(w)
            }
            // Near the end of the datagram: copy what there is.
            None => {
                let mut w = [0u8; 16];
                for (d, s) in w.iter_mut().zip(buf.iter().skip(at).take(len)) {
                    *d = *s;
                }
                u128::from_le_bytes(w)
            }
        };
        HeaderName::classify_word(raw, len)
    }

    /// [`HeaderName::classify`] of a name of `len` (1 to 16) token
    /// characters whose bytes are the low bytes of `raw` (little endian;
    /// the bytes above `len` are ignored).
    #[inline(always)]
    pub(crate) fn classify_word(raw: u128, len: usize) -> HeaderName {
        use HeaderName::*;
        let Some(&mask) = MASK.get(len) else { return Other };
        let w = (raw | FOLD) & mask;
        match len {
            1 => match w as u8 {
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
            },
            2 if w == const { word(b"to") } => To,
            3 if w == const { word(b"via") } => Via,
            4 if w == const { word(b"from") } => From,
            4 if w == const { word(b"cseq") } => CSeq,
            5 if w == const { word(b"route") } => Route,
            5 if w == const { word(b"event") } => Event,
            7 if w == const { word(b"call-id") } => CallId,
            7 if w == const { word(b"contact") } => Contact,
            7 if w == const { word(b"require") } => Require,
            7 if w == const { word(b"subject") } => Subject,
            8 if w == const { word(b"refer-to") } => ReferTo,
            9 if w == const { word(b"supported") } => Supported,
            12 if w == const { word(b"max-forwards") } => MaxForwards,
            12 if w == const { word(b"content-type") } => ContentType,
            12 if w == const { word(b"record-route") } => RecordRoute,
            12 if w == const { word(b"allow-events") } => AllowEvents,
            13 if w == const { word(b"proxy-require") } => ProxyRequire,
            14 if w == const { word(b"content-length") } => ContentLength,
            16 if w == const { word(b"content-encoding") } => ContentEncoding,
            _ => Other,
        }
    }
}

/// 0x20 in every byte: the case-fold bit.
const FOLD: u128 = u128::from_le_bytes([0x20; 16]);

/// `MASK[n]`: the low `n` bytes of a word (a table: a variable 128-bit
/// shift costs more than the load).
static MASK: [u128; 17] = {
    let mut m = [0u128; 17];
    let mut i = 1;
    while i < 16 {
        m[i] = (1u128 << (8 * i)) - 1;
        i += 1;
    }
    m[16] = u128::MAX;
    m
};

/// A lowercase name (at most 16 bytes) as the little-endian word `classify`
/// compares with.
const fn word(name: &[u8]) -> u128 {
    let mut w = 0u128;
    let mut i = name.len();
    while i > 0 {
        i -= 1;
        w = (w << 8) | name[i] as u128;
    }
    w
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

    #[test]
    fn only_token_names_match_and_bytes_after_the_name_do_not_count() {
        // CR ORed with 0x20 is `-`: the public parse must not fold it.
        assert_eq!(HeaderName::parse(b"call\rid"), Other);
        assert_eq!(HeaderName::parse(b"Via "), Other);
        assert_eq!(HeaderName::parse(b"_ia"), Other);
        assert_eq!(HeaderName::parse(b"Content-Encoding"), ContentEncoding);
        assert_eq!(HeaderName::parse(b"Content-Encodings"), Other);
        // In a datagram: the word is loaded past the name and masked.
        let line = b"Call-ID: a84b4c76e66710@pc33.atlanta.com";
        assert_eq!(HeaderName::classify(line, 0, 7), CallId);
        assert_eq!(HeaderName::classify(line, 0, 4), Other);
        // Too close to the end of the buffer for one 16-byte load.
        assert_eq!(HeaderName::classify(b"xxTo", 2, 2), To);
        assert_eq!(HeaderName::classify(b"l", 0, 1), ContentLength);
        assert_eq!(HeaderName::classify(b"l", 0, 0), Other);
    }
}
