//! Ctrl-C during a lab run: instead of dying at once (which would leave the namespaces
//! behind), the run notices at its next wait, stops what it started and deletes the
//! namespaces. A second Ctrl-C still counts: the handler is restored when the run ends.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT handler; returns the previous disposition for [`restore`].
pub fn catch() -> libc::sighandler_t {
    INTERRUPTED.store(false, Ordering::SeqCst);
    let handler = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, handler) }
}

pub fn restore(previous: libc::sighandler_t) {
    if previous != libc::SIG_ERR {
        // SAFETY: puts back the disposition `catch` replaced.
        unsafe { libc::signal(libc::SIGINT, previous) };
    }
}

/// Error if Ctrl-C was pressed since [`catch`].
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted (Ctrl-C)");
    }
    Ok(())
}
