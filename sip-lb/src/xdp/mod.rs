//! Call-ID steering: every SIP datagram reaches the worker that owns its
//! Call-ID (`worker_for_hash(call_id_hash(id), workers)`), even when a
//! carrier trunk sends all calls over one UDP 5-tuple.
//!
//! Two eBPF programs from `sip-lb-ebpf` share one Call-ID scanner:
//! - an SK_REUSEPORT program on the workers' SO_REUSEPORT group picks worker
//!   i's socket from the payload's Call-ID: this alone gives the affinity,
//!   with or without XDP (loopback, no interface);
//! - an XDP program on the interface redirects the frame into a CPU map at
//!   worker i's CPU, so the kernel's receive work (skb, UDP lookup, socket
//!   queue) is spread over the worker CPUs instead of the one RSS CPU.
//!
//! See `docs/xdp-steering.md` for why.
//!
//! # Wiring (data plane)
//! ```text
//! // main thread: bind one SO_REUSEPORT UDP socket per worker, in worker
//! // order (group index == worker index), for one listen address; then:
//! let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|s| s.as_fd()).collect();
//! let steering =
//!     xdp::Steering::attach(iface /* Option<&str> */, &fds, &worker_cpus, &[5060], redirect_above_pps, &policy)?;
//! tracing::info!("steering: {}", steering.mode());
//! // start the workers (worker i pinned to worker_cpus[i]); keep `steering`
//! // alive until they stop: dropping it detaches both programs.
//! let counters = steering.counters()?; // for metrics
//! ```
//! Requires root; a missing interface is an error.

mod counters;
pub mod frame;
mod mode;
mod object;
pub mod shield;
mod testrun;
pub mod xsk;

use std::{
    ffi::CString,
    os::fd::{BorrowedFd, OwnedFd},
};

use anyhow::{bail, ensure, Context as _};
use aya::{
    programs::{SkReuseport, XdpMode},
    Ebpf,
};
use sip_lb_common::maps::names;
use sip_lb_proto::shield::ShieldPolicy;

pub use counters::{ProgramCounters, XdpCounters};
pub use mode::SteeringMode;
pub use sip_lb_common::maps::{Counters, PassReason, MAX_CALL_ID_SPAN, MAX_WORKERS, SCAN_WINDOW};
pub use testrun::{Verdict, XdpTestProgram};

/// The attached steering programs. Dropping it detaches them.
pub struct Steering {
    ebpf: Ebpf,
    mode: SteeringMode,
    /// The shield's maps, for the control plane.
    shield: std::sync::Arc<shield::XdpShield>,
    /// A dup of worker 0's socket, to detach the reuseport program on drop.
    group: OwnedFd,
}

impl Steering {
    /// Attaches steering for one listen address.
    ///
    /// - `iface`: interface to attach XDP to (native mode, else generic with a
    ///   warning); `None` for reuseport-only steering (e.g. loopback).
    /// - `sockets`: the bound SO_REUSEPORT UDP sockets of that address, in
    ///   worker index order (socket i = worker i), all in one group.
    /// - `worker_cpus`: CPU worker i is pinned to (`worker_cpus.len()` workers).
    /// - `sip_ports`: UDP destination ports the XDP program inspects.
    /// - `redirect_above_pps`: XDP redirects only while the receiving CPU
    ///   sees more SIP datagrams per second than this (0: always); below it
    ///   the reuseport program alone keeps the affinity (`docs/xdp-steering.md`).
    /// - `shield`: the policy the XDP program's shield stage starts with
    ///   (block, allow, rate); the control plane keeps it current through
    ///   [`Steering::shield`].
    pub fn attach(
        iface: Option<&str>,
        sockets: &[BorrowedFd<'_>],
        worker_cpus: &[u32],
        sip_ports: &[u16],
        redirect_above_pps: u32,
        shield: &ShieldPolicy,
    ) -> anyhow::Result<Steering> {
        object::require_root()?;
        ensure!(
            sockets.len() == worker_cpus.len(),
            "one socket per worker: {} sockets for {} workers",
            sockets.len(),
            worker_cpus.len()
        );
        if let Some(name) = iface {
            let c = CString::new(name).context("interface name")?;
            // SAFETY: valid NUL-terminated string.
            if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
                bail!("interface {name:?} does not exist");
            }
        }

        let mut ebpf = object::open()?;
        object::configure(&mut ebpf, worker_cpus, sip_ports)?;
        object::set_redirect_above(&mut ebpf, per_window(redirect_above_pps))?;
        let shield = std::sync::Arc::new(object::configure_shield(&mut ebpf, shield)?);
        object::configure_sockets(&mut ebpf, sockets)?;
        let group = sockets[0].try_clone_to_owned().context("dup of worker 0's socket")?;
        object::load_reuseport(&mut ebpf)?.attach(&group).context("SO_ATTACH_REUSEPORT_EBPF on the workers' group")?;

        let mode = match iface {
            None => SteeringMode::ReuseportOnly,
            Some(name) => {
                object::configure_cpu_map(&mut ebpf, worker_cpus)?;
                let prog = object::load_xdp(&mut ebpf)?;
                match prog.attach(name, XdpMode::Driver) {
                    Ok(_) => SteeringMode::XdpDriver { iface: name.to_owned() },
                    Err(e) => {
                        tracing::warn!(iface = name, error = %e, "native XDP attach failed, using generic (SKB) XDP");
                        prog.attach(name, XdpMode::Skb)
                            .with_context(|| format!("attaching XDP to {name} (generic mode)"))?;
                        SteeringMode::XdpGeneric { iface: name.to_owned() }
                    }
                }
            }
        };
        Ok(Steering { ebpf, mode, shield, group })
    }

    /// The active mechanism (log it at start-up).
    pub fn mode(&self) -> SteeringMode {
        self.mode.clone()
    }

    /// The XDP program's shield maps, when it is attached to an interface.
    pub fn shield(&self) -> Option<std::sync::Arc<shield::XdpShield>> {
        (self.mode != SteeringMode::ReuseportOnly).then(|| self.shield.clone())
    }

    /// Per-CPU and summed counters of both programs.
    pub fn counters(&self) -> anyhow::Result<XdpCounters> {
        let xdp = match self.mode {
            SteeringMode::ReuseportOnly => None,
            _ => Some(ProgramCounters::read(&self.ebpf, names::XDP_COUNTERS)?),
        };
        let reuseport = ProgramCounters::read(&self.ebpf, names::REUSEPORT_COUNTERS)?;
        Ok(XdpCounters { xdp, reuseport })
    }
}

/// A rate in datagrams per second as a count per `RX_RATE_WINDOW_NS`,
/// rounded up so that any non-zero rate stays a threshold (0 stays "always").
pub fn per_window(pps: u32) -> u32 {
    use sip_lb_common::maps::RX_RATE_WINDOW_NS;
    (u64::from(pps) * RX_RATE_WINDOW_NS).div_ceil(1_000_000_000) as u32
}

impl Drop for Steering {
    fn drop(&mut self) {
        // The XDP link goes with `ebpf`; the reuseport program is per group.
        if let Err(e) = SkReuseport::detach(&self.group) {
            tracing::warn!(error = %e, "detaching the reuseport program");
        }
    }
}
