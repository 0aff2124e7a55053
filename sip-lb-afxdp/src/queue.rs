//! One AF_XDP socket bound to one (interface, RX queue), with its own UMEM
//! and its four rings. The XDP program redirects into it only frames that
//! arrived on this queue (`xsk_rcv_check`), so there is one per RX queue.
//!
//! Ownership of frames: [`Queue::recv`] hands out [`RxFrame`] tokens, one per
//! received chunk; the holder (the queue's I/O loop, then the worker it hands
//! the frame to) may read it ([`Queue::data`]), overwrite it with a frame to
//! send ([`Queue::chunk_mut`]) and must end with [`Queue::transmit`] or
//! [`Queue::release`]. Transmitted chunks come back through the completion
//! ring, released ones directly; both go back to the fill ring.
//!
//! Locks: the RX side (fill + RX rings) is the I/O loop's; the TX side (TX +
//! completion rings, the free list) is shared by the workers, each holding it
//! for a few ring operations.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use sip_lb_common::maps::{XskMeta, XSK_META_MAGIC};

use crate::ring::Ring;
use crate::stats::QueueStats;
use crate::umem::{Umem, CHUNK_SIZE, XDP_PACKET_HEADROOM};

/// Zero-copy (driver support needed) or copy mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy if the driver allows it, else copy.
    Auto,
    ZeroCopy,
    Copy,
}

#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    /// UMEM chunks (4 KiB each) of this queue.
    pub chunks: usize,
    /// Entries of each ring (a power of two, at most `chunks / 2`).
    pub ring_size: u32,
    pub mode: BindMode,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { chunks: 4096, ring_size: 2048, mode: BindMode::Auto }
    }
}

/// A received frame, owned by its holder until transmitted or released.
#[must_use = "a frame must be transmitted or released, or its chunk leaks"]
#[derive(Debug)]
pub struct RxFrame {
    addr: u64,
    len: u32,
    queue: u32,
    meta: Option<XskMeta>,
}

impl RxFrame {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The RX queue (index) it arrived on.
    pub fn queue(&self) -> u32 {
        self.queue
    }
}

struct RxSide {
    fill: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
}

struct TxSide {
    tx: Ring<libc::xdp_desc>,
    comp: Ring<u64>,
    /// Chunks owned by no one, to go back to the fill ring.
    free: Vec<u64>,
    /// Descriptors submitted since the last wake-up.
    unkicked: bool,
}

pub struct Queue {
    id: u32,
    zero_copy: bool,
    rx: Mutex<RxSide>,
    tx: Mutex<TxSide>,
    fd: OwnedFd,
    /// Last: unmapped after the socket and rings are gone.
    umem: Umem,
    pub stats: QueueStats,
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T, what: &str) -> io::Result<()> {
    // SAFETY: `v` is a valid T for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            v as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setsockopt({what}): {e}")));
    }
    Ok(())
}

fn getsockopt<T>(fd: RawFd, opt: libc::c_int, v: &mut T, what: &str) -> io::Result<()> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a valid, writable T of `len` bytes.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_XDP, opt, v as *mut T as *mut libc::c_void, &mut len) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("getsockopt({what}): {e}")));
    }
    Ok(())
}

impl Queue {
    /// Creates the socket, its UMEM and rings, and binds it to
    /// (`ifindex`, `queue`). `BindMode::Auto` tries zero-copy first.
    pub fn bind(ifindex: u32, queue: u32, cfg: &QueueConfig) -> io::Result<Queue> {
        match cfg.mode {
            BindMode::Auto => {
                Self::bind_as(ifindex, queue, cfg, true).or_else(|_| Self::bind_as(ifindex, queue, cfg, false))
            }
            BindMode::ZeroCopy => Self::bind_as(ifindex, queue, cfg, true),
            BindMode::Copy => Self::bind_as(ifindex, queue, cfg, false),
        }
    }

