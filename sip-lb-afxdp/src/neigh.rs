//! The next hop's layer 2 for AF_XDP transmit: a mirror of the kernel's main
//! routing table, the interface's addresses and MAC, and its neighbours.
//!
//! A background thread dumps links, addresses, routes and neighbours over
//! rtnetlink, subscribes to their multicast groups and re-dumps whatever kind
//! changed; each result is published as one immutable `Snapshot` with
//! `arc-swap`. [`NeighbourTable::next_hop`] reads the current snapshot: no
//! lock, allocation or syscall on the hot path.
//!
//! Every change re-dumps its whole kind (routes, neighbours, ...), events
//! arriving meanwhile folded into one refresh: simple and never out of step
//! with the kernel, sized for the main table of a server, not for a router
//! carrying a full Internet table.
//!
//! Only the main routing table (`RT_TABLE_MAIN`) is mirrored: policy routing
//! (`ip rule`, other tables, VRFs) is not, nor are multipath routes, routes
//! whose gateway is of the other family (`via inet`), nor multicast and
//! broadcast destinations. Those, like an unresolved neighbour, give `None`
//! and the caller sends through the kernel socket path instead.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
    thread::JoinHandle,
};

use anyhow::{bail, Context as _};
use arc_swap::ArcSwap;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope},
    link::{LinkAttribute, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Where to send a frame for one destination: out of `ifindex`, from
/// `src_mac` to `dst_mac`, with `src_ip` as the IP source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: IpAddr,
}

/// The kernel's view of the next hops through one interface, kept current
/// by a background thread (stopped on drop).
pub struct NeighbourTable {
    ifindex: u32,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// An eventfd: written on drop to wake the thread and stop it.
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl NeighbourTable {
    /// Mirrors the kernel's routes and neighbours for traffic leaving through
    /// `ifindex`, kept up to date by a background thread subscribed to
    /// rtnetlink (RTMGRP_LINK/IPV4_ROUTE/IPV6_ROUTE/NEIGH/IFADDR groups);
    /// refreshed on change.
    ///
    /// Works in the network namespace of the calling thread. Fails when
    /// netlink does, or when no interface has index `ifindex`.
    pub fn start(ifindex: u32) -> anyhow::Result<NeighbourTable> {
        // Subscribe before the first dump, so no change falls in between.
        let mut events = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
        let groups = libc::RTMGRP_LINK
            | libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_ROUTE
            | libc::RTMGRP_NEIGH;
        events.bind(&SocketAddr::new(0, groups as u32)).context("subscribing to rtnetlink groups")?;
        // Room for bursts (a flapping link, an ARP storm); an overrun is
        // noticed (ENOBUFS) and answered with a full re-dump.
        let _ = events.set_rx_buf_sz(4 << 20);
        events.set_non_blocking(true).context("non-blocking netlink socket")?;

        let mut mirror = Mirror::new(ifindex)?;
        mirror.refresh(Dirty::ALL).context("dumping links, addresses, routes and neighbours")?;
        if !mirror.link_exists {
            bail!("no interface with index {ifindex}");
        }
        let snapshot = Arc::new(ArcSwap::from_pointee(mirror.snapshot()));

        // SAFETY: no pointer arguments; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("eventfd");
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let stop = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });

        let thread = std::thread::Builder::new()
            .name(format!("neigh-{ifindex}"))
            .spawn({
                let snapshot = snapshot.clone();
                let stop = stop.clone();
                move || follow(mirror, events, &stop, &snapshot)
            })
            .context("spawning the neighbour thread")?;
        Ok(NeighbourTable { ifindex, snapshot, stop, thread: Some(thread) })
    }

    /// The next hop for `dst` through that interface: the longest-prefix
    /// route (gateway or on-link), the source address (route's prefsrc, else
    /// the interface's primary address of the family), the interface MAC and
    /// the neighbour's MAC if its state is
    /// REACHABLE/STALE/DELAY/PROBE/PERMANENT/NOARP. None when unresolved or
    /// not routed through ifindex: the caller then sends through the kernel
    /// socket path, which resolves the neighbour; a later call returns Some
    /// once the kernel has it.
    pub fn next_hop(&self, dst: IpAddr) -> Option<NextHop> {
        let snap = self.snapshot.load();
        let (src_ip, gateway) = snap.route(dst)?;
        let dst_mac = snap.neighbour(gateway)?;
        Some(NextHop { ifindex: self.ifindex, src_mac: snap.mac?, dst_mac, src_ip })
    }
}

