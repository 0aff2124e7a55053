//! What the operator lets through (RFC 3261 §16.3 steps 2 and 5): which
//! Request-URI schemes (416 otherwise) and which Proxy-Require options (420
//! otherwise). The balancer never routes on the Request-URI, so by default
//! every well-formed absolute URI passes (sip, sips, tel, urn:service:sos,
//! im, pres, ...); `Proxy-Require` options pass only when listed (IMS
//! `sec-agree` is meant for the P-CSCF behind the balancer).

/// Operator policy for requests, from the `[sip]` config section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Accepted Request-URI schemes, lower case; `None` accepts all.
    pub schemes: Option<Vec<Box<[u8]>>>,
    /// Proxy-Require option tags that pass (compared case-insensitively).
    pub proxy_require: Vec<Box<[u8]>>,
    /// Our Record-Route and Path on datagrams' requests (`flow::routing`).
    pub routing: crate::flow::routing::Routing,
}

impl Policy {
    pub fn accepts_scheme(&self, scheme: &[u8]) -> bool {
        self.schemes.as_ref().is_none_or(|l| l.iter().any(|s| s.eq_ignore_ascii_case(scheme)))
    }

    pub fn accepts_option(&self, option: &[u8]) -> bool {
        self.proxy_require.iter().any(|o| o.eq_ignore_ascii_case(option))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_accept_every_scheme_and_no_option() {
        let p = Policy::default();
        for s in [&b"sip"[..], b"urn", b"im", b"pres", b"tel", b"x-anything"] {
            assert!(p.accepts_scheme(s));
        }
        assert!(!p.accepts_option(b"sec-agree"));
        let p = Policy {
            schemes: Some(vec![b"sip"[..].into(), b"tel"[..].into()]),
            proxy_require: vec![b"sec-agree"[..].into()],
            ..Policy::default()
        };
        assert!(p.accepts_scheme(b"SIP") && p.accepts_scheme(b"tel") && !p.accepts_scheme(b"urn"));
        assert!(p.accepts_option(b"Sec-Agree") && !p.accepts_option(b"100rel"));
    }
}
