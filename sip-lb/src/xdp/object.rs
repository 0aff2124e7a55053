//! The embedded eBPF object: loading it and writing its configuration maps.

use std::os::fd::{AsRawFd, BorrowedFd};

use anyhow::{bail, ensure, Context as _};
use aya::{
    maps::{Array, CpuMap, ReusePortSockArray},
    programs::{SkReuseport, Xdp},
    Ebpf,
};
use sip_lb_common::maps::{names, SteerConfig, CPU_MAP_QUEUE_SIZE, MAX_CPUS, MAX_WORKERS};
use sip_lb_proto::shield::ShieldPolicy;

use super::shield::XdpShield;

/// sip-lb-ebpf, built by `build.rs` into OUT_DIR.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-lb"));

/// Loading needs root, or CAP_BPF + CAP_NET_ADMIN (the packaged unit's
/// user: `crate::caps`).
pub(crate) fn require_root() -> anyhow::Result<()> {
    if !crate::caps::may_load_bpf() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        bail!("sip-lb XDP/reuseport steering needs root or CAP_BPF + CAP_NET_ADMIN; running as uid {euid} without");
    }
    Ok(())
}

/// Loads the object (maps created, programs not yet loaded into the kernel).
///
/// Without the kernel's BTF: the programs use no CO-RE relocations, and
/// parsing /sys/kernel/btf/vmlinux is what made the process peak at 40 MiB.
pub(crate) fn open() -> anyhow::Result<Ebpf> {
    require_root()?;
    aya::EbpfLoader::new().btf(None).load(OBJECT).context("loading the sip-lb eBPF object")
}

/// Loads (verifies) the XDP program.
pub(crate) fn load_xdp(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    let prog: &mut Xdp =
        ebpf.program_mut(names::XDP_PROG).context("XDP program missing from the object")?.try_into()?;
    prog.load().context("verifier rejected the XDP program")?;
    Ok(prog)
}

/// Loads (verifies) the SK_REUSEPORT program.
pub(crate) fn load_reuseport(ebpf: &mut Ebpf) -> anyhow::Result<&mut SkReuseport> {
    let prog: &mut SkReuseport =
        ebpf.program_mut(names::REUSEPORT_PROG).context("SK_REUSEPORT program missing from the object")?.try_into()?;
    prog.load().context("verifier rejected the SK_REUSEPORT program")?;
    Ok(prog)
}

/// Writes the worker table and SIP ports.
pub(crate) fn configure(ebpf: &mut Ebpf, worker_cpus: &[u32], sip_ports: &[u16]) -> anyhow::Result<()> {
    ensure!(
        (1..=MAX_WORKERS).contains(&worker_cpus.len()),
        "steering supports 1..={MAX_WORKERS} workers, got {}",
        worker_cpus.len()
    );
    let mut cfg = SteerConfig::zeroed();
    cfg.workers = worker_cpus.len() as u32;
    cfg.worker_cpus[..worker_cpus.len()].copy_from_slice(worker_cpus);
    let mut config: Array<_, SteerConfig> = Array::try_from(ebpf.map_mut(names::CONFIG).context("CONFIG map")?)?;
    config.set(0, cfg, 0).context("writing CONFIG")?;

    let mut ports: Array<_, u64> = Array::try_from(ebpf.map_mut(names::SIP_PORTS).context("SIP_PORTS map")?)?;
    for &port in sip_ports {
        let (word, bit) = (u32::from(port) / 64, port % 64);
        let bits = ports.get(&word, 0).context("reading SIP_PORTS")?;
        ports.set(word, bits | 1 << bit, 0).with_context(|| format!("adding SIP port {port}"))?;
    }
    Ok(())
}

/// Rewrites the redirect threshold in CONFIG (see `SteerConfig::redirect_above`).
pub(crate) fn set_redirect_above(ebpf: &mut Ebpf, per_window: u32) -> anyhow::Result<()> {
    let mut config: Array<_, SteerConfig> = Array::try_from(ebpf.map_mut(names::CONFIG).context("CONFIG map")?)?;
    let mut cfg = config.get(&0, 0).context("reading CONFIG")?;
    cfg.redirect_above = per_window;
    config.set(0, cfg, 0).context("writing CONFIG")?;
    Ok(())
}

/// One CPU-map queue per distinct worker CPU.
pub(crate) fn configure_cpu_map(ebpf: &mut Ebpf, worker_cpus: &[u32]) -> anyhow::Result<()> {
    let mut cpus: CpuMap<_> = CpuMap::try_from(ebpf.map_mut(names::CPU_MAP).context("CPU_MAP map")?)?;
    for &cpu in worker_cpus {
        ensure!(cpu < MAX_CPUS, "worker CPU {cpu} >= MAX_CPUS ({MAX_CPUS})");
        cpus.set(cpu, CPU_MAP_QUEUE_SIZE, None, 0).with_context(|| format!("adding CPU {cpu} to the CPU map"))?;
    }
    Ok(())
}

/// Worker i's socket at index i of the reuseport socket array.
pub(crate) fn configure_sockets(ebpf: &mut Ebpf, sockets: &[BorrowedFd<'_>]) -> anyhow::Result<()> {
    let mut socks: ReusePortSockArray<_> =
        ReusePortSockArray::try_from(ebpf.map_mut(names::WORKER_SOCKS).context("WORKER_SOCKS map")?)?;
    for (i, fd) in sockets.iter().enumerate() {
        socks.set(i as u32, fd, 0).with_context(|| {
            format!(
                "adding worker {i}'s socket (fd {}) to WORKER_SOCKS; is it a bound SO_REUSEPORT UDP socket?",
                fd.as_raw_fd()
            )
        })?;
    }
    Ok(())
}

/// Takes the shield's maps out of `ebpf` and writes `policy` into them (no
/// bans yet): the XDP stage as the process starts.
pub(crate) fn configure_shield(ebpf: &mut Ebpf, policy: &ShieldPolicy) -> anyhow::Result<XdpShield> {
    let shield = XdpShield::take(ebpf)?;
    shield.publish(policy, &[])?;
    Ok(shield)
}
