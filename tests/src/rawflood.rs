//! A REGISTER flood written as raw Ethernet frames on the peer end of a
//! veth ([`crate::nslb::NsLb`]), with AF_PACKET and `sendmmsg(2)`: from one
//! source, or from a random address of 198.18.0.0/15 per frame (spoofed).
//! One thread; paced to a target rate or as fast as it goes; what it achieved
//! is returned. Used by `tests/tests/shield_flood.rs` and the bench's
//! `shield-flood` comparison.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use crate::netns::NetNs;

/// Frames per `sendmmsg(2)`.
const BATCH: usize = 64;
/// Distinct Call-IDs the single-source flood cycles through.
const CALL_IDS: u64 = 4096;

/// A REGISTER in an Ethernet/IPv4/UDP frame from `src` (UDP checksum 0:
/// none, allowed for IPv4).
pub fn frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv4Addr, dst: SocketAddr, seq: u64) -> Vec<u8> {
    let SocketAddr::V4(dst) = dst else { panic!("the raw flood is IPv4 only: {dst}") };
    let body = format!(
        "REGISTER sip:{dst} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5062;branch=z9hG4bKflood{seq:016x}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:flood@{src}>;tag=f1\r\nTo: <sip:flood@{src}>\r\n\
         Call-ID: flood-{seq:016x}@x\r\nCSeq: 1 REGISTER\r\nContact: <sip:flood@{src}:5062>\r\n\
         Expires: 3600\r\nContent-Length: 0\r\n\r\n"
    );
    let mut f = Vec::with_capacity(42 + body.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + body.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[16..20].copy_from_slice(&dst.ip().octets());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&5062u16.to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(body.as_bytes());
    set_source(&mut f, src);
    f
}

/// Rewrites the IPv4 source address of frame `f` and its header checksum.
pub fn set_source(f: &mut [u8], src: Ipv4Addr) {
    f[26..30].copy_from_slice(&src.octets());
    f[24..26].copy_from_slice(&[0, 0]);
    let sum = f[14..34].chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    f[24..26].copy_from_slice(&sum.to_be_bytes());
}

/// The MAC address of `dev` in `ns`.
pub fn mac_of(ns: &NetNs, dev: &str) -> Result<[u8; 6]> {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u8> = text.trim().split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    v.try_into().map_err(|v| anyhow::anyhow!("MAC of {dev}: {v:?}"))
}

/// Where the flood comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// One address, [`CALL_IDS`] Call-IDs in turn.
    One,
    /// A random address of 198.18.0.0/15 per frame.
    Spoofed,
}

/// The prebuilt frames of a flood of REGISTERs to `target`, over a veth
/// whose ends have `dst_mac` (the balancer's) and `src_mac` (the sender's).
#[derive(Clone)]
pub struct Flood {
    many: Vec<Vec<u8>>,
    one: Vec<u8>,
}

/// What a flood achieved.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub frames: u64,
    pub took: Duration,
}

impl Sent {
    pub fn pps(&self) -> f64 {
        self.frames as f64 / self.took.as_secs_f64().max(1e-6)
    }
}

impl Flood {
    pub fn new(dst_mac: [u8; 6], src_mac: [u8; 6], source: Ipv4Addr, target: SocketAddr) -> Flood {
        Flood {
            many: (0..CALL_IDS).map(|i| frame(dst_mac, src_mac, source, target, i)).collect(),
            one: frame(dst_mac, src_mac, source, target, 0),
        }
    }

    /// Writes frames on `dev` (in the calling thread's namespace) until
    /// `stop` or `limit`, at most `pps` a second if given (paced per batch),
    /// else as fast as one thread goes.
    pub fn send(
        &self,
        dev: &str,
        source: Source,
        pps: Option<f64>,
        stop: &AtomicBool,
        limit: Duration,
    ) -> Result<Sent> {
        // SAFETY: plain socket calls on a socket we own.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        ensure!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let name = std::ffi::CString::new(dev)?;
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            // SAFETY: our fd.
            unsafe { libc::close(fd) };
            anyhow::bail!("no interface {dev}");
        }
        // SAFETY: a zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        let mut rng = crate::rng::Rng::new(0x5eed);
        let (t0, mut sent, mut i) = (Instant::now(), 0u64, 0usize);
        // The spoofed frames: copies of the template, each with its own source.
        let mut spoofed = vec![self.one.clone(); BATCH];
        while !stop.load(Ordering::Relaxed) && t0.elapsed() < limit {
            if let Some(pps) = pps {
                // Ahead of the schedule: wait for it (pacing, not synchronisation).
                let due = Duration::from_secs_f64(sent as f64 / pps);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            // SAFETY: a zeroed iovec is valid; each is set below.
            let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            for (k, v) in iov.iter_mut().enumerate() {
                let f = match source {
                    Source::One => &self.many[(i + k) % self.many.len()],
                    Source::Spoofed => {
                        let a = 0xc612_0000u32 | (rng.next_u64() as u32 & 0x1_ffff);
                        set_source(&mut spoofed[k], Ipv4Addr::from(a));
                        &spoofed[k]
                    }
                };
                *v = libc::iovec { iov_base: f.as_ptr() as *mut libc::c_void, iov_len: f.len() };
            }
            i += BATCH;
            // SAFETY: a zeroed mmsghdr is valid; the pointers set below outlive the call.
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
                m.msg_hdr.msg_name = (&raw mut sll).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: a valid array of BATCH messages.
            let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n > 0 {
                sent += n as u64;
            }
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
        Ok(Sent { frames: sent, took: t0.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_valid_ipv4_header_checksum_after_a_new_source() {
        let dst: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let mut f = frame([1; 6], [2; 6], Ipv4Addr::new(10, 0, 0, 2), dst, 7);
        set_source(&mut f, Ipv4Addr::new(198, 18, 3, 4));
        let sum = f[14..34].chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum::<u32>();
        let folded = (sum & 0xffff) + (sum >> 16);
        assert_eq!((folded & 0xffff) + (folded >> 16), 0xffff, "a header that sums to all ones");
        assert_eq!(&f[26..30], &[198, 18, 3, 4]);
        assert!(String::from_utf8_lossy(&f[42..]).starts_with("REGISTER sip:10.0.0.1:5060 SIP/2.0\r\n"));
    }
}
