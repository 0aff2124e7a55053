//! Ethernet frames for the XDP program's tests and benchmark (Katran's
//! PacketBuilder role): MACs, optional VLAN tags, IPv4 (with options and
//! fragment bits) or IPv6, UDP (or another protocol number) to a port,
//! around a payload. One builder for the fixtures, the differential test and
//! the bench.

#[derive(Clone)]
pub enum Ip {
    /// IPv4 with `options` bytes of NOP options and this flags/fragment field.
    V4 {
        options: usize,
        frag: u16,
    },
    V6,
}

#[derive(Clone)]
pub struct Frame {
    /// 802.1Q/802.1ad TPIDs, outer first (each tag carries VLAN 100).
    pub vlans: Vec<u16>,
    pub ip: Ip,
    /// IP protocol number (17: UDP).
    pub l4: u8,
    /// UDP destination port.
    pub dport: u16,
    /// Source address (of the frame's IP family); `None`: 10.0.0.1 / fd00::1.
    pub src: Option<std::net::IpAddr>,
}

impl Default for Frame {
    fn default() -> Self {
        Frame { vlans: vec![], ip: Ip::V4 { options: 0, frag: 0 }, l4: 17, dport: 5060, src: None }
    }
}

impl Frame {
    /// The frame around `payload` (checksums left 0: XDP does not check them).
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
        for &tpid in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x64]); // TCI: VLAN 100
        }
        let udp_len = (8 + payload.len()) as u16;
        match self.ip {
            Ip::V4 { options, frag } => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let ihl = 5 + options / 4;
                let total = (ihl * 4) as u16 + udp_len;
                f.push(0x40 | ihl as u8);
                f.push(0);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&[0x12, 0x34]);
                f.extend_from_slice(&frag.to_be_bytes());
                f.extend_from_slice(&[64, self.l4, 0, 0]);
                let src = match self.src {
                    None => [10, 0, 0, 1],
                    Some(std::net::IpAddr::V4(a)) => a.octets(),
                    Some(a) => panic!("IPv4 frame from {a}"),
                };
                f.extend_from_slice(&src);
                f.extend_from_slice(&[10, 0, 0, 2]);
                f.extend(std::iter::repeat_n(1u8, options)); // NOP options
            }
            Ip::V6 => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&udp_len.to_be_bytes());
                f.extend_from_slice(&[self.l4, 64]);
                let src = match self.src {
                    None => [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    Some(std::net::IpAddr::V6(a)) => a.octets(),
                    Some(a) => panic!("IPv6 frame from {a}"),
                };
                f.extend_from_slice(&src);
                f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            }
        }
        f.extend_from_slice(&5060u16.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }
}
