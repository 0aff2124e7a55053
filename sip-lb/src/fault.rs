//! Failure containment: a panic anywhere takes the whole process down.
//!
//! A worker that died would leave its SO_REUSEPORT sockets in their groups,
//! and the reuseport selector (or the kernel's hash) would keep handing it
//! 1/N of the Call-IDs, dropped without a trace while the process looks
//! healthy. So [`run_or_abort`] logs a worker panic with the worker's index
//! and aborts the process (SIGABRT): the XDP link and every socket close
//! with it, and a supervisor (systemd `Restart=on-failure`) starts a clean
//! one. See docs/operations.md, "When sip-lb crashes".
//!
//! The control plane gets the same through [`abort_on_any_panic`] (installed
//! by `sip-lb run`): tokio would otherwise catch a panicking task and carry
//! on without it, e.g. with no prober (backend states frozen) or no control
//! API, while the data plane forwards on.
//!
//! For tests, debug builds only: `SIP_LB_FAULT` arms one [`Fault`].
//! Release builds compile the checks out and warn that the variable is
//! ignored.
use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};

/// The bytes that set off an armed [`Fault::WorkerPanic`] (e.g. as a header
/// `X-Fault: sip-lb-fault=worker-panic`).
pub const WORKER_PANIC_TRIGGER: &[u8] = b"sip-lb-fault=worker-panic";

/// A fault `SIP_LB_FAULT` can arm (debug builds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `worker-panic`: the worker that receives a datagram carrying
    /// [`WORKER_PANIC_TRIGGER`] panics.
    WorkerPanic,
    /// `control-panic`: on SIGHUP a control-plane task panics.
    ControlPanic,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::WorkerPanic => "worker-panic",
            Fault::ControlPanic => "control-panic",
        }
    }
}

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs worker `index`'s loop; if it panics, logs that and aborts the
/// process. Never returns after a panic, whatever the panic hook does.
pub fn run_or_abort(index: usize, worker: impl FnOnce()) {
    WORKER.with(|w| w.set(Some(index)));
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(worker)) {
        let msg = message(&*payload);
        tracing::error!(
            worker = index,
            "worker {index} panicked ({msg}): aborting sip-lb, or its sockets would black-hole 1/N of the \
             Call-IDs; the supervisor should restart it"
        );
        // Also unformatted, in case the log subscriber is what broke.
        eprintln!("sip-lb: worker {index} panicked: {msg}; aborting");
        std::process::abort();
    }
}

/// Makes a panic on any thread abort the process once the default hook has
/// printed it. Worker threads are left to [`run_or_abort`], which logs the
/// worker index first. Call once, before starting threads.
pub fn abort_on_any_panic() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        default(info);
        if current_worker().is_some() {
            return;
        }
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        tracing::error!(thread = name, "panic outside the workers: aborting sip-lb; the supervisor should restart it");
        eprintln!("sip-lb: panic on thread {name}; aborting");
        std::process::abort();
    }));
}

/// The index of the worker running on this thread, if it is a worker.
pub fn current_worker() -> Option<usize> {
    WORKER.with(Cell::get)
}

fn message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Whether `SIP_LB_FAULT` arms `fault` (read once). Always false in release
/// builds.
#[cfg(debug_assertions)]
pub fn armed(fault: Fault) -> bool {
    static ARMED: std::sync::OnceLock<Option<Fault>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let v = std::env::var("SIP_LB_FAULT").ok()?;
        let f = [Fault::WorkerPanic, Fault::ControlPanic].into_iter().find(|f| f.name() == v);
        match f {
            Some(f) => tracing::warn!("SIP_LB_FAULT={} armed (debug build)", f.name()),
            None => tracing::warn!("SIP_LB_FAULT={v:?} is not a fault (worker-panic, control-panic): ignored"),
        }
        f
    });
    *armed == Some(fault)
}

/// Release builds: no fault is ever armed.
#[cfg(not(debug_assertions))]
pub fn armed(_fault: Fault) -> bool {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        if std::env::var_os("SIP_LB_FAULT").is_some() {
            tracing::warn!("SIP_LB_FAULT is ignored: fault injection exists only in debug builds");
        }
    });
    false
}

/// Called by a worker for every datagram: panics if [`Fault::WorkerPanic`]
/// is armed and the datagram carries [`WORKER_PANIC_TRIGGER`].
#[cfg(debug_assertions)]
#[inline]
pub fn inject(index: usize, datagram: &[u8]) {
    if armed(Fault::WorkerPanic) && memchr::memmem::find(datagram, WORKER_PANIC_TRIGGER).is_some() {
        panic!("SIP_LB_FAULT=worker-panic: worker {index} got the trigger datagram");
    }
}

/// Release builds: nothing to inject.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn inject(_index: usize, _datagram: &[u8]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_messages() {
        assert_eq!(message(&"static"), "static");
        assert_eq!(message(&String::from("owned")), "owned");
        assert_eq!(message(&7u32), "non-string panic payload");
    }

    #[test]
    fn only_workers_know_their_index() {
        assert_eq!(current_worker(), None);
        let seen = std::thread::spawn(|| {
            let mut seen = None;
            run_or_abort(3, || seen = current_worker());
            seen
        })
        .join()
        .unwrap();
        assert_eq!(seen, Some(3));
    }

    #[test]
    fn unarmed_trigger_does_nothing() {
        assert!(std::env::var_os("SIP_LB_FAULT").is_none(), "run the unit tests without SIP_LB_FAULT");
        assert!(!armed(Fault::WorkerPanic) && !armed(Fault::ControlPanic));
        inject(0, WORKER_PANIC_TRIGGER);
    }
}
