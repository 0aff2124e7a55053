//! The UMEM: one anonymous mapping of `chunks` x [`CHUNK_SIZE`] bytes,
//! registered with an AF_XDP socket. Frames live in it; descriptors carry
//! offsets into it. The kernel writes a received frame at
//! `chunk + XDP_PACKET_HEADROOM`, so the metadata the XDP program reserved
//! (`XskMeta`) sits right before the descriptor's address, inside the chunk.

use std::io;
use std::ptr::NonNull;

/// Size of one chunk (aligned mode: a power of two, one frame each).
pub const CHUNK_SIZE: usize = 4096;
/// Headroom the kernel keeps before a received frame in its chunk.
pub const XDP_PACKET_HEADROOM: usize = 256;

/// The mapping; unmapped on drop (after the socket using it is closed).
pub struct Umem {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; which thread may touch which chunk is
// decided by ownership of `RxFrame` tokens (one owner per chunk).
unsafe impl Send for Umem {}
// SAFETY: as above.
unsafe impl Sync for Umem {}

impl Umem {
    /// Maps `chunks` chunks, populated (no page faults on the data path).
    pub fn new(chunks: usize) -> io::Result<Umem> {
        let len = chunks * CHUNK_SIZE;
        // SAFETY: anonymous private mapping, no file or address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p as *mut u8).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Umem { base, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn chunks(&self) -> usize {
        self.len / CHUNK_SIZE
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Start of the chunk holding `addr`.
    pub fn chunk_of(addr: u64) -> u64 {
        addr & !(CHUNK_SIZE as u64 - 1)
    }

    /// Bytes from `addr` to the end of its chunk.
    pub fn room(addr: u64) -> usize {
        CHUNK_SIZE - (addr as usize & (CHUNK_SIZE - 1))
    }

    /// `len` bytes at offset `addr`.
    ///
    /// # Safety
    /// `addr .. addr + len` lies in the mapping, within one chunk, and the
    /// caller owns that chunk (no one else writes it meanwhile).
    pub(crate) unsafe fn slice(&self, addr: u64, len: usize) -> &[u8] {
        debug_assert!(addr as usize + len <= self.len);
        // SAFETY: per the contract.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(addr as usize), len) }
    }

    /// `len` writable bytes at offset `addr`.
    ///
    /// # Safety
    /// As [`Umem::slice`], and no other reference to these bytes is alive.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, addr: u64, len: usize) -> &mut [u8] {
        debug_assert!(addr as usize + len <= self.len);
        // SAFETY: per the contract.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(addr as usize), len) }
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.len) };
    }
}
