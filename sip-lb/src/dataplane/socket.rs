//! The workers' UDP sockets: one SO_REUSEPORT socket per worker and listen
//! address, created in worker order so that reuseport group index == worker
//! index (the XDP/reuseport steering relies on it).
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};

use super::sockaddr;

/// How long a blocked receive waits before the worker re-checks `stop`.
pub const RECV_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// Big kernel buffers absorb bursts while a worker is busy with a batch.
const SOCKET_BUFFER_BYTES: libc::c_int = 8 << 20;

pub fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the fd is owned by the UdpSocket below.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    set_int(&sock, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    set_int(&sock, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        set_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    // Best effort: without CAP_NET_ADMIN the kernel caps these at rmem_max.
    let _ = set_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCKET_BUFFER_BYTES)
        .or_else(|_| set_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUF, SOCKET_BUFFER_BYTES));
    let _ = set_int(&sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SOCKET_BUFFER_BYTES)
        .or_else(|_| set_int(&sock, libc::SOL_SOCKET, libc::SO_SNDBUF, SOCKET_BUFFER_BYTES));
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
    sock.set_read_timeout(Some(RECV_TIMEOUT))?;
    Ok(sock)
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
}