impl Drop for NeighbourTable {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our own eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The background thread: waits for rtnetlink events (or the stop eventfd),
/// re-dumps the kinds that changed and publishes a new snapshot.
fn follow(mut mirror: Mirror, events: Socket, stop: &OwnedFd, published: &ArcSwap<Snapshot>) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut dirty = Dirty::NONE;
    loop {
        // While a refresh failed, retry it every second.
        let timeout = if dirty == Dirty::NONE { -1 } else { 1000 };
        let mut fds = [
            libc::pollfd { fd: events.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is a live array of two pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!("neighbour table: poll: {e}; sending through the kernel from now on");
                // No longer followed: stale MACs would misdirect frames.
                published.store(Arc::new(Snapshot::default()));
                return;
            }
        }
        if fds[1].revents != 0 {
            return;
        }
        // Drain every pending event, then refresh once for all of them.
        loop {
            match events.recv(&mut &mut buf[..], 0) {
                Ok(len) => dirty = dirty | Dirty::of_events(&buf[..len]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => dirty = Dirty::ALL,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!("neighbour table: netlink receive: {e}; sending through the kernel from now on");
                    published.store(Arc::new(Snapshot::default()));
                    return;
                }
            }
        }
        if dirty == Dirty::NONE {
            continue;
        }
        match mirror.refresh(dirty) {
            Ok(()) => {
                dirty = Dirty::NONE;
                published.store(Arc::new(mirror.snapshot()));
            }
            Err(e) => tracing::warn!("neighbour table for ifindex {}: refresh failed, retrying: {e:#}", mirror.ifindex),
        }
    }
}

/// Large enough for any one netlink datagram (dumps send at most 32 KiB).
const RECV_BUF: usize = 64 << 10;

/// Which kinds of kernel object changed, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dirty(u8);

impl Dirty {
    const NONE: Dirty = Dirty(0);
    const LINKS: Dirty = Dirty(1);
    const ADDRS: Dirty = Dirty(2);
    const ROUTES: Dirty = Dirty(4);
    const NEIGHS: Dirty = Dirty(8);
    const ALL: Dirty = Dirty(15);

    fn has(self, kind: Dirty) -> bool {
        self.0 & kind.0 != 0
    }

    /// The kinds named by the messages of one netlink datagram.
    fn of_events(mut datagram: &[u8]) -> Dirty {
        let mut dirty = Dirty::NONE;
        while datagram.len() >= 16 {
            let len = u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
            let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
            dirty = dirty
                | match kind {
                    libc::RTM_NEWLINK | libc::RTM_DELLINK => Dirty::LINKS,
                    libc::RTM_NEWADDR | libc::RTM_DELADDR => Dirty::ADDRS,
                    libc::RTM_NEWROUTE | libc::RTM_DELROUTE => Dirty::ROUTES,
                    libc::RTM_NEWNEIGH | libc::RTM_DELNEIGH => Dirty::NEIGHS,
                    _ => Dirty::NONE,
                };
            let step = (len + 3) & !3;
            if len < 16 || step > datagram.len() {
                break;
            }
            datagram = &datagram[step..];
        }
        dirty
    }
}

impl std::ops::BitOr for Dirty {
    type Output = Dirty;
    fn bitor(self, other: Dirty) -> Dirty {
        Dirty(self.0 | other.0)
    }
}

/// The thread's copy of what the kernel said, by kind; the snapshot is
/// built from it after each refresh.
struct Mirror {
    ifindex: u32,
    /// The dump socket (requests and their answers only).
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    link_exists: bool,
    mac: Option<[u8; 6]>,
    addrs: Vec<Addr>,
    routes: Vec<Route>,
    neighbours: Vec<(IpAddr, [u8; 6])>,
}

