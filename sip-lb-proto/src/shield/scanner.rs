//! Known SIP scanners by their User-Agent (SIPVicious' "friendly-scanner",
//! sipcli, ...): a request carrying one is not a customer's.

/// Matched case-insensitively anywhere in the User-Agent value.
pub const DEFAULT_SCANNERS: [&str; 5] = ["friendly-scanner", "sipvicious", "sipcli", "vaxsipuseragent", "sip-scan"];

/// The value of the first User-Agent header of the datagram's header block
/// (no compact form exists), without parsing the rest.
pub fn user_agent(datagram: &[u8]) -> Option<&[u8]> {
    const NAME: &[u8] = b"user-agent";
    let mut rest = datagram;
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        rest = &rest[nl + 1..];
        if rest.first().is_none_or(|&b| b == b'\r' || b == b'\n') {
            return None; // end of the header block
        }
        if rest.len() > NAME.len() && rest[..NAME.len()].eq_ignore_ascii_case(NAME) {
            let after = rest[NAME.len()..].iter().position(|&b| b != b' ' && b != b'\t')?;
            if rest[NAME.len() + after] != b':' {
                continue;
            }
            let value = &rest[NAME.len() + after + 1..];
            let end = memchr::memchr2(b'\r', b'\n', value).unwrap_or(value.len());
            return Some(value[..end].trim_ascii());
        }
    }
    None
}

/// Whether `ua` contains one of `patterns` (lower-case), ignoring case.
pub fn is_scanner(ua: &[u8], patterns: &[Box<[u8]>]) -> bool {
    patterns.iter().any(|p| !p.is_empty() && ua.windows(p.len()).any(|w| w.eq_ignore_ascii_case(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<Box<[u8]>> {
        DEFAULT_SCANNERS.iter().map(|s| s.as_bytes().into()).collect()
    }

    #[test]
    fn finds_the_user_agent_of_the_header_block_only() {
        let m = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060\r\nuser-agent :  friendly-scanner \r\nCall-ID: x\r\n\r\n";
        assert_eq!(user_agent(m), Some(&b"friendly-scanner"[..]));
        let in_body = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\nUser-Agent: friendly-scanner\r\n";
        assert_eq!(user_agent(in_body), None);
        let lookalike = b"INVITE sip:a@b SIP/2.0\r\nUser-Agents: x\r\nUser-Agent: baresip\r\n\r\n";
        assert_eq!(user_agent(lookalike), Some(&b"baresip"[..]));
        assert_eq!(user_agent(b"INVITE sip:a@b SIP/2.0\r\nUser-Agent"), None);
    }

    #[test]
    fn knows_the_usual_scanners() {
        let p = defaults();
        for ua in ["friendly-scanner", "SIPVicious 0.3.4", "sipcli/v1.8", "VaxSIPUserAgent/3.1", "sip-scan"] {
            assert!(is_scanner(ua.as_bytes(), &p), "{ua}");
        }
        for ua in ["baresip v1.0.0", "Linphone/5.2", "Asterisk PBX 20", ""] {
            assert!(!is_scanner(ua.as_bytes(), &p), "{ua}");
        }
    }
}
