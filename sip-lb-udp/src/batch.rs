//! recvmmsg/sendmmsg batches with buffers allocated once per worker.
//!
//! The `mmsghdr`s point into the batch's own heap buffers, which never move
//! after construction, so the pointers are set once and only lengths are
//! reset per call.
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::sockaddr;

/// Datagrams per syscall: enough to amortise the syscall, small enough to
/// keep a batch's buffers in L2 for typical SIP sizes.
pub const BATCH: usize = 32;
/// The largest UDP payload (RFC 3261 §18.1.1: up to 65,535 bytes must be accepted).
pub const MAX_DATAGRAM: usize = 65_535;

/// Control-message space per datagram for one SCM_TIMESTAMPNS.
const CTRL: usize = 64;

pub struct RecvBatch {
    bufs: Vec<u8>,
    /// Bytes per datagram slot (one more than the largest datagram kept).
    slot: usize,
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    iovs: Box<[libc::iovec; BATCH]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
    /// Control buffers for kernel receive timestamps, when asked for.
    ctrl: Option<Box<[[u64; CTRL / 8]; BATCH]>>,
    len: usize,
}

// SAFETY: the raw pointers only point into this struct's own heap buffers.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Slots for datagrams of up to [`MAX_DATAGRAM`] bytes (the data plane).
    pub fn new() -> Self {
        Self::with_options(MAX_DATAGRAM, false)
    }

    /// Slots for datagrams of up to `max` bytes (larger ones are reported
    /// truncated), and with `timestamps` the kernel's receive time of each
    /// (the socket needs [`crate::enable_rx_timestamps`]).
    pub fn with_options(max: usize, timestamps: bool) -> Self {
        // One extra byte per slot so a datagram that fills the slot is seen as
        // truncated (MSG_TRUNC) instead of silently cut.
        let slot = max.min(MAX_DATAGRAM) + 1;
        let mut b = RecvBatch {
            bufs: vec![0u8; slot * BATCH],
            slot,
            // SAFETY: all-zero is valid for these plain C structs.
            addrs: Box::new(unsafe { std::mem::zeroed() }),
            // SAFETY: as above.
            iovs: Box::new(unsafe { std::mem::zeroed() }),
            // SAFETY: as above.
            hdrs: Box::new(unsafe { std::mem::zeroed() }),
            ctrl: timestamps.then(|| Box::new([[0u64; CTRL / 8]; BATCH])),
            len: 0,
        };
        for i in 0..BATCH {
            b.iovs[i] = libc::iovec { iov_base: b.bufs[i * slot..].as_mut_ptr() as *mut libc::c_void, iov_len: slot };
            b.hdrs[i].msg_hdr.msg_iov = &mut b.iovs[i];
            b.hdrs[i].msg_hdr.msg_iovlen = 1;
            b.hdrs[i].msg_hdr.msg_name = &mut b.addrs[i] as *mut _ as *mut libc::c_void;
            if let Some(ctrl) = b.ctrl.as_mut() {
                b.hdrs[i].msg_hdr.msg_control = ctrl[i].as_mut_ptr().cast();
            }
        }
        b
    }

    /// Receives up to BATCH datagrams; Ok(0) when none came. With `wait`, it
    /// blocks for the first one (up to the socket's SO_RCVTIMEO) and then takes
    /// whatever else is queued: one syscall per wake-up instead of
    /// poll + recvmmsg + a recvmmsg that finds the queue empty.
    pub fn recv(&mut self, fd: RawFd, wait: bool) -> io::Result<usize> {
        let flags = if wait { libc::MSG_WAITFORONE } else { libc::MSG_DONTWAIT };
        let ctrl_len = if self.ctrl.is_some() { CTRL } else { 0 };
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = ctrl_len;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs describe BATCH valid, writable buffers owned by self.
        let n =
            unsafe { libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), BATCH as libc::c_uint, flags, std::ptr::null_mut()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            self.len = 0;
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(err),
            };
        }
        self.len = n as usize;
        Ok(self.len)
    }

    /// Datagram `i` of the last batch: payload, source, and whether the
    /// kernel had to truncate it.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>, bool) {
        let slot = self.slot;
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(slot);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len >= slot;
        (&self.bufs[i * slot..i * slot + len], sockaddr::from_storage(&self.addrs[i]), truncated)
    }

    /// The kernel's receive time of datagram `i` (CLOCK_REALTIME, ns), if
    /// this batch asks for timestamps and the socket gives them.
    pub fn rx_ns(&self, i: usize) -> Option<u64> {
        self.ctrl.as_ref()?;
        let h = &self.hdrs[i].msg_hdr;
        // SAFETY: the kernel filled msg_control/msg_controllen of a header
        // whose control buffer we own; the CMSG macros stay inside it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// Outgoing datagrams of one batch. Each slot owns a reusable `Vec<u8>` that
/// the forwarding core writes into; capacity is kept between batches.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    iovs: Box<[libc::iovec; BATCH]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
    /// Per datagram, the index of the socket it leaves from.
    socks: [usize; BATCH],
    len: usize,
}

