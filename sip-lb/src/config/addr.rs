//! SIP socket addresses as written in the config file and on the command line.

use std::net::{IpAddr, SocketAddr};

/// The port a bare IP address gets (RFC 3261 §19.1.2, `sip:` default).
pub const DEFAULT_SIP_PORT: u16 = 5060;

/// Parses `ip:port`, `[v6]:port`, or a bare IP (`10.0.0.1`, `::1`, `[::1]`),
/// which gets port 5060. Host names are not accepted: a load balancer that
/// resolved names once at start would silently keep stale addresses.
pub fn parse_sip_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let bare = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(t);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_SIP_PORT));
    }
    Err(format!("invalid socket address {s:?} (expected ip:port, [v6]:port or a bare ip for port {DEFAULT_SIP_PORT})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let a = |s: &str| parse_sip_addr(s).unwrap().to_string();
        assert_eq!(a("10.0.0.1:5080"), "10.0.0.1:5080");
        assert_eq!(a("10.0.0.1"), "10.0.0.1:5060");
        assert_eq!(a("[::1]:5070"), "[::1]:5070");
        assert_eq!(a("::1"), "[::1]:5060");
        assert_eq!(a("[2001:db8::1]"), "[2001:db8::1]:5060");
        assert_eq!(a(" 127.0.0.1:1 "), "127.0.0.1:1");
        for bad in ["", "nonsense", "10.0.0.x:5060", "10.0.0.1:", "10.0.0.1:70000", "host:5060", "::1:5060x"] {
            assert!(parse_sip_addr(bad).is_err(), "{bad}");
        }
    }
}
