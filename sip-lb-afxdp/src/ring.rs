//! The AF_XDP rings: arrays of `size` (a power of two) entries shared with
//! the kernel, with a producer and a consumer index (free-running u32) and a
//! flags word (`XDP_RING_NEED_WAKEUP`). Fill and TX are produced here and
//! consumed by the kernel; RX and completion the other way round. Each ring
//! has exactly one user-space side, so the indices need only acquire/release
//! ordering, as in libbpf's `xsk.h`.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// One mapped ring of `T` entries (`u64` addresses for fill/completion,
/// `xdp_desc` for RX/TX).
pub struct Ring<T: Copy> {
    map: *mut libc::c_void,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    /// Producer side: our next index to write. Consumer side: last seen producer.
    cached_prod: u32,
    /// Producer side: consumer + size as last seen. Consumer side: our next index to read.
    cached_cons: u32,
}

// SAFETY: the ring is a mapping owned by this value; one thread uses it at a
// time (it is behind `&mut` or a mutex).
unsafe impl<T: Copy> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Maps the ring of socket `fd` at page offset `pgoff` with the kernel's
    /// offsets `off`.
    pub(crate) fn map(
        fd: RawFd,
        pgoff: u64,
        off: &libc::xdp_ring_offset,
        size: u32,
        producer: bool,
    ) -> io::Result<Self> {
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: maps the ring the kernel created for this socket.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh mapping of map_len bytes laid out as `off` says.
        Ok(unsafe { Self::from_mapping(map, map_len, off, size, producer) })
    }

    /// The ring over an existing mapping (unmapped on drop).
    ///
    /// # Safety
    /// `map` is a mapping of `map_len` bytes holding the indices and
    /// `size` entries at the offsets of `off`.
    unsafe fn from_mapping(
        map: *mut libc::c_void,
        map_len: usize,
        off: &libc::xdp_ring_offset,
        size: u32,
        producer: bool,
    ) -> Self {
        let at = |o: u64| (map as usize + o as usize) as *const AtomicU32;
        let mut r = Ring {
            map,
            map_len,
            producer: at(off.producer),
            consumer: at(off.consumer),
            flags: at(off.flags),
            descs: (map as usize + off.desc as usize) as *mut T,
            mask: size - 1,
            cached_prod: 0,
            cached_cons: 0,
        };
        r.cached_prod = r.prod().load(Ordering::Relaxed);
        r.cached_cons = r.cons().load(Ordering::Relaxed);
        if producer {
            r.cached_cons = r.cached_cons.wrapping_add(size);
        }
        r
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping.
        unsafe { &*self.producer }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping.
        unsafe { &*self.consumer }
    }

    pub fn size(&self) -> u32 {
        self.mask + 1
    }

    /// The kernel asks to be woken up (`sendto`/`poll`) to make progress.
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: points into our live mapping.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // ---- producer side (fill, TX) ----

    /// Free slots, up to `want`.
    pub fn free(&mut self, want: u32) -> u32 {
        let mut free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free < want {
            self.cached_cons = self.cons().load(Ordering::Acquire).wrapping_add(self.size());
            free = self.cached_cons.wrapping_sub(self.cached_prod);
        }
        free.min(want)
    }

    /// Entries the kernel has not consumed yet (producer side).
    pub fn pending(&self) -> u32 {
        self.cached_prod.wrapping_sub(self.cons().load(Ordering::Acquire))
    }

    /// Writes one entry; the caller checked [`Ring::free`]. Visible to the
    /// kernel after [`Ring::submit`].
    pub fn push(&mut self, v: T) {
        // SAFETY: masked index into the mapped array.
        unsafe { self.descs.add((self.cached_prod & self.mask) as usize).write(v) };
        self.cached_prod = self.cached_prod.wrapping_add(1);
    }

    /// Publishes the pushed entries.
    pub fn submit(&mut self) {
        self.prod().store(self.cached_prod, Ordering::Release);
    }

    // ---- consumer side (RX, completion) ----

    /// Entries ready to read, up to `want`.
    pub fn available(&mut self, want: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n == 0 {
            self.cached_prod = self.prod().load(Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(want)
    }

    /// The `i`-th entry after the last released one (`i < available`).
    pub fn get(&self, i: u32) -> T {
        // SAFETY: masked index into the mapped array.
        unsafe { self.descs.add((self.cached_cons.wrapping_add(i) & self.mask) as usize).read() }
    }

    /// Gives `n` read entries back to the kernel.
    pub fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.cons().store(self.cached_cons, Ordering::Release);
    }
}

impl<T: Copy> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: libc::xdp_ring_offset = libc::xdp_ring_offset { producer: 0, consumer: 64, flags: 128, desc: 192 };

    /// A ring over anonymous memory whose indices both start at `start`;
    /// the kernel's side is played by hand: producer index at 0, consumer at
    /// 64, flags at 128, entries at 192.
    fn ring(size: u32, producer: bool, start: u32) -> Ring<u64> {
        let len = 4096;
        // SAFETY: anonymous private mapping.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        for o in [OFF.producer, OFF.consumer] {
            // SAFETY: inside the fresh mapping, aligned.
            unsafe { ((map as usize + o as usize) as *mut u32).write(start) };
        }
        // SAFETY: 4096 bytes hold the indices and up to 488 u64 entries.
        unsafe { Ring::from_mapping(map, len, &OFF, size, producer) }
    }

    /// Writes entry `i` (masked) as the kernel would.
    fn put(r: &Ring<u64>, i: u32, v: u64) {
        // SAFETY: masked index into the entries.
        unsafe { r.descs.add((i & r.mask) as usize).write(v) };
    }

    fn entry(r: &Ring<u64>, i: u32) -> u64 {
        // SAFETY: masked index into the entries.
        unsafe { r.descs.add((i & r.mask) as usize).read() }
    }

    #[test]
    fn producer_fills_wraps_and_sees_the_consumer() {
        for start in [0, u32::MAX - 1] {
            let mut r = ring(4, true, start);
            assert_eq!(r.free(8), 4, "an empty ring of 4 has 4 free slots");
            for v in 0..4 {
                r.push(v);
            }
            r.submit();
            assert_eq!(r.free(1), 0, "full");
            assert_eq!(r.pending(), 4);
            // The kernel consumes 3: three slots free again.
            r.cons().store(start.wrapping_add(3), Ordering::Release);
            assert_eq!(r.free(8), 3);
            assert_eq!(r.pending(), 1);
            for v in 4..7 {
                r.push(v);
            }
            r.submit();
            assert_eq!(r.prod().load(Ordering::Acquire), start.wrapping_add(7));
            let got: Vec<u64> = (4..7).map(|i| entry(&r, start.wrapping_add(i))).collect();
            assert_eq!(got, [4, 5, 6], "start {start}");
        }
    }

    #[test]
    fn consumer_reads_what_was_produced_and_releases() {
        for start in [0, u32::MAX] {
            let mut r = ring(4, false, start);
            assert_eq!(r.available(4), 0);
            // The kernel produces two entries (across the u32 wrap for start = MAX).
            put(&r, start, 10);
            put(&r, start.wrapping_add(1), 11);
            r.prod().store(start.wrapping_add(2), Ordering::Release);
            assert_eq!(r.available(8), 2);
            assert_eq!((r.get(0), r.get(1)), (10, 11));
            r.release(2);
            assert_eq!(r.cons().load(Ordering::Acquire), start.wrapping_add(2));
            assert_eq!(r.available(8), 0);
            assert!(!r.needs_wakeup());
        }
    }
}
