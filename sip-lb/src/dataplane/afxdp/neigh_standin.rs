//! STAND-IN for `sip_lb_afxdp::neigh` (the rtnetlink route/neighbour mirror
//! written on another branch), with the same API, to be deleted when that
//! lands. It only knows on-link neighbours: every 100 ms it reads the
//! interface's neighbour table and addresses with `ip -o neigh/addr show
//! dev IF`; a destination without a usable neighbour entry (or behind a
//! gateway) is `None`, and the caller sends it through the socket path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

/// How to reach a destination on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: IpAddr,
}

#[derive(Default)]
struct Snapshot {
    src_mac: [u8; 6],
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
    neigh: HashMap<IpAddr, [u8; 6]>,
}

/// The interface's neighbours, refreshed in the background.
pub struct NeighbourTable {
    ifindex: u32,
    snap: Arc<RwLock<Snapshot>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

fn read(iface: &str) -> anyhow::Result<Snapshot> {
    let mut s = Snapshot::default();
    let out = Command::new("ip").args(["-o", "link", "show", "dev", iface]).output()?;
    let link = String::from_utf8_lossy(&out.stdout);
    let mac = link.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).context("interface MAC")?;
    s.src_mac = parse_mac(mac).context("interface MAC")?;
    let out = Command::new("ip").args(["-o", "addr", "show", "dev", iface, "scope", "global"]).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if let Some(i) = w.iter().position(|x| *x == "inet" || *x == "inet6") {
            let ip: Option<IpAddr> = w.get(i + 1).and_then(|a| a.split('/').next()).and_then(|a| a.parse().ok());
            match ip {
                Some(ip @ IpAddr::V4(_)) if s.v4.is_none() => s.v4 = Some(ip),
                Some(ip @ IpAddr::V6(_)) if s.v6.is_none() => s.v6 = Some(ip),
                _ => {}
            }
        }
    }
    let out = Command::new("ip").args(["-o", "neigh", "show", "dev", iface]).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (Some(ip), Some(i)) = (w.first().and_then(|a| a.parse().ok()), w.iter().position(|x| *x == "lladdr"))
        else {
            continue;
        };
        if w.iter().any(|x| matches!(*x, "FAILED" | "INCOMPLETE")) {
            continue;
        }
        if let Some(mac) = w.get(i + 1).and_then(|m| parse_mac(m)) {
            s.neigh.insert(ip, mac);
        }
    }
    Ok(s)
}

impl NeighbourTable {
    pub fn start(ifindex: u32) -> anyhow::Result<NeighbourTable> {
        let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: the buffer has IF_NAMESIZE bytes.
        if unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null() {
            anyhow::bail!("no interface with index {ifindex}");
        }
        // SAFETY: if_indextoname wrote a NUL-terminated name.
        let iface = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
        let snap = Arc::new(RwLock::new(read(&iface)?));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (snap, stop) = (snap.clone(), stop.clone());
            std::thread::Builder::new().name("sip-lb-neigh".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    match read(&iface) {
                        Ok(s) => *snap.write().unwrap_or_else(|e| e.into_inner()) = s,
                        Err(e) => tracing::debug!("neighbour refresh: {e:#}"),
                    }
                }
            })?
        };
        Ok(NeighbourTable { ifindex, snap, stop, thread: Some(thread) })
    }

    /// How to reach `dst`; `None` when unresolved.
    pub fn next_hop(&self, dst: IpAddr) -> Option<NextHop> {
        let s = self.snap.read().unwrap_or_else(|e| e.into_inner());
        let dst_mac = *s.neigh.get(&dst)?;
        let src_ip = if dst.is_ipv4() { s.v4? } else { s.v6? };
        Some(NextHop { ifindex: self.ifindex, src_mac: s.src_mac, dst_mac, src_ip })
    }
}

impl Drop for NeighbourTable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
