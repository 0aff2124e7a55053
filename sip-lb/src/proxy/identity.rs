//! Who "we" are: the address we put in our Via, and every address that also
//! means us in a Route, a Request-URI or a response's top Via.

use crate::sip::text::same_ip;
use std::net::{IpAddr, SocketAddr};

/// The proxy's own addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Own Via sent-by, e.g. `127.0.0.1:5060`.
    pub advertise: SocketAddr,
    /// Other addresses that also mean us (listen addresses). Unspecified ones
    /// (`0.0.0.0`) are ignored: they cannot be compared with a URI host.
    pub local: Vec<SocketAddr>,
}

impl Identity {
    /// `ip:port` names this proxy (port already defaulted to 5060 by the caller).
    pub fn is_us(&self, ip: IpAddr, port: u16) -> bool {
        let hit = |a: &SocketAddr| a.port() == port && same_ip(a.ip(), ip) && !a.ip().is_unspecified();
        hit(&self.advertise) || self.local.iter().any(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_and_locals() {
        let id = Identity {
            advertise: "192.0.2.10:5060".parse().unwrap(),
            local: vec!["10.0.0.1:5070".parse().unwrap(), "0.0.0.0:5060".parse().unwrap()],
        };
        assert!(id.is_us("192.0.2.10".parse().unwrap(), 5060));
        assert!(id.is_us("::ffff:192.0.2.10".parse().unwrap(), 5060));
        assert!(id.is_us("10.0.0.1".parse().unwrap(), 5070));
        assert!(!id.is_us("10.0.0.1".parse().unwrap(), 5060));
        assert!(!id.is_us("0.0.0.0".parse().unwrap(), 5060));
        assert!(!id.is_us("192.0.2.11".parse().unwrap(), 5060));
    }
}
