//! Every map of the data plane, in one place. Names, sizes and value types
//! come from `sip_lb_common::maps`, the ABI shared with the loader.

use aya_ebpf::{
    macros::map,
    maps::{Array, CpuMap, HashMap, LpmTrie, LruHashMap, PerCpuArray, ReusePortSockArray, XskMap},
};
use sip_lb_common::maps::{
    Counters, RxRate, ScanBuf, ShieldConfig, ShieldGroupV4, ShieldGroupV6, ShieldSource, SteerConfig, XskAddr,
    XskCounters, MAX_CPUS, MAX_QUEUES, MAX_WORKERS, MAX_XSK_ADDRS, PORT_WORDS, SHIELD_GROUPS, SHIELD_HIT_SLOTS,
    SHIELD_MAX_OVER, SHIELD_MAX_PREFIXES,
};

/// Worker count and worker -> CPU table (one entry).
#[map(name = "CONFIG")]
pub static CONFIG: Array<SteerConfig> = Array::with_max_entries(1, 0);

/// SIP UDP destination ports as a bitmap: bit `port % 64` of entry
/// `port / 64` (an array lookup the verifier inlines; no hashing).
#[map(name = "SIP_PORTS")]
pub static SIP_PORTS: Array<u64> = Array::with_max_entries(PORT_WORDS, 0);

/// CPU number -> cpumap queue: the XDP redirect target.
#[map(name = "CPU_MAP")]
pub static CPU_MAP: CpuMap = CpuMap::with_max_entries(MAX_CPUS, 0);

/// Worker index -> that worker's socket in the SO_REUSEPORT group.
#[map(name = "WORKER_SOCKS")]
pub static WORKER_SOCKS: ReusePortSockArray = ReusePortSockArray::with_max_entries(MAX_WORKERS as u32, 0);

/// Counters of the XDP program.
#[map(name = "XDP_COUNTERS")]
pub static XDP_COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

/// Counters of the SK_REUSEPORT program.
#[map(name = "REUSEPORT_COUNTERS")]
pub static REUSEPORT_COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch the UDP payload is copied into before the scan.
#[map(name = "SCAN_BUF")]
pub static SCAN_BUF: PerCpuArray<ScanBuf> = PerCpuArray::with_max_entries(1, 0);

/// RX queue index -> the AF_XDP socket bound to that queue (`sip_lb_xsk`).
#[map(name = "XSK_MAP")]
pub static XSK_MAP: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

/// Our addresses (`XskAddr`; wildcards for "any of the family"): `sip_lb_xsk`
/// redirects only datagrams to these.
#[map(name = "XSK_ADDRS")]
pub static XSK_ADDRS: HashMap<XskAddr, u8> = HashMap::with_max_entries(MAX_XSK_ADDRS, 0);

/// Counters of the AF_XDP program.
#[map(name = "XSK_COUNTERS")]
pub static XSK_COUNTERS: PerCpuArray<XskCounters> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU SIP datagram rate: whether redirecting is worth it on this CPU.
#[map(name = "RX_RATE")]
pub static RX_RATE: PerCpuArray<RxRate> = PerCpuArray::with_max_entries(1, 0);

/// The shield's XDP stage: rate and on/off (one entry; see [`crate::shield`]).
#[map(name = "SHIELD_CONFIG")]
pub static SHIELD_CONFIG: Array<ShieldConfig> = Array::with_max_entries(1, 0);

/// `[shield] block` and `allow` (and the backends) and the runtime bans,
/// IPv4 prefixes, in two copies: `ShieldConfig::active` says which is in
/// force while the control plane rewrites the other. Value `SHIELD_ALLOW`
/// or the blocked prefix's `SHIELD_HITS` slot (one lookup decides: the
/// longest match).
#[map(name = "SHIELD_PREFIXES_V4")]
pub static SHIELD_PREFIXES_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(SHIELD_MAX_PREFIXES, 0);
#[map(name = "SHIELD_PREFIXES_V4_B")]
pub static SHIELD_PREFIXES_V4_B: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(SHIELD_MAX_PREFIXES, 0);

/// The same, IPv6.
#[map(name = "SHIELD_PREFIXES_V6")]
pub static SHIELD_PREFIXES_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(SHIELD_MAX_PREFIXES, 0);
#[map(name = "SHIELD_PREFIXES_V6_B")]
pub static SHIELD_PREFIXES_V6_B: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(SHIELD_MAX_PREFIXES, 0);

/// GCRA state per IPv4 source, by the group its keyed hash names (an array:
/// the lookup is inlined, no hashing helper; see [`crate::shield`]).
#[map(name = "SHIELD_BUCKETS_V4")]
pub static SHIELD_BUCKETS_V4: Array<ShieldGroupV4> = Array::with_max_entries(SHIELD_GROUPS, 0);

/// The same, IPv6 sources.
#[map(name = "SHIELD_BUCKETS_V6")]
pub static SHIELD_BUCKETS_V6: Array<ShieldGroupV6> = Array::with_max_entries(SHIELD_GROUPS, 0);

/// This CPU's GCRA theoretical arrival time for sources not followed yet
/// (`ShieldConfig::new_interval_ns`).
#[map(name = "SHIELD_NEW")]
pub static SHIELD_NEW: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Datagrams dropped per blocked prefix, by the slot its trie value names.
#[map(name = "SHIELD_HITS")]
pub static SHIELD_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SHIELD_HIT_SLOTS, 0);

/// Sources over their rate lately -> when reported; the control plane reads
/// and deletes them to ban sustained floods (`ban_after_over_rate_seconds`).
#[map(name = "SHIELD_OVER")]
pub static SHIELD_OVER: LruHashMap<ShieldSource, u64> = LruHashMap::with_max_entries(SHIELD_MAX_OVER, 0);