/// An address of some interface.
struct Addr {
    ifindex: u32,
    ip: IpAddr,
    prefix_len: u8,
    /// Secondary (IPv4), tentative, deprecated or failed DAD (IPv6).
    secondary: bool,
    scope: AddressScope,
}

/// One route of the main table, either family.
struct Route {
    dst: IpAddr,
    prefix_len: u8,
    metric: u32,
    hop: Hop,
}

/// What a route does with a matching destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    /// Out of our interface, to the gateway or (None) on-link.
    Out { gateway: Option<IpAddr>, prefsrc: Option<IpAddr> },
    /// Anything else: another interface, blackhole, unreachable, multipath.
    Elsewhere,
}

impl Mirror {
    fn new(ifindex: u32) -> anyhow::Result<Mirror> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
        socket.bind_auto().context("binding the netlink socket")?;
        socket.connect(&SocketAddr::new(0, 0)).context("connecting the netlink socket")?;
        Ok(Mirror {
            ifindex,
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
            link_exists: false,
            mac: None,
            addrs: Vec::new(),
            routes: Vec::new(),
            neighbours: Vec::new(),
        })
    }

    /// Re-dumps the `dirty` kinds; a dump the kernel marks interrupted (the
    /// table changed during it) is repeated.
    fn refresh(&mut self, dirty: Dirty) -> anyhow::Result<()> {
        let mut retries = 0;
        loop {
            match self.try_refresh(dirty) {
                Err(e) if e.is::<Interrupted>() && retries < 10 => retries += 1,
                other => return other,
            }
        }
    }

    fn try_refresh(&mut self, dirty: Dirty) -> anyhow::Result<()> {
        if dirty.has(Dirty::LINKS) {
            let (mut exists, mut mac) = (false, None);
            let ifindex = self.ifindex;
            self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), |m| {
                if let RouteNetlinkMessage::NewLink(link) = m {
                    if link.header.index == ifindex {
                        exists = true;
                        mac = link.attributes.iter().find_map(|a| match a {
                            LinkAttribute::Address(bytes) => bytes.as_slice().try_into().ok(),
                            _ => None,
                        });
                    }
                }
            })?;
            (self.link_exists, self.mac) = (exists, mac);
        }
        if dirty.has(Dirty::ADDRS) {
            let mut addrs = Vec::new();
            self.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()), |m| {
                if let RouteNetlinkMessage::NewAddress(a) = m {
                    addrs.extend(Addr::parse(&a));
                }
            })?;
            self.addrs = addrs;
        }
        if dirty.has(Dirty::ROUTES) {
            let mut routes = Vec::new();
            let ifindex = self.ifindex;
            self.dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()), |m| {
                if let RouteNetlinkMessage::NewRoute(r) = m {
                    routes.extend(Route::parse(&r, ifindex));
                }
            })?;
            self.routes = routes;
        }
        if dirty.has(Dirty::NEIGHS) {
            let mut neighbours = Vec::new();
            let ifindex = self.ifindex;
            self.dump(RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()), |m| {
                if let RouteNetlinkMessage::NewNeighbour(n) = m {
                    neighbours.extend(usable_neighbour(&n, ifindex));
                }
            })?;
            self.neighbours = neighbours;
        }
        Ok(())
    }

    /// Sends one dump request and hands every answer to `each`.
    fn dump(&mut self, request: RouteNetlinkMessage, mut each: impl FnMut(RouteNetlinkMessage)) -> anyhow::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(request));
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0).context("netlink send")?;

        let mut interrupted = false;
        loop {
            let len = self.socket.recv(&mut &mut self.buf[..], 0).context("netlink receive")?;
            let mut at = 0;
            while at + 16 <= len {
                let bytes = &self.buf[at..len];
                let msg_len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                if msg_len < 16 || msg_len > bytes.len() {
                    bail!("malformed netlink message ({msg_len} bytes)");
                }
                at += (msg_len + 3) & !3;
                let msg = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..msg_len]) {
                    Ok(msg) => msg,
                    // One message this crate cannot parse (a new attribute
                    // layout): skip it rather than lose the table.
                    Err(e) => {
                        tracing::debug!("neighbour table: skipping a netlink message: {e}");
                        continue;
                    }
                };
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::Done(_) if interrupted => return Err(Interrupted.into()),
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => match e.code {
                        Some(code) => bail!("netlink dump: {}", std::io::Error::from_raw_os_error(-code.get())),
                        None => return Ok(()),
                    },
                    NetlinkPayload::InnerMessage(m) => each(m),
                    _ => {}
                }
            }
        }
    }

    /// The lookup structure for the current state.
    fn snapshot(&self) -> Snapshot {
        let mut local: Vec<IpAddr> = self.addrs.iter().map(|a| a.ip).collect();
        local.sort_unstable();
        local.dedup();
        let mut own: Vec<(IpAddr, u8, AddressScope)> = self
            .addrs
            .iter()
            .filter(|a| a.ifindex == self.ifindex && !a.secondary)
            .map(|a| (a.ip, a.prefix_len, a.scope))
            .collect();
        // Global addresses first, in the kernel's order otherwise.
        own.sort_by_key(|a| a.2 != AddressScope::Universe);
        let mut neighbours = self.neighbours.clone();
        neighbours.sort_unstable_by_key(|n| n.0);
        neighbours.dedup_by_key(|n| n.0);
        Snapshot {
            mac: self.mac,
            v4: Family::new(32, self.routes.iter().filter(|r| r.dst.is_ipv4())),
            v6: Family::new(128, self.routes.iter().filter(|r| r.dst.is_ipv6())),
            local,
            own,
            neighbours,
        }
    }
}

