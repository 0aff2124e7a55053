//! What the VIP needs of the kernel: the interface sip-lb owns (a TUN
//! device, gone with the process), and two rtnetlink requests: put an
//! address on an interface, take it off.
//! Each request waits for the kernel's acknowledgement, so the caller knows
//! the address is (or is no longer) there when it returns.

use std::net::IpAddr;

use anyhow::{bail, Context as _, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope},
    link::{LinkFlags, LinkMessage},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A request socket.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// What the kernel answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Done,
    /// `EEXIST` on a create, `EADDRNOTAVAIL`/`ENODEV` on a delete.
    AlreadyThatWay,
}

impl Netlink {
    pub fn open() -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
        socket.bind_auto().context("binding the netlink socket")?;
        socket.connect(&SocketAddr::new(0, 0)).context("connecting the netlink socket")?;
        Ok(Netlink { socket, seq: 0, buf: vec![0; 16 * 1024] })
    }

    /// Creates `name` as a TUN device owned by this process and sets it
    /// up. The device lives as long as the returned descriptor: when the
    /// process ends, even by SIGKILL, the kernel deletes it with its
    /// addresses, and BIRD withdraws the VIPs at once. (Nothing is ever
    /// routed into it: the VIPs are local addresses.)
    pub fn create_owned_link(&mut self, name: &str) -> Result<OwnedFd> {
        let fd = open_tun(name).with_context(|| format!("creating the TUN interface {name}"))?;
        let idx = index(name).with_context(|| format!("interface {name} vanished"))?;
        let mut up = LinkMessage::default();
        up.header.index = idx;
        up.header.flags = LinkFlags::Up;
        up.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(up), 0).with_context(|| format!("setting {name} up"))?;
        Ok(fd)
    }

    /// Adds `ip` as a host address (/32, /128) to interface `dev`.
    pub fn add_address(&mut self, dev: &str, ip: IpAddr) -> Result<Answer> {
        let m = address(dev, ip)?;
        self.request(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Removes host address `ip` from `dev`.
    pub fn remove_address(&mut self, dev: &str, ip: IpAddr) -> Result<Answer> {
        if index(dev).is_none() {
            return Ok(Answer::AlreadyThatWay);
        }
        let m = address(dev, ip)?;
        self.request(RouteNetlinkMessage::DelAddress(m), 0)
    }

    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Answer> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0).context("netlink send")?;
        loop {
            let len = self.socket.recv(&mut &mut self.buf[..], 0).context("netlink receive")?;
            let mut at = 0;
            while at + 16 <= len {
                let bytes = &self.buf[at..len];
                let msg_len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                if msg_len < 16 || msg_len > bytes.len() {
                    bail!("malformed netlink message ({msg_len} bytes)");
                }
                at += (msg_len + 3) & !3;
                let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..msg_len]) else { continue };
                if m.header.sequence_number != self.seq {
                    continue;
                }
                if let NetlinkPayload::Error(e) = m.payload {
                    return match e.code.map(|c| -c.get()) {
                        None => Ok(Answer::Done),
                        Some(libc::EEXIST | libc::EADDRNOTAVAIL | libc::ENODEV) => Ok(Answer::AlreadyThatWay),
                        Some(code) => Err(std::io::Error::from_raw_os_error(code).into()),
                    };
                }
            }
        }
    }
}

/// `open("/dev/net/tun")` + `TUNSETIFF`: a non-persistent TUN device.
fn open_tun(name: &str) -> Result<OwnedFd> {
    // SAFETY: a constant NUL-terminated path.
    let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("opening /dev/net/tun");
    }
    // SAFETY: a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error()).context("TUNSETIFF (is the name taken by another interface?)");
    }
    Ok(fd)
}

fn address(dev: &str, ip: IpAddr) -> Result<AddressMessage> {
    let idx = index(dev).with_context(|| format!("no interface {dev}"))?;
    let mut m = AddressMessage::default();
    m.header.index = idx;
    m.header.scope = AddressScope::Universe;
    (m.header.family, m.header.prefix_len) = match ip {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    // A tentative (duplicate-address-detecting) VIP could not be bound.
    m.header.flags = AddressHeaderFlags::Nodad;
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    Ok(m)
}

/// The interface's index, if it exists.
pub fn index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
