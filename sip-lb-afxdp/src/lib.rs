//! AF_XDP I/O for sip-lb: the layer beside `sip-lb-udp` that moves whole
//! Ethernet frames between a NIC queue and userspace, without the kernel's
//! IP/UDP stack.
//!
//! - [`umem`]: the frame memory shared with the kernel (4 KiB chunks).
//! - [`ring`]: the four single-producer/single-consumer rings (fill, RX, TX,
//!   completion) mapped from the socket.
//! - [`queue`]: one AF_XDP socket bound to one (interface, RX queue) with its
//!   own UMEM; frames received on it are owned by whoever holds the
//!   [`queue::RxFrame`] token until they are transmitted or released.
//! - [`frame`]: reading the addresses and UDP payload out of a received
//!   frame, and writing Ethernet + IPv4/IPv6 + UDP around a payload
//!   (checksums, IP ID, TTL) for transmit.
//! - [`stats`]: per-queue counters.
//! - [`neigh`]: the next hop's MACs and source address for transmit,
//!   mirrored from the kernel's routes and neighbours over rtnetlink.
//!
//! The AF_XDP part uses only `libc`: the uapi types (`xdp_umem_reg`,
//! `sockaddr_xdp`, ring offsets) are in libc, and sip-lb needs
//! descriptor-level control (a worker thread writes its output into the chunk
//! it received and hands the same address to the TX ring). `docs/afxdp.md`
//! says why no AF_XDP crate.

pub mod frame;
pub mod neigh;
pub mod queue;
pub mod ring;
pub mod stats;
pub mod umem;

pub use queue::{BindMode, Queue, QueueConfig, RxFrame};
pub use stats::QueueStats;

/// A socket for interface ioctls (in the calling thread's namespace:
/// `/sys/class/net` would show the namespace sysfs was mounted in).
fn ioctl_socket() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

fn ifreq(iface: &str) -> std::io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zeroes is valid.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    if iface.len() >= r.ifr_name.len() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    for (d, s) in r.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

/// Number of RX queues of `iface` (ethtool channels: rx + combined), at
/// least 1 (drivers without channel support have one).
pub fn rx_queues(iface: &str) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    #[repr(C)]
    #[derive(Default)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    let sock = ioctl_socket()?;
    let mut ch = Channels { cmd: ETHTOOL_GCHANNELS, ..Channels::default() };
    let mut r = ifreq(iface)?;
    r.ifr_ifru.ifru_data = &mut ch as *mut Channels as *mut libc::c_char;
    // SAFETY: SIOCETHTOOL with a valid ifreq pointing at a live ethtool_channels.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut r) } != 0 {
        return Ok(1);
    }
    Ok((ch.rx_count + ch.combined_count).max(1))
}

/// The interface index of `iface`, or an error naming it.
pub fn ifindex(iface: &str) -> std::io::Result<u32> {
    let c = std::ffi::CString::new(iface).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("interface {iface:?} does not exist"))),
        i => Ok(i),
    }
}

/// The MTU of `iface`.
pub fn mtu(iface: &str) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let sock = ioctl_socket()?;
    let mut r = ifreq(iface)?;
    // SAFETY: SIOCGIFMTU fills ifru_mtu of a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote the MTU member.
    Ok(unsafe { r.ifr_ifru.ifru_mtu } as usize)
}
