//! Reading the classic pcap files that capture tools write (sngrep `-O`):
//! Ethernet (or Linux cooked / raw IP) frames with IPv4/IPv6 and UDP, each
//! back as its addresses, time and payload. Other records are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{bail, ensure, Result};

/// One UDP datagram of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Seconds and microseconds since the Unix epoch, as recorded.
    pub sec: u32,
    pub usec: u32,
    pub payload: Vec<u8>,
}

/// Every UDP datagram of a pcap file's bytes, in file order.
pub fn udp_datagrams(file: &[u8]) -> Result<Vec<Datagram>> {
    ensure!(file.len() >= 24, "pcap: {} bytes, shorter than the file header", file.len());
    let le = match &file[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        m => bail!("pcap: unknown magic {m:02x?}"),
    };
    let u32_at = |b: &[u8], i: usize| {
        let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let link = u32_at(file, 20);
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= file.len() {
        let (sec, usec, caplen) = (u32_at(file, at), u32_at(file, at + 4), u32_at(file, at + 8) as usize);
        let Some(frame) = file.get(at + 16..at + 16 + caplen) else { bail!("pcap: record at {at} runs past the end") };
        at += 16 + caplen;
        let ip = match link {
            1 if frame.len() >= 14 => &frame[14..], // Ethernet (no VLAN: what capture tools synthesise)
            113 if frame.len() >= 16 => &frame[16..], // Linux cooked
            101 | 228 | 229 => frame,               // raw IP
            _ => continue,
        };
        if let Some((src, dst, payload)) = udp(ip) {
            out.push(Datagram { src, dst, sec, usec, payload: payload.to_vec() });
        }
    }
    Ok(out)
}

fn udp(ip: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let (s, d, l4) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip.len() < ihl.max(20) || ip[9] != 17 {
                return None;
            }
            let a = |i: usize| IpAddr::V4(Ipv4Addr::new(ip[i], ip[i + 1], ip[i + 2], ip[i + 3]));
            (a(12), a(16), &ip[ihl..])
        }
        6 => {
            if ip.len() < 40 || ip[6] != 17 {
                return None;
            }
            let a = |i: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[i..i + 16]).unwrap()));
            (a(8), a(24), &ip[40..])
        }
        _ => return None,
    };
    if l4.len() < 8 {
        return None;
    }
    let port = |i: usize| u16::from_be_bytes([l4[i], l4[i + 1]]);
    let len = usize::from(port(4)).clamp(8, l4.len());
    Some((SocketAddr::new(s, port(0)), SocketAddr::new(d, port(2)), &l4[8..len]))
}
