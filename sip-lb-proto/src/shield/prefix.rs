//! Sets of IPv4/IPv6 prefixes (block and allow lists) with an allocation-free
//! longest-prefix membership test: per family, one sorted list of network
//! addresses for each prefix length present.

use std::fmt;
use std::net::IpAddr;

/// An IP prefix, `addr/len`, with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// Network address as a 128-bit number (IPv4 in the low 32 bits).
    net: u128,
    len: u8,
    v6: bool,
}

impl Prefix {
    /// `addr/len`; host bits are cleared. `None` if `len` is too long.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let (bits, v6, width) = key(addr);
        (len <= width).then(|| Prefix { net: bits & mask(len, width), len, v6 })
    }

    /// `IP` (a host prefix) or `IP/LEN`, IPv6 with or without brackets.
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let s = s.trim();
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let ip: IpAddr = ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or prefix"))?;
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => width,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= width)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={width}"))?,
        };
        Ok(Prefix::new(ip, len).expect("length checked"))
    }

    /// The prefix length in bits.
    pub fn bits(&self) -> u8 {
        self.len
    }

    /// The network address (host bits clear); IPv4 for an IPv4-mapped one.
    pub fn addr(&self) -> IpAddr {
        if self.v6 {
            std::net::Ipv6Addr::from(self.net).into()
        } else {
            std::net::Ipv4Addr::from(self.net as u32).into()
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let (bits, v6, width) = key(addr);
        v6 == self.v6 && bits & mask(self.len, width) == self.net
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

/// IPv4-mapped IPv6 sources (`::ffff:a.b.c.d`, a dual-stack socket's view of
/// an IPv4 peer) are matched as the IPv4 address they are.
fn key(addr: IpAddr) -> (u128, bool, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), false, 32),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (u128::from(u32::from(v4)), false, 32),
            None => (u128::from(a), true, 128),
        },
    }
}

fn mask(len: u8, width: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let all = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
        all & !((1u128 << (width - len)) - 1)
    }
}

/// A set of prefixes of both families.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixSet {
    /// (v6, len) -> sorted network addresses; longest lengths first.
    by_len: Vec<(bool, u8, Vec<u128>)>,
    prefixes: Vec<Prefix>,
}

impl PrefixSet {
    pub fn new(prefixes: impl IntoIterator<Item = Prefix>) -> PrefixSet {
        let mut all: Vec<Prefix> = prefixes.into_iter().collect();
        all.sort_unstable();
        all.dedup();
        let mut by_len: Vec<(bool, u8, Vec<u128>)> = Vec::new();
        for p in &all {
            match by_len.iter_mut().find(|(v6, len, _)| *v6 == p.v6 && *len == p.len) {
                Some((_, _, nets)) => nets.push(p.net),
                None => by_len.push((p.v6, p.len, vec![p.net])),
            }
        }
        for (_, _, nets) in &mut by_len {
            nets.sort_unstable();
        }
        by_len.sort_unstable_by_key(|e| std::cmp::Reverse(e.1));
        PrefixSet { by_len, prefixes: all }
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The prefixes, sorted.
    pub fn prefixes(&self) -> &[Prefix] {
        &self.prefixes
    }

    /// The longest prefix of the set that contains `addr`.
    pub fn longest_match(&self, addr: IpAddr) -> Option<Prefix> {
        let (bits, v6, width) = key(addr);
        self.by_len.iter().filter(|(f, _, _)| *f == v6).find_map(|(_, len, nets)| {
            let net = bits & mask(*len, width);
            nets.binary_search(&net).ok().map(|_| Prefix { net, len: *len, v6 })
        })
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.longest_match(addr).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(list: &[&str]) -> PrefixSet {
        PrefixSet::new(list.iter().map(|s| Prefix::parse(s).unwrap()))
    }

    #[test]
    fn parses_hosts_and_prefixes_and_clears_host_bits() {
        assert_eq!(Prefix::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Prefix::parse("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(Prefix::parse("[2001:db8::1]/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(Prefix::parse("0.0.0.0/0").unwrap().bits(), 0);
        assert!(Prefix::parse("10.0.0.0/33").is_err());
        assert!(Prefix::parse("2001:db8::/129").is_err());
        assert!(Prefix::parse("example.com").is_err());
        assert!(Prefix::parse("10.0.0.0/x").is_err());
    }

    #[test]
    fn longest_match_over_both_families() {
        let s = set(&["10.0.0.0/8", "10.1.0.0/16", "192.0.2.1", "2001:db8::/32", "2001:db8:1::/48"]);
        assert_eq!(s.longest_match(ip("10.1.2.3")).unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(s.longest_match(ip("10.2.2.3")).unwrap().to_string(), "10.0.0.0/8");
        assert!(s.contains(ip("192.0.2.1")));
        assert!(!s.contains(ip("192.0.2.2")));
        assert!(!s.contains(ip("11.0.0.1")));
        assert_eq!(s.longest_match(ip("2001:db8:1::5")).unwrap().to_string(), "2001:db8:1::/48");
        assert_eq!(s.longest_match(ip("2001:db8:2::5")).unwrap().to_string(), "2001:db8::/32");
        assert!(!s.contains(ip("2001:db9::1")));
        // An IPv4-mapped IPv6 source is its IPv4 address.
        assert!(s.contains(ip("::ffff:10.9.9.9")));
        // IPv4 prefixes never match IPv6 addresses with the same bits.
        assert!(!set(&["0.0.0.0/0"]).contains(ip("2001:db8::1")));
        assert!(set(&["0.0.0.0/0"]).contains(ip("203.0.113.9")));
        assert!(set(&["::/0"]).contains(ip("2001:db8::1")));
        assert!(!PrefixSet::default().contains(ip("10.0.0.1")));
    }

    /// The set agrees with a plain scan of its prefixes on random addresses.
    #[test]
    fn agrees_with_a_linear_scan() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let prefixes: Vec<Prefix> = (0..200)
            .map(|i| {
                let r = next();
                if i % 2 == 0 {
                    Prefix::new(IpAddr::V4(((r >> 8) as u32 & 0x0fff_ffff).into()), (r % 33) as u8).unwrap()
                } else {
                    let a = (u128::from(next()) << 64 | u128::from(r)) & (u128::MAX >> 100);
                    Prefix::new(IpAddr::V6(a.into()), (r % 129) as u8).unwrap()
                }
            })
            .collect();
        let s = PrefixSet::new(prefixes.iter().copied());
        for i in 0..20_000 {
            let r = next();
            let addr = if i % 2 == 0 {
                IpAddr::V4(((r >> 8) as u32 & 0x0fff_ffff).into())
            } else {
                IpAddr::V6(((u128::from(next()) << 64 | u128::from(r)) & (u128::MAX >> 100)).into())
            };
            let want = prefixes.iter().filter(|p| p.contains(addr)).map(|p| p.bits()).max();
            assert_eq!(s.longest_match(addr).map(|p| p.bits()), want, "{addr}");
        }
    }
}
