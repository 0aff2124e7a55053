//! Who "we" are: our listen addresses, each with the address we advertise
//! in the Via of requests that arrive on it, and the other names that mean
//! us (`[sip] aliases`). Every "is this us?" question (a Route, the
//! Request-URI, a response's top Via) is answered here.

use crate::sip::text::{parse_ip, same_ip};
use std::net::{IpAddr, SocketAddr};

/// Port assumed for a sip/sips URI or Via without one (UDP, §19.1.2).
const DEFAULT_PORT: u16 = 5060;

/// One listen address and the address written in our Via for requests that
/// arrive on it (RFC 3581 §4: responses leave from the address the client
/// sent to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The bound socket address (may be a wildcard).
    pub local: SocketAddr,
    /// Our Via sent-by, e.g. `192.0.2.10:5060`; never a wildcard.
    pub advertise: SocketAddr,
}

impl Listener {
    /// The same address as socket and in Via.
    pub fn at(addr: SocketAddr) -> Listener {
        Listener { local: addr, advertise: addr }
    }

    fn is_v4(&self) -> bool {
        is_v4(self.local)
    }
}

/// Another name of ours: a host name (compared case-insensitively) or an IP
/// literal, with or without a port. Without a port it matches a URI with no
/// port or with the port of one of our listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alias {
    /// Lower case; IPv6 without brackets.
    host: Box<[u8]>,
    ip: Option<IpAddr>,
    port: Option<u16>,
}

impl Alias {
    pub fn new(host: &str, port: Option<u16>) -> Alias {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        Alias { ip: host.parse().ok(), host: host.into_bytes().into(), port }
    }
}

/// The proxy's own addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// In the order of the data plane's sockets: `Action::Forward::from`
    /// indexes this list.
    pub listeners: Vec<Listener>,
    pub aliases: Vec<Alias>,
}

impl Identity {
    /// One listener whose advertised address is also its socket address.
    pub fn single(addr: SocketAddr) -> Identity {
        Identity { listeners: vec![Listener::at(addr)], aliases: Vec::new() }
    }

    /// Does a sip/sips URI or Via host (as written, IPv6 in brackets) with
    /// this port name us?
    pub fn is_us(&self, host: &[u8], port: Option<u16>) -> bool {
        match parse_ip(host) {
            Some(ip) => self.is_our_ip(ip, port.unwrap_or(DEFAULT_PORT)) || self.alias_ip(ip, port),
            None => self
                .aliases
                .iter()
                .any(|a| a.ip.is_none() && a.host.eq_ignore_ascii_case(host) && self.alias_port(a, port)),
        }
    }

    fn is_our_ip(&self, ip: IpAddr, port: u16) -> bool {
        let hit = |a: SocketAddr| a.port() == port && !a.ip().is_unspecified() && same_ip(a.ip(), ip);
        self.listeners.iter().any(|l| hit(l.advertise) || hit(l.local))
    }

    fn alias_ip(&self, ip: IpAddr, port: Option<u16>) -> bool {
        self.aliases.iter().any(|a| a.ip.is_some_and(|x| same_ip(x, ip)) && self.alias_port(a, port))
    }

    fn alias_port(&self, a: &Alias, port: Option<u16>) -> bool {
        match (a.port, port) {
            (Some(p), q) => p == q.unwrap_or(DEFAULT_PORT),
            (None, None) => true,
            (None, Some(q)) => {
                q == DEFAULT_PORT || self.listeners.iter().any(|l| l.local.port() == q || l.advertise.port() == q)
            }
        }
    }

    /// The listener whose advertised address a Via sent-by names (the
    /// socket a response to our Via leaves from).
    pub fn listener_named(&self, host: &[u8], port: Option<u16>) -> Option<usize> {
        let ip = parse_ip(host)?;
        let port = port.unwrap_or(DEFAULT_PORT);
        self.listeners.iter().position(|l| l.advertise.port() == port && same_ip(l.advertise.ip(), ip))
    }

    /// The listener to forward to `to` from: the one the request arrived
    /// on if it has `to`'s address family, else the first that has.
    pub fn listener_towards(&self, arrived_on: usize, to: SocketAddr) -> Option<usize> {
        let v4 = is_v4(to);
        match self.listeners.get(arrived_on) {
            Some(l) if l.is_v4() == v4 => Some(arrived_on),
            _ => self.listeners.iter().position(|l| l.is_v4() == v4),
        }
    }
}

fn is_v4(a: SocketAddr) -> bool {
    a.ip().to_canonical().is_ipv4()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            listeners: vec![
                Listener { local: "0.0.0.0:5060".parse().unwrap(), advertise: "192.0.2.10:5060".parse().unwrap() },
                Listener::at("10.0.0.1:5070".parse().unwrap()),
                Listener::at("[2001:db8::10]:5060".parse().unwrap()),
            ],
            aliases: vec![Alias::new("LB.example.net", None), Alias::new("198.51.100.7", Some(5080))],
        }
    }

    #[test]
    fn listen_advertise_and_alias_addresses() {
        let id = id();
        assert!(id.is_us(b"192.0.2.10", None));
        assert!(id.is_us(b"192.0.2.10", Some(5060)));
        assert!(id.is_us(b"::ffff:192.0.2.10", Some(5060)));
        assert!(id.is_us(b"10.0.0.1", Some(5070)));
        assert!(id.is_us(b"[2001:db8::10]", None));
        assert!(!id.is_us(b"10.0.0.1", Some(5060)));
        assert!(!id.is_us(b"0.0.0.0", Some(5060)));
        assert!(!id.is_us(b"192.0.2.11", Some(5060)));
        // Host-name alias: any case, no port or one of our ports.
        assert!(id.is_us(b"lb.EXAMPLE.net", None));
        assert!(id.is_us(b"lb.example.net", Some(5070)));
        assert!(!id.is_us(b"lb.example.net", Some(6000)));
        assert!(!id.is_us(b"other.example.net", None));
        // IP alias with its own port.
        assert!(id.is_us(b"198.51.100.7", Some(5080)));
        assert!(!id.is_us(b"198.51.100.7", None));
    }

    #[test]
    fn listener_for_responses_and_for_each_family() {
        let id = id();
        assert_eq!(id.listener_named(b"192.0.2.10", Some(5060)), Some(0));
        assert_eq!(id.listener_named(b"10.0.0.1", Some(5070)), Some(1));
        assert_eq!(id.listener_named(b"[2001:db8::10]", None), Some(2));
        assert_eq!(id.listener_named(b"lb.example.net", None), None);
        assert_eq!(id.listener_towards(1, "10.9.9.9:5060".parse().unwrap()), Some(1));
        assert_eq!(id.listener_towards(1, "[2001:db8::99]:5060".parse().unwrap()), Some(2));
        assert_eq!(id.listener_towards(2, "10.9.9.9:5060".parse().unwrap()), Some(0));
        let v4_only = Identity::single("127.0.0.1:5060".parse().unwrap());
        assert_eq!(v4_only.listener_towards(0, "[::1]:5060".parse().unwrap()), None);
    }
}
