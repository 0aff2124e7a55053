//! UDP sockets. The data plane binds one SO_REUSEPORT socket per worker and
//! listen address, in worker order, so that reuseport group index == worker
//! index (the XDP/reuseport steering relies on it); the bench tools and the
//! tests bind theirs here too.
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};

use crate::sockaddr;

/// How long a blocked receive waits before the worker re-checks `stop`.
pub const RECV_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// How to bind a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// Join the port's SO_REUSEPORT group.
    pub reuseport: bool,
    /// Kernel receive and send buffer size (best effort: capped at
    /// rmem_max/wmem_max without CAP_NET_ADMIN).
    pub buffer_bytes: usize,
    /// Receive timeout, so a blocked loop notices a stop flag.
    pub read_timeout: std::time::Duration,
}

impl SocketOptions {
    /// A data-plane worker socket: reuseport, big buffers that absorb bursts
    /// while the worker is busy with a batch.
    pub const DATAPLANE: SocketOptions =
        SocketOptions { reuseport: true, buffer_bytes: 8 << 20, read_timeout: RECV_TIMEOUT };
}

/// A data-plane worker socket on `addr` ([`SocketOptions::DATAPLANE`]).
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    bind(addr, &SocketOptions::DATAPLANE)
}

/// Asks the kernel to stamp each datagram's arrival (SO_TIMESTAMPNS), read
/// with [`crate::RecvBatch::rx_ns`].
pub fn enable_rx_timestamps(sock: &UdpSocket) -> io::Result<()> {
    set_int(sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// A UDP socket on `addr` (IPv6 sockets are IPv6-only).
pub fn bind(addr: SocketAddr, opts: &SocketOptions) -> io::Result<UdpSocket> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the fd is owned by the UdpSocket below.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    if opts.reuseport {
        set_int(&sock, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        set_int(&sock, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    }
    if addr.is_ipv6() {
        set_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    // Best effort: without CAP_NET_ADMIN the kernel caps these at rmem_max.
    let bytes = opts.buffer_bytes.min(i32::MAX as usize) as libc::c_int;
    let _ = set_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
        .or_else(|_| set_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes));
    let _ = set_int(&sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, bytes)
        .or_else(|_| set_int(&sock, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes));
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = sockaddr::to_storage(&addr, &mut storage);
    // SAFETY: storage holds a valid sockaddr of length len.
    let rc = unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("bind {addr}: {err}")));
    }
    // Blocking with a timeout: a worker with one socket sleeps in recvmmsg
    // itself and still notices a stop request within the timeout.
    sock.set_read_timeout(Some(opts.read_timeout))?;
    Ok(sock)
}

/// Busy polling (`SO_BUSY_POLL` for `usec` microseconds, with
/// `SO_PREFER_BUSY_POLL`): a receive that finds the queue empty polls the
/// device's NAPI context itself instead of sleeping until softirq delivers,
/// trading a spinning CPU for latency. It engages only for datagrams that
/// came through a NAPI device (a NIC, veth with XDP or GRO); loopback has
/// none. Raising it needs CAP_NET_ADMIN beyond net.core.busy_read.
pub fn set_busy_poll(sock: &UdpSocket, usec: u32) -> io::Result<()> {
    set_int(sock, libc::SOL_SOCKET, libc::SO_BUSY_POLL, usec.min(i32::MAX as u32) as libc::c_int)?;
    set_int(sock, libc::SOL_SOCKET, libc::SO_PREFER_BUSY_POLL, i32::from(usec > 0))
}

/// The socket's `SO_BUSY_POLL` in microseconds.
pub fn busy_poll(sock: &UdpSocket) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len outlive the call; len matches value's size.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            &mut value as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.max(0) as u32)
}

fn set_int(sock: &UdpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: value outlives the call; the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            &value as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_workers_share_a_port() {
        let a = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = a.local_addr().unwrap();
        let b = bind_reuseport(port).unwrap();
        assert_eq!(b.local_addr().unwrap(), port);
    }

    #[test]
    fn busy_poll_is_set_and_cleared() {
        let s = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(busy_poll(&s).unwrap(), 0);
        // As root (CI): any value; otherwise up to net.core.busy_read.
        set_busy_poll(&s, 50).unwrap();
        assert_eq!(busy_poll(&s).unwrap(), 50);
        set_busy_poll(&s, 0).unwrap();
        assert_eq!(busy_poll(&s).unwrap(), 0);
    }
}
