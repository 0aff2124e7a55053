//! Batched UDP I/O for the bench's own packet tools (blaster, sink, null
//! forwarder): `recvmmsg`/`sendmmsg` over IPv4 sockets, buffers reused.
use std::io;
use std::mem::zeroed;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Datagrams per system call, as in sip-lb.
pub const BATCH: usize = 32;
const MTU: usize = 2048;

const CTRL: usize = 64;

/// Receive buffers for one batch; `len[i]`, `src[i]` and `rx_ns[i]` describe
/// datagram `i`. `rx_ns` is the kernel's receive time (CLOCK_REALTIME ns) on
/// sockets with [`enable_rx_timestamps`], else 0.
pub struct RecvBatch {
    bufs: Box<[[u8; MTU]; BATCH]>,
    ctrl: Box<[[u64; CTRL / 8]; BATCH]>,
    pub len: [usize; BATCH],
    pub src: [libc::sockaddr_in; BATCH],
    pub rx_ns: [u64; BATCH],
}

impl RecvBatch {
    pub fn new() -> Self {
        Self {
            bufs: Box::new([[0; MTU]; BATCH]),
            ctrl: Box::new([[0; CTRL / 8]; BATCH]),
            len: [0; BATCH],
            src: [unsafe { zeroed() }; BATCH],
            rx_ns: [0; BATCH],
        }
    }

    pub fn packet(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.len[i]]
    }

    /// Blocks for the first datagram (up to the socket's read timeout), then
    /// takes what is queued. `Ok(0)` on timeout.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdr: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iov[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: MTU };
            hdr[i].msg_hdr.msg_iov = &mut iov[i];
            hdr[i].msg_hdr.msg_iovlen = 1;
            hdr[i].msg_hdr.msg_name = (&mut self.src[i] as *mut libc::sockaddr_in).cast();
            hdr[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            hdr[i].msg_hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
            hdr[i].msg_hdr.msg_controllen = CTRL;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(sock.as_raw_fd(), hdr.as_mut_ptr(), BATCH as u32, libc::MSG_WAITFORONE, std::ptr::null_mut())
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        for (i, h) in hdr.iter().enumerate().take(n as usize) {
            self.len[i] = h.msg_len as usize;
            self.rx_ns[i] = 0;
            // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG
            // macros stay inside them.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                        let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                        self.rx_ns[i] = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                    }
                    c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
                }
            }
        }
        Ok(n as usize)
    }
}

/// Sends `packets[i]` to `dst[i]` in as few `sendmmsg` calls as needed; returns
/// how many the kernel took (a full socket buffer ends the batch early).
pub fn send_batch(sock: &UdpSocket, packets: &[&[u8]], dst: &[libc::sockaddr_in]) -> io::Result<usize> {
    let n = packets.len().min(BATCH);
    let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut hdr: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for i in 0..n {
        iov[i] = libc::iovec { iov_base: packets[i].as_ptr() as *mut _, iov_len: packets[i].len() };
        hdr[i].msg_hdr.msg_iov = &mut iov[i];
        hdr[i].msg_hdr.msg_iovlen = 1;
        hdr[i].msg_hdr.msg_name = (&dst[i] as *const libc::sockaddr_in as *mut libc::sockaddr_in).cast();
        hdr[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    }
    let mut sent = 0;
    while sent < n {
        // SAFETY: headers point at the caller's packets and addresses, alive for the call.
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdr[sent..].as_mut_ptr(), (n - sent) as u32, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Loopback drops at the receiver; a refused port (sink gone) or a
                // full buffer just ends this batch.
                Some(libc::ECONNREFUSED) | Some(libc::EAGAIN) | Some(libc::ENOBUFS) => return Ok(sent),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
        if r == 0 {
            break;
        }
        sent += r as usize;
    }
    Ok(sent)
}

pub fn sockaddr(addr: SocketAddr) -> Result<libc::sockaddr_in> {
    let SocketAddr::V4(v4) = addr else { bail!("the bench uses IPv4 loopback, got {addr}") };
    Ok(sockaddr_v4(v4))
}

fn sockaddr_v4(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// A UDP socket on `addr` with SO_REUSEPORT (one per worker, as sip-lb does),
/// large buffers, and a read timeout so loops can notice a stop flag.
pub fn bind(addr: SocketAddr, reuseport: bool) -> Result<UdpSocket> {
    let sa = sockaddr(addr)?;
    // SAFETY: plain socket calls on a descriptor we own; UdpSocket takes it over.
    let sock = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("socket");
        }
        let sock = UdpSocket::from_raw_fd(fd);
        if reuseport {
            setsockopt(fd, libc::SO_REUSEPORT, 1)?;
        }
        let ret = libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&sa) as u32);
        if ret != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("bind {addr}"));
        }
        sock
    };
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = setsockopt(sock.as_raw_fd(), libc::SO_RCVBUF, 4 << 20);
    let _ = setsockopt(sock.as_raw_fd(), libc::SO_SNDBUF, 4 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(sock)
}

/// Asks the kernel to stamp each datagram's arrival (SO_TIMESTAMPNS).
pub fn enable_rx_timestamps(sock: &UdpSocket) -> Result<()> {
    setsockopt(sock.as_raw_fd(), libc::SO_TIMESTAMPNS, 1)
}

fn setsockopt(fd: i32, opt: i32, val: i32) -> Result<()> {
    // SAFETY: val outlives the call; size matches.
    let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&val as *const i32).cast(), 4) };
    if r != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("setsockopt {opt}"));
    }
    Ok(())
}

/// Pins the calling thread to one CPU (as sip-lb pins its workers).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
