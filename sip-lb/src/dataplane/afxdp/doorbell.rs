//! A worker's doorbell: how a thread that handed frames to a sleeping worker
//! wakes it. The worker sleeps in poll(2) on its RX queue's socket (if it
//! owns one) and on this eventfd together, so one wait covers both kinds of
//! work; a hand-off rings only when the worker said it is about to sleep,
//! which keeps the write(2) off the busy path.
//!
//! The race (a job pushed just as the worker decides to sleep) is closed
//! Dekker-style: the worker publishes `sleeping` then re-checks its queue;
//! the sender pushes then reads `sleeping`; SeqCst fences on both sides mean
//! at least one of them sees the other.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering::SeqCst};

pub struct Doorbell {
    fd: OwnedFd,
    sleeping: AtomicBool,
}

impl Doorbell {
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        Ok(Doorbell { fd: unsafe { OwnedFd::from_raw_fd(fd) }, sleeping: AtomicBool::new(false) })
    }

    /// Called by a sender after it queued work: wakes the owner if it sleeps.
    pub fn ring(&self) {
        fence(SeqCst);
        if self.sleeping.load(SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a valid buffer to our eventfd. A
            // full counter (EAGAIN) still leaves it readable: nothing lost.
            unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    /// Sleeps up to `timeout_ms` unless `has_work` says otherwise once the
    /// worker is marked asleep; also wakes when `also` (an RX socket) is
    /// readable.
    pub fn sleep(&self, also: Option<RawFd>, timeout_ms: i32, has_work: impl Fn() -> bool) {
        self.sleeping.store(true, SeqCst);
        fence(SeqCst);
        if !has_work() {
            let mut fds = [
                libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: also.unwrap_or(-1), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: two valid pollfds (a negative fd is ignored by poll).
            unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
            if fds[0].revents & libc::POLLIN != 0 {
                let mut buf = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a valid buffer; the fd
                // is non-blocking.
                unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            }
        }
        self.sleeping.store(false, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A ring while the worker sleeps ends the sleep long before its
    /// timeout (a ring while it is awake writes nothing).
    #[test]
    fn a_ring_wakes_a_sleeper() {
        let bell = Arc::new(Doorbell::new().unwrap());
        bell.ring(); // awake: no write
        let b = bell.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            b.sleep(None, 10_000, || false);
            start.elapsed()
        });
        // Ring until the sleeper is marked asleep and woken.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.is_finished() && Instant::now() < deadline {
            bell.ring();
            std::thread::yield_now();
        }
        let slept = t.join().unwrap();
        assert!(slept < Duration::from_secs(5), "not woken: {slept:?}");
    }

    #[test]
    fn pending_work_skips_the_sleep() {
        let bell = Doorbell::new().unwrap();
        let start = Instant::now();
        bell.sleep(None, 10_000, || true);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
