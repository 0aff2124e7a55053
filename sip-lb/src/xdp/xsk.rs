//! The AF_XDP data path's XDP program, `sip_lb_xsk` (`sip-lb-ebpf/src/xsk.rs`):
//! loading it, telling it the workers, SIP ports and our addresses,
//! registering each queue's AF_XDP socket in `XSK_MAP`, attaching it, and
//! reading its counters. The link is fd-based: it goes away with the
//! process, also after SIGKILL, and the maps with it.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use anyhow::Context as _;
use aya::{
    maps::{HashMap, PerCpuArray, XskMap},
    programs::{Xdp, XdpMode},
    Ebpf,
};
use sip_lb_common::maps::{names, XskAddr, XskCounters};
use sip_lb_proto::shield::ShieldPolicy;

use super::object;

/// The loaded (and, after [`XskProgram::attach`], attached) program.
pub struct XskProgram {
    ebpf: Ebpf,
    shield: std::sync::Arc<super::shield::XdpShield>,
}

/// Where the program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XskAttach {
    /// In the driver (native XDP).
    Driver,
    /// Generic (SKB) XDP: the driver has no native XDP.
    Generic,
}

impl std::fmt::Display for XskAttach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Driver => "native XDP",
            Self::Generic => "generic (skb) XDP",
        })
    }
}

impl XskProgram {
    /// Loads the program for `workers` workers, redirecting datagrams to
    /// `ports` at `addrs` (an unspecified address: any of its family),
    /// dropping what `shield` blocks or rate-limits (at load; the control
    /// plane keeps it current through [`XskProgram::shield`]).
    pub fn load(workers: usize, ports: &[u16], addrs: &[IpAddr], shield: &ShieldPolicy) -> anyhow::Result<XskProgram> {
        let mut ebpf = object::open()?;
        object::configure(&mut ebpf, &vec![0; workers], ports)?;
        let shield = std::sync::Arc::new(object::configure_shield(&mut ebpf, shield)?);
        let mut map: HashMap<_, XskAddr, u8> =
            HashMap::try_from(ebpf.map_mut(names::XSK_ADDRS).context("XSK_ADDRS map")?)?;
        for a in addrs {
            let key = match a {
                IpAddr::V4(v4) => XskAddr::v4(v4.octets()),
                IpAddr::V6(v6) => XskAddr::v6(v6.octets()),
            };
            map.insert(key, 1, 0).with_context(|| format!("adding {a} to XSK_ADDRS"))?;
        }
        let prog: &mut Xdp =
            ebpf.program_mut(names::XSK_PROG).context("AF_XDP program missing from the object")?.try_into()?;
        prog.load().context("verifier rejected the AF_XDP program")?;
        Ok(XskProgram { ebpf, shield })
    }

    /// The program's shield maps.
    pub fn shield(&self) -> std::sync::Arc<super::shield::XdpShield> {
        self.shield.clone()
    }

    /// Sends frames of RX queue `queue` to `socket` (an AF_XDP socket bound
    /// to that queue).
    pub fn register(&mut self, queue: u32, socket: &impl AsRawFd) -> anyhow::Result<()> {
        let mut map: XskMap<_> = XskMap::try_from(self.ebpf.map_mut(names::XSK_MAP).context("XSK_MAP map")?)?;
        map.set(queue, socket.as_raw_fd(), 0).with_context(|| format!("XSK_MAP[{queue}]"))?;
        Ok(())
    }

    /// Attaches to `iface`: native, else generic with a warning.
    pub fn attach(&mut self, iface: &str) -> anyhow::Result<XskAttach> {
        let prog: &mut Xdp = self.ebpf.program_mut(names::XSK_PROG).context("AF_XDP program")?.try_into()?;
        match prog.attach(iface, XdpMode::Driver) {
            Ok(_) => Ok(XskAttach::Driver),
            Err(e) => {
                tracing::warn!(iface, error = %e, "native XDP attach failed, using generic (SKB) XDP");
                prog.attach(iface, XdpMode::Skb).with_context(|| format!("attaching the AF_XDP program to {iface}"))?;
                Ok(XskAttach::Generic)
            }
        }
    }

    /// Runs `frame` once with BPF_PROG_TEST_RUN (not attached; tests):
    /// the raw XDP action.
    pub fn test_run(&self, frame: &[u8]) -> anyhow::Result<u32> {
        use aya::programs::{TestRun, TestRunOptions};
        let prog: &Xdp = self.ebpf.program(names::XSK_PROG).context("AF_XDP program")?.try_into()?;
        let opts = TestRunOptions { data_in: Some(frame), repeat: 1, ..TestRunOptions::new() };
        Ok(prog.test_run(opts).context("BPF_PROG_TEST_RUN")?.return_value)
    }

    /// The program's counters, per CPU.
    pub fn counters(&self) -> anyhow::Result<Vec<XskCounters>> {
        let array: PerCpuArray<_, XskCounters> =
            PerCpuArray::try_from(self.ebpf.map(names::XSK_COUNTERS).context("XSK_COUNTERS map")?)?;
        let values = array.get(&0, 0).context("reading XSK_COUNTERS")?;
        Ok(values.iter().copied().collect())
    }
}
