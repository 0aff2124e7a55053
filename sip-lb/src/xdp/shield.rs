//! The shield's XDP maps, held by the control plane (`docs/shield.md`): it
//! writes the block and allow lists and the runtime bans into the tries,
//! reads the drops per ban, and takes the sources the program saw over
//! their rate.
//!
//! Each family's trie has two copies; `ShieldConfig::active` says which is
//! in force. A change rewrites the other copy (only the entries that differ
//! from what it held) and then flips `active` with one write of the config
//! entry: a datagram meets the old lists or the new ones, never half of a
//! change. A copy is not rewritten within [`SETTLE`] of the flip away from
//! it, so that a program run that read the old `active` has finished with it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, MapData, PerCpuArray, PerCpuValues,
    },
    util::nr_cpus,
    Ebpf,
};
use sip_lb_common::maps::{names, ShieldConfig, ShieldSource, SHIELD_ALLOW, SHIELD_HIT_SLOTS, SHIELD_MAX_PREFIXES};
use sip_lb_proto::shield::{Prefix, ShieldPolicy};

/// How long a copy of the tries is left alone after the flip away from it.
const SETTLE: Duration = Duration::from_millis(2);

/// Slot of `SHIELD_HITS` for the config's block list (bans get the others).
pub const CONFIG_SLOT: u32 = 0;

/// The trie contents for `policy` plus `bans` (prefix, hit slot): prefix ->
/// `SHIELD_ALLOW` or the block's slot. Allow is checked first in the policy,
/// so a block or ban covered by an allowed prefix (the same or a shorter one
/// containing it) is left out; an allowed prefix inside a blocked one is the
/// longer match anyway. A ban of a prefix also in the block list counts in
/// the ban's slot.
pub fn entries(policy: &ShieldPolicy, bans: &[(Prefix, u32)]) -> BTreeMap<Prefix, u32> {
    let allow = policy.allow.prefixes();
    let covered = |b: &Prefix| allow.iter().any(|a| a.bits() <= b.bits() && a.contains(b.addr()));
    let blocks = policy.block.prefixes().iter().map(|p| (*p, CONFIG_SLOT));
    let mut out: BTreeMap<Prefix, u32> = blocks.chain(bans.iter().copied()).filter(|(p, _)| !covered(p)).collect();
    out.extend(allow.iter().map(|a| (*a, SHIELD_ALLOW)));
    out
}

/// The shield's maps of one loaded program, taken out of its `Ebpf`.
pub struct XdpShield {
    maps: Mutex<Maps>,
}

struct Maps {
    v4: [LpmTrie<MapData, [u8; 4], u32>; 2],
    v6: [LpmTrie<MapData, [u8; 16], u32>; 2],
    config: Array<MapData, ShieldConfig>,
    hits: PerCpuArray<MapData, u64>,
    over: HashMap<MapData, ShieldSource, u64>,
    /// `ShieldConfig::group_keys`: random, and the same for the life of the
    /// program (new keys would move every source to another group).
    group_keys: [u64; 5],
    /// `ShieldConfig::tick_ns`.
    tick_ns: u64,
    /// What each copy holds.
    held: [BTreeMap<Prefix, u32>; 2],
    active: usize,
    flipped: Instant,
}

impl XdpShield {
    /// Takes the shield's maps out of `ebpf` (the programs keep using them).
    pub(crate) fn take(ebpf: &mut Ebpf) -> anyhow::Result<XdpShield> {
        let mut map = |name: &str| ebpf.take_map(name).with_context(|| format!("{name} map"));
        let [a4, b4] = names::SHIELD_PREFIXES_V4;
        let [a6, b6] = names::SHIELD_PREFIXES_V6;
        let maps = Maps {
            v4: [LpmTrie::try_from(map(a4)?)?, LpmTrie::try_from(map(b4)?)?],
            v6: [LpmTrie::try_from(map(a6)?)?, LpmTrie::try_from(map(b6)?)?],
            config: Array::try_from(map(names::SHIELD_CONFIG)?)?,
            hits: PerCpuArray::try_from(map(names::SHIELD_HITS)?)?,
            over: HashMap::try_from(map(names::SHIELD_OVER)?)?,
            group_keys: random_keys(),
            tick_ns: tick_ns()?,
            held: Default::default(),
            active: 0,
            flipped: Instant::now(),
        };
        Ok(XdpShield { maps: Mutex::new(maps) })
    }