/// A dump the kernel marked NLM_F_DUMP_INTR: its content may be inconsistent.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("netlink dump interrupted by a change")
    }
}

impl std::error::Error for Interrupted {}

impl Addr {
    fn parse(msg: &AddressMessage) -> Option<Addr> {
        let h = &msg.header;
        // IFA_LOCAL is our address on point-to-point links, IFA_ADDRESS the peer's.
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        let flags = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Flags(f) => Some(*f),
            _ => None,
        });
        let unusable =
            AddressFlags::Secondary | AddressFlags::Tentative | AddressFlags::Deprecated | AddressFlags::Dadfailed;
        let secondary = match flags {
            Some(f) => f.intersects(unusable),
            None => h.flags.intersects(
                AddressHeaderFlags::Secondary
                    | AddressHeaderFlags::Tentative
                    | AddressHeaderFlags::Deprecated
                    | AddressHeaderFlags::Dadfailed,
            ),
        };
        Some(Addr { ifindex: h.index, ip: local.or(address)?, prefix_len: h.prefix_len, secondary, scope: h.scope })
    }
}

impl Route {
    /// A main-table IPv4 or IPv6 route, seen from `ifindex`.
    fn parse(msg: &RouteMessage, ifindex: u32) -> Option<Route> {
        let h = &msg.header;
        let table = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(h.table));
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            return None;
        }
        let ip = |a: &RouteAddress| match a {
            RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
            RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
            _ => None,
        };
        let unspecified = match h.address_family {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => return None,
        };
        let (mut dst, mut oif, mut gateway, mut prefsrc, mut metric) = (unspecified, None, None, None, 0);
        let mut other = false;
        for a in &msg.attributes {
            match a {
                RouteAttribute::Destination(d) => dst = ip(d)?,
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(g) => gateway = ip(g),
                RouteAttribute::PrefSource(s) => prefsrc = ip(s),
                RouteAttribute::Priority(p) => metric = *p,
                RouteAttribute::MultiPath(_) | RouteAttribute::Via(_) => other = true,
                _ => {}
            }
        }
        let out = !other && h.kind == RouteType::Unicast && oif == Some(ifindex);
        let hop = if out { Hop::Out { gateway, prefsrc } } else { Hop::Elsewhere };
        Some(Route { dst, prefix_len: h.destination_prefix_length, metric, hop })
    }
}

