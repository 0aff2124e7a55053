//! The bench's network: one-armed, as a balancer usually sits. Client, lb
//! and farm namespaces each have one veth to a bridge in a switch
//! namespace; the lb's single interface carries both sides, so requests and
//! responses arrive and leave by the same "NIC" (where XDP or AF_XDP sits).
//!
//! ```text
//!  client ns                switch ns              lb ns
//!  bcli 10.78.1.1/24 ---+                     +--- blb 10.78.1.2/24, 10.78.2.1/24
//!                       +---- bridge bsw -----+
//!  farm ns              |                          (ip_forward on: the router baseline)
//!  bfarm 10.78.2.11/24 -+  (and .12)
//! ```
//! Client and farm are in different subnets, routed through the lb's
//! addresses, so the router baseline really routes (in and out of one
//! interface) and the balancers are addressed directly. Static neighbours
//! keep ARP out of the measurements; TX checksum offload is off on every
//! sender (a partial checksum is "bad" after an XDP redirect).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use std::process::Command;

use sip_lb_tests::netns::{self, NetNs};

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 1);
pub const LB_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 2);
pub const LB_FARM_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 2, 1);
pub const FARM: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 78, 2, 11), Ipv4Addr::new(10, 78, 2, 12)];
pub const SIP_PORT: u16 = 5060;
/// The lb's one interface.
pub const LB_NIC: &str = "blb";

/// The namespaces; dropping them deletes the veths and the bridge.
pub struct OneArmed {
    pub client: NetNs,
    pub lb: NetNs,
    pub farm: NetNs,
    pub switch: NetNs,
}

impl OneArmed {
    pub fn create() -> Result<OneArmed> {
        let t = OneArmed {
            client: NetNs::new("bench-client")?,
            lb: NetNs::new("bench-lb")?,
            farm: NetNs::new("bench-farm")?,
            switch: NetNs::new("bench-sw")?,
        };
        t.wire().context("wiring the bench's bridge")?;
        Ok(t)
    }

    fn wire(&self) -> Result<()> {
        let sw = &self.switch;
        sw.exec(&["ip", "link", "add", "bsw", "type", "bridge"])?;
        sw.exec(&["ip", "link", "set", "bsw", "up"])?;
        let ends = [
            (&self.client, "bcli", format!("{CLIENT_IP}/24"), "pcli"),
            (&self.lb, LB_NIC, format!("{LB_IP}/24"), "plb"),
            (&self.farm, "bfarm", format!("{}/24", FARM[0]), "pfarm"),
        ];
        for (ns, dev, cidr, port) in &ends {
            netns::run(Command::new("ip").args([
                "link",
                "add",
                dev,
                "netns",
                ns.name(),
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                sw.name(),
            ]))?;
            ns.exec(&["ip", "addr", "add", cidr, "dev", dev])?;
            ns.exec(&["ip", "link", "set", dev, "up"])?;
            ns.exec(&["ethtool", "-K", dev, "tx", "off"])?;
            sw.exec(&["ip", "link", "set", port, "master", "bsw", "up"])?;
        }
        self.lb.exec(&["ip", "addr", "add", &format!("{LB_FARM_IP}/24"), "dev", LB_NIC])?;
        self.farm.exec(&["ip", "addr", "add", &format!("{}/24", FARM[1]), "dev", "bfarm"])?;
        self.client.exec(&["ip", "route", "add", "10.78.2.0/24", "via", &LB_IP.to_string()])?;
        self.farm.exec(&["ip", "route", "add", "default", "via", &LB_FARM_IP.to_string()])?;
        for k in ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.blb.send_redirects=0"] {
            self.lb.exec(&["sysctl", "-qw", k])?;
        }
        // Static neighbours: no ARP in the measurements.
        let mac = |ns: &NetNs, dev: &str| -> Result<String> {
            let out = ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")])?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let (cli, lb, farm) = (mac(&self.client, "bcli")?, mac(&self.lb, LB_NIC)?, mac(&self.farm, "bfarm")?);
        let neigh = |ns: &NetNs, ip: Ipv4Addr, mac: &str, dev: &str| {
            ns.exec(&["ip", "neigh", "replace", &ip.to_string(), "lladdr", mac, "dev", dev, "nud", "permanent"])
        };
        neigh(&self.client, LB_IP, &lb, "bcli")?;
        neigh(&self.farm, LB_FARM_IP, &lb, "bfarm")?;
        neigh(&self.lb, CLIENT_IP, &cli, LB_NIC)?;
        for ip in FARM {
            neigh(&self.lb, ip, &farm, LB_NIC)?;
        }
        Ok(())
    }
}

pub fn sip_addr(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), SIP_PORT)
}