// SAFETY: as for RecvBatch.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new() -> Self {
        SendBatch {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(4096)).collect(),
            // SAFETY: all-zero is valid for these plain C structs.
            addrs: Box::new(unsafe { std::mem::zeroed() }),
            // SAFETY: as above.
            iovs: Box::new(unsafe { std::mem::zeroed() }),
            // SAFETY: as above.
            hdrs: Box::new(unsafe { std::mem::zeroed() }),
            socks: [0; BATCH],
            len: 0,
        }
    }

    /// The buffer for the next datagram, cleared.
    pub fn next_buf(&mut self) -> &mut Vec<u8> {
        let b = &mut self.bufs[self.len];
        b.clear();
        b
    }

    /// Queues the buffer last returned by `next_buf` for `to`, to leave from
    /// socket `sock` (an index into the `fds` given to `flush`).
    pub fn commit(&mut self, to: SocketAddr, sock: usize) {
        let i = self.len;
        self.socks[i] = sock;
        let namelen = sockaddr::to_storage(&to, &mut self.addrs[i]);
        let buf = &mut self.bufs[i];
        self.iovs[i] = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
        let h = &mut self.hdrs[i];
        h.msg_hdr.msg_iov = &mut self.iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
        h.msg_hdr.msg_namelen = namelen;
        h.msg_len = 0;
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    /// Sends every queued datagram, one sendmmsg per run of datagrams that
    /// leave from the same socket of `fds`. A datagram the kernel refuses
    /// (e.g. an ICMP-unreachable error reported on the socket, or a full
    /// buffer), or whose socket index is not in `fds`, is skipped and
    /// counted, never retried: SIP over UDP retransmits end to end.
    /// Returns (sent, failed).
    pub fn flush(&mut self, fds: &[RawFd]) -> (usize, usize) {
        let mut start = 0;
        let mut failed = 0;
        while start < self.len {
            let sock = self.socks[start];
            let run = self.socks[start..self.len].iter().take_while(|&&s| s == sock).count();
            let Some(&fd) = fds.get(sock) else {
                failed += run;
                start += run;
                continue;
            };
            // SAFETY: hdrs[start..start + run] were filled by `commit` and
            // point into buffers that live until the next `next_buf`.
            let n =
                unsafe { libc::sendmmsg(fd, self.hdrs[start..].as_mut_ptr(), run as libc::c_uint, libc::MSG_DONTWAIT) };
            if n > 0 {
                start += n as usize;
            } else {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first datagram failed: drop it and go on with the rest.
                failed += 1;
                start += 1;
            }
        }
        let sent = self.len - failed;
        self.len = 0;
        (sent, failed)
    }
}