    fn bind_as(ifindex: u32, queue: u32, cfg: &QueueConfig, zero_copy: bool) -> io::Result<Queue> {
        let size = cfg.ring_size;
        if !size.is_power_of_two() || cfg.chunks < 2 * size as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ring size: a power of two, at most chunks / 2"));
        }
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Umem::new(cfg.chunks)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.base() as u64,
            len: umem.len() as u64,
            chunk_size: CHUNK_SIZE as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::XDP_UMEM_REG, &reg, "XDP_UMEM_REG")?;
        for (opt, what) in [
            (libc::XDP_UMEM_FILL_RING, "XDP_UMEM_FILL_RING"),
            (libc::XDP_UMEM_COMPLETION_RING, "XDP_UMEM_COMPLETION_RING"),
            (libc::XDP_RX_RING, "XDP_RX_RING"),
            (libc::XDP_TX_RING, "XDP_TX_RING"),
        ] {
            setsockopt(raw, opt, &size, what)?;
        }
        // SAFETY: xdp_mmap_offsets is plain integers.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        getsockopt(raw, libc::XDP_MMAP_OFFSETS, &mut off, "XDP_MMAP_OFFSETS")?;
        let mut fill = Ring::<u64>::map(raw, libc::XDP_UMEM_PGOFF_FILL_RING, &off.fr, size, true)?;
        let comp = Ring::<u64>::map(raw, libc::XDP_UMEM_PGOFF_COMPLETION_RING, &off.cr, size, false)?;
        let rx = Ring::<libc::xdp_desc>::map(raw, libc::XDP_PGOFF_RX_RING as u64, &off.rx, size, false)?;
        let tx = Ring::<libc::xdp_desc>::map(raw, libc::XDP_PGOFF_TX_RING as u64, &off.tx, size, true)?;

        // The first `size` chunks to the fill ring, the rest kept free.
        let n = fill.free(size);
        for i in 0..n as u64 {
            fill.push(i * CHUNK_SIZE as u64);
        }
        fill.submit();
        let free: Vec<u64> = (n as u64..cfg.chunks as u64).rev().map(|i| i * CHUNK_SIZE as u64).collect();

        let flags = libc::XDP_USE_NEED_WAKEUP | if zero_copy { libc::XDP_ZEROCOPY } else { libc::XDP_COPY };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp of the given length.
        let r = unsafe {
            libc::bind(
                raw,
                &sa as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            let mode = if zero_copy { "zero-copy" } else { "copy" };
            return Err(io::Error::new(
                e.kind(),
                format!("bind AF_XDP to ifindex {ifindex} queue {queue} ({mode}): {e}"),
            ));
        }
        let mut opts = libc::xdp_options { flags: 0 };
        getsockopt(raw, libc::XDP_OPTIONS, &mut opts, "XDP_OPTIONS")?;
        Ok(Queue {
            id: queue,
            zero_copy: opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0,
            rx: Mutex::new(RxSide { fill, rx }),
            tx: Mutex::new(TxSide { tx, comp, free, unkicked: false }),
            fd,
            umem,
            stats: QueueStats::default(),
        })
    }

    /// The RX queue index this socket is bound to.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether the kernel bound it in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Bytes of UMEM of this queue.
    pub fn umem_bytes(&self) -> usize {
        self.umem.len()
    }

    fn tx_side(&self) -> MutexGuard<'_, TxSide> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refills the fill ring with free chunks, then takes up to `max`
    /// received frames into `out`. Returns how many it took.
    pub fn recv(&self, out: &mut Vec<RxFrame>, max: u32) -> usize {
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut t = self.tx_side();
            self.reap(&mut t);
            if rx.fill.pending() == 0 {
                self.stats.fill_empty.add(1);
            }
            let n = rx.fill.free(t.free.len() as u32);
            for _ in 0..n {
                let a = t.free.pop().unwrap_or_default();
                rx.fill.push(a);
            }
            if n > 0 {
                rx.fill.submit();
            }
        }
        if self.zero_copy && rx.fill.needs_wakeup() {
            // SAFETY: recvfrom with no buffer only wakes the driver.
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
        let n = rx.rx.available(max);
        for i in 0..n {
            let d = rx.rx.get(i);
            let mut f = RxFrame { addr: d.addr, len: d.len, queue: self.id, meta: None };
            // `sip_lb_xsk` prepends its metadata to the frame.
            if let Some(m) = self.read_meta(&f) {
                f.addr += META_LEN as u64;
                f.len -= META_LEN as u32;
                f.meta = Some(m);
            }
            out.push(f);
        }
        rx.rx.release(n);
        self.stats.rx.add(u64::from(n));
        n as usize
    }

    /// Waits up to `timeout_ms` for received frames.
    pub fn wait(&self, timeout_ms: i32) {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
    }

    /// The frame's bytes (Ethernet header first).
    pub fn data<'a>(&'a self, f: &'a RxFrame) -> &'a [u8] {
        debug_assert_eq!(f.queue, self.id);
        // SAFETY: the kernel gave this range in our UMEM, within one chunk;
        // `f` is the only token for it and is borrowed here.
        unsafe { self.umem.slice(f.addr, (f.len as usize).min(Umem::room(f.addr))) }
    }

    /// The metadata `sip_lb_xsk` prepended to the frame, if it did.
    pub fn meta(&self, f: &RxFrame) -> Option<XskMeta> {
        f.meta
    }

    fn read_meta(&self, f: &RxFrame) -> Option<XskMeta> {
        if (f.len as usize) < META_LEN + crate::frame::ETH_HLEN || Umem::room(f.addr) < META_LEN {
            return None;
        }
        // SAFETY: the first META_LEN bytes of the frame, inside its chunk.
        let b = unsafe { self.umem.slice(f.addr, META_LEN) };
        let m = XskMeta {
            hash: u64::from_ne_bytes(b[0..8].try_into().ok()?),
            worker: u32::from_ne_bytes(b[8..12].try_into().ok()?),
            magic: u32::from_ne_bytes(b[12..16].try_into().ok()?),
        };
        (m.magic == XSK_META_MAGIC).then_some(m)
    }

    /// The whole chunk from the frame's start: where a frame to transmit is
    /// written (the received bytes are overwritten).
    pub fn chunk_mut<'a>(&'a self, f: &'a mut RxFrame) -> &'a mut [u8] {
        debug_assert_eq!(f.queue, self.id);
        // SAFETY: the range lies in the frame's chunk, which `f` owns; the
        // `&mut` borrow keeps `data` from aliasing it.
        unsafe { self.umem.slice_mut(f.addr, Umem::room(f.addr)) }
    }

    /// Room for a frame to transmit in `f`'s chunk.
    pub fn room(f: &RxFrame) -> usize {
        Umem::room(f.addr)
    }

    /// Puts the first `len` bytes of `f`'s chunk on the TX ring (sent at the
    /// next [`Queue::flush`]). Gives the frame back when the ring is full.
    pub fn transmit(&self, f: RxFrame, len: usize) -> Result<(), RxFrame> {
        debug_assert_eq!(f.queue, self.id);
        let mut t = self.tx_side();
        if t.tx.free(1) == 0 {
            self.reap(&mut t);
            self.stats.tx_full.add(1);
            return Err(f);
        }
        t.tx.push(libc::xdp_desc { addr: f.addr, len: len as u32, options: 0 });
        t.tx.submit();
        t.unkicked = true;
        self.stats.tx.add(1);
        Ok(())
    }

    /// Gives `f`'s chunk back (nothing to send).
    pub fn release(&self, f: RxFrame) {
        self.tx_side().free.push(Umem::chunk_of(f.addr));
    }

    /// Wakes the kernel for the frames transmitted since the last flush (in
    /// copy mode it sends them in this call) and reaps completions.
    ///
    /// Copy mode sends at most 32 descriptors per `sendto` (`TX_BATCH_SIZE`
    /// in net/xdp/xsk.c) and answers EAGAIN while more remain, so it kicks
    /// until the ring is drained (bounded): frames must not wait for the
    /// next batch, which may be long in coming.
    pub fn flush(&self) {
        let mut t = self.tx_side();
        if !t.unkicked {
            self.reap(&mut t);
            return;
        }
        if self.zero_copy && !t.tx.needs_wakeup() {
            // The driver is polling the ring by itself.
            t.unkicked = false;
            self.reap(&mut t);
            return;
        }
        for _ in 0..MAX_KICKS {
            // SAFETY: sendto with no data only wakes the TX path.
            let r = unsafe {
                libc::sendto(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0)
            };
            self.reap(&mut t);
            let err = (r < 0).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0));
            match err {
                None if self.zero_copy || t.tx.pending() == 0 => {
                    t.unkicked = false;
                    break;
                }
                None => {}
                // More than one batch left, or the kernel is out of room
                // (skbs, completion ring): it keeps the descriptors.
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) if t.tx.pending() == 0 => {
                    t.unkicked = false;
                    break;
                }
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS) => {}
                Some(_) => {
                    self.stats.tx_kick_errors.add(1);
                    t.unkicked = false;
                    break;
                }
            }
        }
    }

    /// Whether descriptors wait for a wake-up (a flush should follow).
    pub fn tx_pending(&self) -> bool {
        let t = self.tx_side();
        t.unkicked || t.tx.pending() > 0
    }

    /// Completed TX chunks back to the free list.
    fn reap(&self, t: &mut TxSide) {
        let n = t.comp.available(u32::MAX);
        for i in 0..n {
            let a = t.comp.get(i);
            t.free.push(Umem::chunk_of(a));
        }
        if n > 0 {
            t.comp.release(n);
            self.stats.completed.add(u64::from(n));
        }
    }

    /// The kernel's counters for this socket (`XDP_STATISTICS`).
    pub fn kernel_stats(&self) -> io::Result<libc::xdp_statistics> {
        // SAFETY: plain integers.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        getsockopt(self.fd.as_raw_fd(), libc::XDP_STATISTICS, &mut s, "XDP_STATISTICS")?;
        Ok(s)
    }
}

impl AsRawFd for Queue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Offset of a received frame in its chunk (the kernel's headroom).
pub const RX_OFFSET: usize = XDP_PACKET_HEADROOM;

/// Wake-ups per [`Queue::flush`] at most (copy mode: 32 frames each).
const MAX_KICKS: usize = 64;

/// Bytes of `XskMeta` before the Ethernet header of a redirected frame.
pub const META_LEN: usize = size_of::<XskMeta>();
