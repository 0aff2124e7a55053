//! The transport in our Via when a request goes to a backend over a
//! connection: RFC 3261 §18.2.2 sends the response over the connection the
//! request came on only when the Via's sent-protocol is a reliable one, so
//! `SIP/2.0/UDP` becomes `SIP/2.0/TCP` or `SIP/2.0/TLS`. The three names have
//! the same length: the change is in place, nothing moves. Our branch MAC
//! covers the next Via and the Call-ID, not our own sent-protocol, so the
//! response verifies whichever transport carried the request.

/// The transport a backend is reached over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViaTransport {
    Udp,
    Tcp,
    Tls,
}

impl ViaTransport {
    pub fn token(self) -> &'static [u8; 3] {
        match self {
            ViaTransport::Udp => b"UDP",
            ViaTransport::Tcp => b"TCP",
            ViaTransport::Tls => b"TLS",
        }
    }
}

const OUR_VIA: &[u8] = b"Via: SIP/2.0/";

/// Sets the transport of our Via in `out`, a request as `Proxy::handle`
/// forwarded it (our Via is the first header line). False, with `out`
/// unchanged, when `out` is not such a request.
pub fn set(out: &mut [u8], t: ViaTransport) -> bool {
    let Some(line) = memchr::memmem::find(out, b"\r\n").map(|i| i + 2) else { return false };
    let at = line + OUR_VIA.len();
    match out.get(line..at + 3) {
        Some(v) if v.starts_with(OUR_VIA) && v[OUR_VIA.len()..].eq_ignore_ascii_case(b"UDP") => {
            out[at..at + 3].copy_from_slice(t.token());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_only_our_via_in_place() {
        let req = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKslb1\r\n\
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";
        let mut out = req.to_vec();
        assert!(set(&mut out, ViaTransport::Tcp));
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(s.contains("Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKslb1\r\n"), "{s}");
        assert!(s.contains("Via: SIP/2.0/UDP 192.0.2.1;"), "{s}");
        assert_eq!(out.len(), req.len());
        assert!(!set(&mut out, ViaTransport::Tls), "only a UDP Via is ours to change");
        let mut resp = b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n".to_vec();
        assert!(!set(&mut resp, ViaTransport::Tcp));
        assert!(!set(&mut b"INVITE".to_vec(), ViaTransport::Tcp));
    }
}