/// Sends `packets[i]` to `to[i]` from `fd` without copying them (a null
/// forwarder sending from its receive buffers, a blaster with prepared
/// packets). Returns how many the kernel took: a full socket buffer, a
/// refused port or a full queue ends the batch early; other errors return.
pub fn send_slices(fd: RawFd, packets: &[&[u8]], to: &[SocketAddr]) -> io::Result<usize> {
    let n = packets.len().min(to.len()).min(BATCH);
    // SAFETY: all-zero is valid for these plain C structs.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        let namelen = sockaddr::to_storage(&to[i], &mut addrs[i]);
        iovs[i] = libc::iovec { iov_base: packets[i].as_ptr() as *mut libc::c_void, iov_len: packets[i].len() };
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
        hdrs[i].msg_hdr.msg_name = &mut addrs[i] as *mut _ as *mut libc::c_void;
        hdrs[i].msg_hdr.msg_namelen = namelen;
    }
    let mut sent = 0;
    while sent < n {
        // SAFETY: hdrs[sent..n] point at the caller's packets and our
        // addresses, all alive for the call; the kernel only reads them.
        let r = unsafe { libc::sendmmsg(fd, hdrs[sent..].as_mut_ptr(), (n - sent) as libc::c_uint, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
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

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batches_round_trip_over_loopback() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut tx = SendBatch::new();
        for i in 0..5u8 {
            tx.next_buf().extend_from_slice(&[b'x', i]);
            tx.commit(b.local_addr().unwrap(), 0);
        }
        assert_eq!(tx.flush(&[a.as_raw_fd()]), (5, 0));
        let mut rx = RecvBatch::new();
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = rx.recv(b.as_raw_fd(), false).unwrap();
            for i in 0..n {
                let (data, src, truncated) = rx.get(i);
                assert_eq!(src, Some(a.local_addr().unwrap()));
                assert!(!truncated);
                got.push(data.to_vec());
            }
            if got.len() == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, (0..5u8).map(|i| vec![b'x', i]).collect::<Vec<_>>());
    }

    #[test]
    fn each_datagram_leaves_from_its_socket() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut tx = SendBatch::new();
        for (i, sock) in [0usize, 0, 1, 0, 7].into_iter().enumerate() {
            tx.next_buf().push(i as u8);
            tx.commit(b.local_addr().unwrap(), sock);
        }
        // Socket 7 does not exist: counted as failed, the rest sent.
        assert_eq!(tx.flush(&[a.as_raw_fd(), c.as_raw_fd()]), (4, 1));
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        for _ in 0..4 {
            let (n, from) = b.recv_from(&mut buf).unwrap();
            assert_eq!(n, 1);
            got.push((buf[0], from));
        }
        let (a, c) = (a.local_addr().unwrap(), c.local_addr().unwrap());
        assert_eq!(got, [(0, a), (1, a), (2, c), (3, a)]);
    }

    #[test]
    fn small_slots_report_truncation_and_timestamps_arrive() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        crate::enable_rx_timestamps(&b).unwrap();
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let to = [b.local_addr().unwrap(); 2];
        assert_eq!(send_slices(a.as_raw_fd(), &[&[1u8; 100][..], &[2u8; 101][..]], &to).unwrap(), 2);
        let mut rx = RecvBatch::with_options(100, true);
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = rx.recv(b.as_raw_fd(), false).unwrap();
            for i in 0..n {
                let (data, _, truncated) = rx.get(i);
                got.push((data.len().min(100), truncated, rx.rx_ns(i).unwrap() >= before));
            }
            if got.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, [(100, false, true), (100, true, true)]);
    }

    #[test]
    fn a_max_size_datagram_is_received_whole() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // 65,507 is the IPv4 UDP payload limit.
        let big = vec![b'a'; 65_507];
        a.send_to(&big, b.local_addr().unwrap()).unwrap();
        let mut rx = RecvBatch::new();
        for _ in 0..100 {
            if rx.recv(b.as_raw_fd(), false).unwrap() == 1 {
                let (data, _, truncated) = rx.get(0);
                assert_eq!(data.len(), big.len());
                assert!(!truncated);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("datagram not received");
    }
}
