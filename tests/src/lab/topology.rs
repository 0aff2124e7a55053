//! The lab's network: three namespaces joined by two veth pairs.
//!
//! ```text
//!  client ns               lb ns                              farm ns
//!  SIPp UAC                sip-lb (XDP on lb0)                4 x Kamailio, port 5060
//!  cli0 10.77.1.1 ---veth--- lb0 10.77.1.2                    reg1  10.77.2.11
//!                            lb1 10.77.2.1 ---veth--- farm0   reg2  10.77.2.12
//!                                                             rdr1  10.77.2.13
//!                                                             rdr2  10.77.2.14
//! ```
//! Addresses and device names are the same in every run: each run has its own namespaces
//! (named `<prefix>-<pid>-<n>`), so parallel runs do not see each other. Namespaces are
//! deleted on drop (see `netns.rs`), which also destroys the veth ends in them.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};

use super::netns::{NetNs, Veth};

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
pub const LB_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
pub const LB_FARM_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
pub const SIP_PORT: u16 = 5060;
/// The lab's "NIC": sip-lb's interface facing the clients, where XDP is attached.
pub const LB_NIC: &str = "lb0";
const CLIENT_DEV: &str = "cli0";
const LB_FARM_DEV: &str = "lb1";
const FARM_DEV: &str = "farm0";

/// The farm's instances: (name, role, IP).
pub const FARM: [(&str, Role, Ipv4Addr); 4] = [
    ("reg1", Role::Registrar, Ipv4Addr::new(10, 77, 2, 11)),
    ("reg2", Role::Registrar, Ipv4Addr::new(10, 77, 2, 12)),
    ("rdr1", Role::Redirect, Ipv4Addr::new(10, 77, 2, 13)),
    ("rdr2", Role::Redirect, Ipv4Addr::new(10, 77, 2, 14)),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Registrar,
    Redirect,
}

impl Role {
    pub fn config_file(self) -> &'static str {
        match self {
            Role::Registrar => "registrar.cfg",
            Role::Redirect => "redirect.cfg",
        }
    }
}

pub fn sip_addr(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((ip, SIP_PORT))
}

/// The namespaces; dropping it deletes them (processes inside must be stopped first).
pub struct Topology {
    pub client: NetNs,
    pub lb: NetNs,
    pub farm: NetNs,
}

impl Topology {
    pub fn create() -> Result<Topology> {
        let client = NetNs::new("slb-client")?;
        let lb = NetNs::new("slb-lb")?;
        let farm = NetNs::new("slb-farm")?;
        let topo = Topology { client, lb, farm };
        topo.wire().context("wiring the lab's veth pairs")?;
        Ok(topo)
    }

    fn wire(&self) -> Result<()> {
        let (c, l, f) = (&self.client, &self.lb, &self.farm);
        Veth::new(c, CLIENT_DEV, &format!("{CLIENT_IP}/24"), l, LB_NIC, &format!("{LB_IP}/24"))?;
        Veth::new(l, LB_FARM_DEV, &format!("{LB_FARM_IP}/24"), f, FARM_DEV, &format!("{}/24", FARM[0].2))?;
        for (_, _, ip) in &FARM[1..] {
            f.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", FARM_DEV])?;
        }
        // sip-lb's Via says 10.77.1.2: the farm answers there through the lb namespace.
        f.exec(&["ip", "route", "add", "default", "via", &LB_FARM_IP.to_string()])?;
        // Locally sent UDP over veth carries a partial checksum (tx offload); after the XDP
        // redirect into a CPU map the stack would count it as bad and drop it
        // (shared/notes/ebpf.md). Real NICs deliver full checksums; here the senders compute them.
        c.exec(&["ethtool", "-K", CLIENT_DEV, "tx", "off"])?;
        f.exec(&["ethtool", "-K", FARM_DEV, "tx", "off"])?;
        Ok(())
    }

    pub fn names(&self) -> Vec<String> {
        [&self.client, &self.lb, &self.farm].iter().map(|n| n.name().to_owned()).collect()
    }
}