    fn lock(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `policy` and `bans` (prefix, hit slot) in force: the copy not in
    /// force is rewritten, then made the active one. On error the lists in
    /// force stay as they were.
    pub fn publish(&self, policy: &ShieldPolicy, bans: &[(Prefix, u32)]) -> anyhow::Result<()> {
        let want = entries(policy, bans);
        let (n4, n6) = want.keys().fold((0, 0), |(a, b), p| if p.addr().is_ipv4() { (a + 1, b) } else { (a, b + 1) });
        ensure!(
            n4 <= SHIELD_MAX_PREFIXES && n6 <= SHIELD_MAX_PREFIXES,
            "the shield's XDP stage holds {SHIELD_MAX_PREFIXES} prefixes per family ({n4} IPv4, {n6} IPv6 given)"
        );
        let mut m = self.lock();
        let next = 1 - m.active;
        let settled = m.flipped + SETTLE;
        if let Some(wait) = settled.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let held = std::mem::take(&mut m.held[next]);
        for p in held.keys().filter(|p| !want.contains_key(p)) {
            m.remove(next, p)?;
        }
        for (p, v) in want.iter().filter(|(p, v)| held.get(p) != Some(v)) {
            m.insert(next, p, *v)?;
        }
        m.held[next] = want;
        let mut cfg = ShieldConfig { group_keys: m.group_keys, tick_ns: m.tick_ns, ..ShieldConfig::zeroed() };
        cfg.enabled = u32::from(m.held[next].values().any(|&v| v != SHIELD_ALLOW) || policy.rate.is_some());
        if let Some(rate) = policy.rate {
            cfg.interval_ns = rate.interval_ns();
            cfg.tolerance_ns = rate.tolerance_ns();
            // Only with a per-source rate: it is what follows sources.
            if let Some(new) = policy.new_sources {
                cfg.new_interval_ns = new.interval_ns();
                cfg.new_tolerance_ns = new.tolerance_ns();
            }
        }
        cfg.active = next as u32;
        m.config.set(0, cfg, 0).context("writing SHIELD_CONFIG")?;
        m.active = next;
        m.flipped = Instant::now();
        Ok(())
    }

    /// Datagrams the program dropped for the blocked prefix in `slot`.
    pub fn hits(&self, slot: u32) -> u64 {
        let m = self.lock();
        m.hits.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Zeroes `slot`'s count before it is given to a new ban.
    pub fn reset_hits(&self, slot: u32) -> anyhow::Result<()> {
        let cpus = nr_cpus().map_err(|(_, e)| e).context("possible CPUs")?;
        let zeros = PerCpuValues::try_from(vec![0u64; cpus])?;
        self.lock().hits.set(slot, zeros, 0).context("zeroing a SHIELD_HITS slot")
    }

    /// Takes the sources the program reported over their rate since the last
    /// call (each at most every `SHIELD_REPORT_NS`) into `out`.
    pub fn take_over_rate(&self, out: &mut Vec<IpAddr>) {
        let mut m = self.lock();
        let keys: Vec<ShieldSource> = m.over.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = m.over.remove(&k);
            let a = Ipv6Addr::from(k.addr);
            out.push(a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4));
        }
    }
}

/// Keys for the program's source hash, from the OS random number generator.
fn random_keys() -> [u64; 5] {
    let mut b = [0u8; 40];
    // No entropy at start-up is not something sip-lb could work around.
    getrandom::fill(&mut b).expect("the OS random number generator is unavailable");
    std::array::from_fn(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes")))
}

/// The kernel's tick in nanoseconds: the resolution of
/// `CLOCK_MONOTONIC_COARSE` is one jiffy (`TICK_NSEC`).
fn tick_ns() -> anyhow::Result<u64> {
    let mut res = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec we own.
    let r = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
    ensure!(r == 0, "clock_getres(CLOCK_MONOTONIC_COARSE): {}", std::io::Error::last_os_error());
    let ns = res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64;
    ensure!(ns > 0, "CLOCK_MONOTONIC_COARSE has no resolution");
    Ok(ns)
}

impl Maps {
    fn insert(&mut self, copy: usize, p: &Prefix, v: u32) -> anyhow::Result<()> {
        let bits = u32::from(p.bits());
        match p.addr() {
            IpAddr::V4(a) => self.v4[copy].insert(&Key::new(bits, a.octets()), v, 0),
            IpAddr::V6(a) => self.v6[copy].insert(&Key::new(bits, a.octets()), v, 0),
        }
        .with_context(|| format!("adding {p} to the shield's XDP tries"))
    }

    fn remove(&mut self, copy: usize, p: &Prefix) -> anyhow::Result<()> {
        let bits = u32::from(p.bits());
        match p.addr() {
            IpAddr::V4(a) => self.v4[copy].remove(&Key::new(bits, a.octets())),
            IpAddr::V6(a) => self.v6[copy].remove(&Key::new(bits, a.octets())),
        }
        .with_context(|| format!("removing {p} from the shield's XDP tries"))
    }
}

/// Hit slots must fit the program's mask.
const _: () = assert!(SHIELD_HIT_SLOTS.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;
    use sip_lb_proto::shield::PrefixSet;

    fn p(s: &str) -> Prefix {
        Prefix::parse(s).unwrap()
    }

    #[test]
    fn allow_covers_blocks_and_bans_bans_keep_their_slot() {
        let policy = ShieldPolicy {
            block: PrefixSet::new([p("192.0.2.0/24"), p("10.0.0.0/8")]),
            allow: PrefixSet::new([p("10.1.0.0/16")]),
            ..ShieldPolicy::default()
        };
        let bans = [(p("10.1.2.3"), 5), (p("192.0.2.0/24"), 7), (p("198.51.100.9"), 9)];
        let e = entries(&policy, &bans);
        assert_eq!(e.get(&p("10.1.2.3")), None, "a ban inside an allowed prefix is left out");
        assert_eq!(e.get(&p("192.0.2.0/24")), Some(&7), "the ban's slot counts a prefix also blocked");
        assert_eq!(e.get(&p("10.0.0.0/8")), Some(&CONFIG_SLOT));
        assert_eq!(e.get(&p("198.51.100.9")), Some(&9));
        assert_eq!(e.get(&p("10.1.0.0/16")), Some(&SHIELD_ALLOW));
        assert_eq!(e.len(), 4);
    }
}