/// `(address, MAC)` of a neighbour on `ifindex` whose MAC may be used.
fn usable_neighbour(msg: &NeighbourMessage, ifindex: u32) -> Option<(IpAddr, [u8; 6])> {
    if msg.header.ifindex != ifindex {
        return None;
    }
    use NeighbourState as S;
    if !matches!(msg.header.state, S::Reachable | S::Stale | S::Delay | S::Probe | S::Permanent | S::Noarp) {
        return None;
    }
    let ip = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    let mac = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    })?;
    Some((ip, mac))
}

/// One published state: everything `next_hop` needs, immutable. The
/// default one resolves nothing.
#[derive(Default)]
struct Snapshot {
    mac: Option<[u8; 6]>,
    v4: Family,
    v6: Family,
    /// Every address of every interface, sorted: traffic to them stays in
    /// the host (the local table, which is not mirrored).
    local: Vec<IpAddr>,
    /// The interface's usable addresses with their prefix length and scope,
    /// global ones first.
    own: Vec<(IpAddr, u8, AddressScope)>,
    /// Usable neighbours on the interface, sorted by address.
    neighbours: Vec<(IpAddr, [u8; 6])>,
}

impl Snapshot {
    /// The source address and the neighbour to resolve (the gateway, or
    /// `dst` on-link) for `dst`, when it leaves through our interface.
    fn route(&self, dst: IpAddr) -> Option<(IpAddr, IpAddr)> {
        let unroutable = match dst {
            IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified(),
            IpAddr::V6(v6) => v6.is_multicast() || v6.is_unspecified(),
        };
        if unroutable || self.local.binary_search(&dst).is_ok() {
            return None;
        }
        let (key, family) = match dst {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), &self.v4),
            IpAddr::V6(v6) => (u128::from(v6), &self.v6),
        };
        let Hop::Out { gateway, prefsrc } = family.lookup(key)? else { return None };
        let next = gateway.unwrap_or(dst);
        let src = prefsrc.or_else(|| self.source_for(dst, next))?;
        Some((src, next))
    }

    /// The interface's primary address of `dst`'s family: IPv4 one on the
    /// next hop's subnet if there is one; IPv6 of link scope for link-local
    /// destinations, else global.
    fn source_for(&self, dst: IpAddr, next: IpAddr) -> Option<IpAddr> {
        let same_family = |a: &&(IpAddr, u8, AddressScope)| a.0.is_ipv4() == dst.is_ipv4();
        let pick = match dst {
            IpAddr::V4(_) => self.own.iter().filter(same_family).find(|a| contains(a.0, a.1, next)),
            IpAddr::V6(v6) if v6.is_unicast_link_local() => {
                self.own.iter().filter(same_family).find(|a| a.2 == AddressScope::Link)
            }
            IpAddr::V6(_) => self.own.iter().filter(same_family).find(|a| a.2 == AddressScope::Universe),
        };
        pick.or_else(|| self.own.iter().find(same_family)).map(|a| a.0)
    }

    fn neighbour(&self, ip: IpAddr) -> Option<[u8; 6]> {
        let i = self.neighbours.binary_search_by_key(&ip, |n| n.0).ok()?;
        Some(self.neighbours[i].1)
    }
}

/// Whether `ip` is in `net`/`len` (same family only).
fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => mask(u32::from(n).into(), len, 32) == mask(u32::from(i).into(), len, 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => mask(n.into(), len, 128) == mask(i.into(), len, 128),
        _ => false,
    }
}

/// The first `len` of the low `width` bits of `addr`, the rest zero.
fn mask(addr: u128, len: u8, width: u32) -> u128 {
    let shift = width.saturating_sub(u32::from(len));
    if shift >= 128 {
        0
    } else {
        (addr >> shift) << shift
    }
}

