//! The veth checksum trap (issue 14): a local sender on a veth leaves the UDP
//! checksum to offload (CHECKSUM_PARTIAL); once XDP handles the frame the
//! stack sees a wrong checksum and drops the datagram, counted only in the
//! kernel's `Udp: InCsumErrors`. Tried as a new user would, every datagram
//! vanished without a word. The control plane watches that counter while an
//! XDP program is attached and says once what it means and how to fix it.

/// `Udp: InCsumErrors` from the text of /proc/net/snmp.
pub fn udp_in_csum_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "InCsumErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// What the operator is told, once.
pub const WARNING: &str = "the kernel dropped UDP datagrams with bad checksums (Udp InCsumErrors rose) while XDP is \
attached: datagrams sent from a local socket over a veth carry a partial checksum that offload was to fill in, \
and after XDP the stack takes it for a bad one. Real NICs deliver full checksums; for a veth (tests, containers on \
the same host) turn off transmit checksum offload on the sending end: `ethtool -K <peer> tx off`";

/// Remembers the counter between readings; warns once when it rises.
#[derive(Debug, Default)]
pub struct CsumWatch {
    last: Option<u64>,
    warned: bool,
}

impl CsumWatch {
    /// A new reading; true when the warning should be given now (the first
    /// rise seen while XDP is attached).
    pub fn observe(&mut self, current: u64, xdp_attached: bool) -> bool {
        let rose = self.last.is_some_and(|l| current > l);
        self.last = Some(current);
        if rose && xdp_attached && !self.warned {
            self.warned = true;
            return true;
        }
        false
    }

    pub fn last(&self) -> u64 {
        self.last.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
        Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
        Udp: 25126799 7810 3821 28956183 3821 0 42 0 0\n\
        UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
        UdpLite: 0 0 0 0 0 0 7 0 0\n";

    #[test]
    fn reads_udp_not_udplite() {
        assert_eq!(udp_in_csum_errors(SNMP), Some(42));
        assert_eq!(udp_in_csum_errors("Ip: a\nIp: 1\n"), None);
    }

    #[test]
    fn warns_once_on_a_rise_with_xdp() {
        let mut w = CsumWatch::default();
        assert!(!w.observe(40, true), "the first reading is the baseline");
        assert!(!w.observe(40, true));
        assert!(!w.observe(45, false), "no XDP: not ours to explain");
        assert!(w.observe(50, true));
        assert!(!w.observe(60, true), "once");
        assert_eq!(w.last(), 60);
    }
}