/// The routes of one family for longest-prefix match: one level per prefix
/// length in use, longest first, each sorted by network for binary search.
#[derive(Default)]
struct Family {
    width: u32,
    levels: Vec<(u8, Vec<(u128, Hop)>)>,
}

impl Family {
    /// `width`: 32 for IPv4, 128 for IPv6; `routes` of that family.
    fn new<'a>(width: u32, routes: impl Iterator<Item = &'a Route>) -> Family {
        let mut all: Vec<(u8, u128, u32, Hop)> = Vec::new();
        for r in routes {
            let key = match r.dst {
                IpAddr::V4(v4) => u128::from(u32::from(v4)),
                IpAddr::V6(v6) => u128::from(v6),
            };
            all.push((r.prefix_len, mask(key, r.prefix_len, width), r.metric, r.hop));
        }
        // Longest prefix first; for one prefix, the lowest metric wins.
        all.sort_unstable_by_key(|&(len, net, metric, _)| (std::cmp::Reverse(len), net, metric));
        all.dedup_by_key(|&mut (len, net, _, _)| (len, net));
        let mut levels: Vec<(u8, Vec<(u128, Hop)>)> = Vec::new();
        for (len, net, _, hop) in all {
            match levels.last_mut() {
                Some((l, entries)) if *l == len => entries.push((net, hop)),
                _ => levels.push((len, vec![(net, hop)])),
            }
        }
        Family { width, levels }
    }

    fn lookup(&self, key: u128) -> Option<Hop> {
        self.levels.iter().find_map(|(len, entries)| {
            let net = mask(key, *len, self.width);
            entries.binary_search_by_key(&net, |e| e.0).ok().map(|i| entries[i].1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, len: u8, metric: u32, hop: Hop) -> Route {
        Route { dst: dst.parse().unwrap(), prefix_len: len, metric, hop }
    }

    fn via(gw: &str) -> Hop {
        Hop::Out { gateway: Some(gw.parse().unwrap()), prefsrc: None }
    }

    #[test]
    fn longest_prefix_then_lowest_metric() {
        let routes = [
            route("0.0.0.0", 0, 0, via("10.0.0.1")),
            route("10.1.0.0", 16, 100, via("10.0.0.2")),
            route("10.1.0.0", 16, 50, via("10.0.0.3")),
            route("10.1.2.0", 24, 0, Hop::Elsewhere),
        ];
        let f = Family::new(32, routes.iter());
        let at = |s: &str| f.lookup(u128::from(u32::from(s.parse::<Ipv4Addr>().unwrap())));
        assert_eq!(at("192.0.2.1"), Some(via("10.0.0.1")));
        assert_eq!(at("10.1.9.9"), Some(via("10.0.0.3")));
        assert_eq!(at("10.1.2.3"), Some(Hop::Elsewhere));
    }

    #[test]
    fn ipv6_prefixes() {
        let routes = [route("2001:db8::", 32, 0, via("fe80::1")), route("::", 0, 0, Hop::Elsewhere)];
        let f = Family::new(128, routes.iter());
        let at = |s: &str| f.lookup(u128::from(s.parse::<Ipv6Addr>().unwrap()));
        assert_eq!(at("2001:db8:1::5"), Some(via("fe80::1")));
        assert_eq!(at("2001:db9::5"), Some(Hop::Elsewhere));
        assert_eq!(Family::new(128, [].iter()).lookup(1), None);
    }

    #[test]
    fn shared_by_the_data_path_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<NeighbourTable>();
    }

    #[test]
    fn event_kinds() {
        let mut datagram = vec![0u8; 32];
        datagram[..4].copy_from_slice(&16u32.to_ne_bytes());
        datagram[4..6].copy_from_slice(&libc::RTM_NEWNEIGH.to_ne_bytes());
        datagram[16..20].copy_from_slice(&16u32.to_ne_bytes());
        datagram[20..22].copy_from_slice(&libc::RTM_DELROUTE.to_ne_bytes());
        assert_eq!(Dirty::of_events(&datagram), Dirty::NEIGHS | Dirty::ROUTES);
    }
}
