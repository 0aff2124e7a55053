//! Map keys and values shared by the XDP program and its loader.
//!
//! This is the whole ABI between `sip-lb-ebpf` and `sip-lb::xdp`: map names,
//! sizes, the configuration record and the counter record. Both sides use
//! these definitions; nothing about the maps is spelled twice.

/// Most workers steering can address (size of the per-worker arrays).
pub const MAX_WORKERS: usize = 64;

/// Bytes of UDP payload the programs copy and scan for the Call-ID header.
/// A Call-ID header line must start within this window and its value must end
/// within it; otherwise the datagram is passed unsteered (`TooLong`).
pub const SCAN_WINDOW: usize = 2048;

/// Size of the per-CPU scan buffer: a power of two so every index can be
/// masked into bounds, plus slack for the 8-byte reads near the end.
pub const SCAN_BUF_LEN: usize = 4096 + 64;
/// Mask applied to every scan-buffer index (keeps the verifier happy).
pub const SCAN_BUF_MASK: usize = 4095;

/// Bytes a Call-ID value (with its leading whitespace) may span.
pub const MAX_CALL_ID_SPAN: usize = 256;

/// Queue size given to each CPU-map entry (frames in flight per target CPU).
pub const CPU_MAP_QUEUE_SIZE: u32 = 2048;
/// Entries of the CPU map: the highest CPU number that can own a worker, +1.
pub const MAX_CPUS: u32 = 256;

/// Length of the window over which the XDP program counts each CPU's SIP
/// datagrams to decide whether redirecting is worth it (see
/// [`SteerConfig::redirect_above`]).
pub const RX_RATE_WINDOW_NS: u64 = 1_000_000;

/// Entries of the SIP port bitmap (65536 ports / 64 bits).
pub const PORT_WORDS: u32 = 1024;

/// Map names, as the loader looks them up in the object.
pub mod names {
    /// `Array<SteerConfig>`, one entry.
    pub const CONFIG: &str = "CONFIG";
    /// `Array<u64>` of `PORT_WORDS` entries: a bitmap of SIP UDP ports,
    /// bit `port % 64` of entry `port / 64`.
    pub const SIP_PORTS: &str = "SIP_PORTS";
    /// `CpuMap`, key = CPU number.
    pub const CPU_MAP: &str = "CPU_MAP";
    /// `ReusePortSockArray`, key = worker index.
    pub const WORKER_SOCKS: &str = "WORKER_SOCKS";
    /// `PerCpuArray<Counters>`, one entry: the XDP program's counters.
    pub const XDP_COUNTERS: &str = "XDP_COUNTERS";
    /// `PerCpuArray<Counters>`, one entry: the SK_REUSEPORT program's counters.
    pub const REUSEPORT_COUNTERS: &str = "REUSEPORT_COUNTERS";
    /// `PerCpuArray<ScanBuf>`, one entry: scratch for the payload copy.
    pub const SCAN_BUF: &str = "SCAN_BUF";
    /// `XskMap`, key = RX queue index: the AF_XDP socket bound to that queue.
    pub const XSK_MAP: &str = "XSK_MAP";
    /// `HashMap<XskAddr, u8>`: the addresses `sip_lb_xsk` redirects for.
    pub const XSK_ADDRS: &str = "XSK_ADDRS";
    /// `PerCpuArray<XskCounters>`, one entry: the AF_XDP program's counters.
    pub const XSK_COUNTERS: &str = "XSK_COUNTERS";
    /// The AF_XDP redirect program.
    pub const XSK_PROG: &str = "sip_lb_xsk";
    /// `PerCpuArray<RxRate>`, one entry: this CPU's recent SIP datagram rate.
    pub const RX_RATE: &str = "RX_RATE";
    /// `Array<ShieldConfig>`, one entry: the XDP stage of the shield.
    pub const SHIELD_CONFIG: &str = "SHIELD_CONFIG";
    /// `LpmTrie<[u8; 4], u32>`, two of them (`ShieldConfig::active` picks
    /// one): `[shield] block` and `allow` (plus the backends) and the runtime
    /// bans, IPv4; value [`SHIELD_ALLOW`] or the block's hit slot.
    pub const SHIELD_PREFIXES_V4: [&str; 2] = ["SHIELD_PREFIXES_V4", "SHIELD_PREFIXES_V4_B"];
    /// `LpmTrie<[u8; 16], u32>`: the same, IPv6.
    pub const SHIELD_PREFIXES_V6: [&str; 2] = ["SHIELD_PREFIXES_V6", "SHIELD_PREFIXES_V6_B"];
    /// `Array<ShieldGroupV4>` of [`SHIELD_GROUPS`]: GCRA state per IPv4
    /// source, found by a keyed hash (`ShieldConfig::group_keys`).
    pub const SHIELD_BUCKETS_V4: &str = "SHIELD_BUCKETS_V4";
    /// `Array<ShieldGroupV6>` of [`SHIELD_GROUPS`]: the same, IPv6.
    pub const SHIELD_BUCKETS_V6: &str = "SHIELD_BUCKETS_V6";
    /// `PerCpuArray<u64>` of [`SHIELD_HIT_SLOTS`]: datagrams dropped per
    /// blocked prefix (slot 0: the config's block list; others: one ban each).
    pub const SHIELD_HITS: &str = "SHIELD_HITS";
    /// `PerCpuArray<u64>`, one entry: this CPU's GCRA time for new sources.
    pub const SHIELD_NEW: &str = "SHIELD_NEW";
    /// `LruHashMap<ShieldSource, u64>`: sources over their rate lately (the
    /// time of the report), taken and emptied by the control plane.
    pub const SHIELD_OVER: &str = "SHIELD_OVER";
    /// Program names.
    pub const XDP_PROG: &str = "sip_lb";
    pub const REUSEPORT_PROG: &str = "sip_lb_reuseport";
}

/// Configuration written by userspace before traffic flows.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SteerConfig {
    /// Number of workers (1..=MAX_WORKERS). 0 disables steering.
    pub workers: u32,
    /// The XDP program redirects a SIP datagram into the CPU map only while
    /// the receiving CPU has seen more than this many SIP datagrams in the
    /// current or the previous `RX_RATE_WINDOW_NS`; below it, datagrams go up
    /// the stack on the receiving CPU unscanned and the reuseport program
    /// alone picks the owner's socket. 0: always redirect.
    pub redirect_above: u32,
    /// CPU each worker is pinned to (the CPU-map key to redirect to).
    pub worker_cpus: [u32; MAX_WORKERS],
}

impl SteerConfig {
    pub const fn zeroed() -> Self {
        Self { workers: 0, redirect_above: 0, worker_cpus: [0; MAX_WORKERS] }
    }
}

/// One CPU's SIP datagram count in the current and the previous window.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RxRate {
    /// Start of the current window (bpf_ktime_get_ns).
    pub window_start: u64,
    pub count: u64,
    /// The previous window's count, 0 if it was not the one just before.
    pub previous: u64,
}

/// Why a datagram was passed to the stack unsteered.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassReason {
    /// Not IPv4/IPv6, or not UDP (TCP, ICMP, ARP, IPv6 extension headers).
    NotIpUdp = 0,
    /// UDP to a port that is not a configured SIP port.
    OtherPort = 1,
    /// An IP fragment (MF set or offset != 0, IPv6 fragment header).
    Fragment = 2,
    /// A header or the UDP length runs past the end of the frame.
    Truncated = 3,
    /// Payload does not look like a SIP message (e.g. CRLF keep-alive).
    NotSip = 4,
    /// SIP header block without a Call-ID.
    NoCallId = 5,
    /// The Call-ID header or value is not within `SCAN_WINDOW`/`MAX_CALL_ID_SPAN`.
    TooLong = 6,
    /// The CPU-map redirect (or socket select) failed; stack fallback.
    SteerFailed = 7,
    /// AF_XDP program: UDP to a SIP port but not to one of our addresses.
    OtherAddress = 8,
    /// AF_XDP program: no AF_XDP socket bound to the frame's RX queue.
    NoSocket = 9,
}

/// Number of [`PassReason`]s the steering programs (`sip_lb`, `sip_lb_reuseport`)
/// count: the first eight; the AF_XDP program's own follow ([`PassReason::XSK_ALL`]).
pub const PASS_REASONS: usize = 8;

impl PassReason {
    pub const ALL: [PassReason; PASS_REASONS] = [
        Self::NotIpUdp,
        Self::OtherPort,
        Self::Fragment,
        Self::Truncated,
        Self::NotSip,
        Self::NoCallId,
        Self::TooLong,
        Self::SteerFailed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::NotIpUdp => "not_ip_udp",
            Self::OtherPort => "other_port",
            Self::Fragment => "fragment",
            Self::Truncated => "truncated",
            Self::NotSip => "not_sip",
            Self::NoCallId => "no_call_id",
            Self::TooLong => "too_long",
            Self::SteerFailed => "steer_failed",
            Self::OtherAddress => "other_address",
            Self::NoSocket => "no_socket",
        }
    }
}

impl PassReason {
    /// Every reason the AF_XDP program counts (the steering reasons and its own).
    pub const XSK_ALL: [PassReason; 10] = [
        Self::NotIpUdp,
        Self::OtherPort,
        Self::Fragment,
        Self::Truncated,
        Self::NotSip,
        Self::NoCallId,
        Self::TooLong,
        Self::SteerFailed,
        Self::OtherAddress,
        Self::NoSocket,
    ];
}

/// Per-CPU counters of one program (one map entry per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    /// Frames seen by the program.
    pub packets: u64,
    /// Bytes of those frames (whole frame incl. fragments).
    pub bytes: u64,
    /// Passed unsteered, by [`PassReason`].
    pub passed: [u64; PASS_REASONS],
    /// Steered, by target worker index.
    pub steered: [u64; MAX_WORKERS],
    /// Call-ID hash of the last steered datagram on this CPU (debugging/tests).
    pub last_hash: u64,
    /// XDP: steered datagrams whose owner's CPU is the receiving CPU, passed
    /// up the stack here instead of through the CPU map (part of `steered`).
    pub kept_local: u64,
    /// XDP: SIP datagrams passed unscanned because the receiving CPU was
    /// below `SteerConfig::redirect_above` (not part of `steered` or
    /// `passed`); the reuseport program still picks the owner's socket.
    pub below_threshold: u64,
    /// XDP: SIP datagrams dropped (XDP_DROP) by the shield's block list.
    pub shield_blocked: u64,
    /// XDP: SIP datagrams dropped (XDP_DROP) over their source's rate.
    pub shield_rate_limited: u64,
}

impl Counters {
    pub const fn zeroed() -> Self {
        Self {
            packets: 0,
            bytes: 0,
            passed: [0; PASS_REASONS],
            steered: [0; MAX_WORKERS],
            last_hash: 0,
            kept_local: 0,
            below_threshold: 0,
            shield_blocked: 0,
            shield_rate_limited: 0,
        }
    }
}

/// Scratch buffer the payload is copied into before scanning.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ScanBuf {
    pub data: [u8; SCAN_BUF_LEN],
    pub state: ScanState,
}

/// Scanner scratch next to the payload.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScanState {
    /// Every buffer index is stored here and loaded back (volatile) before
    /// use: the verifier forgets scalars that went through a map value, so
    /// it masks the index into bounds without tracking the scan position
    /// precisely. Tracked precisely, every iteration of the 2 KiB scan loop
    /// would be a new verifier state and the program "too large".
    pub idx: u64,
}

// ---- AF_XDP (`sip_lb_xsk`): redirect into the RX queue's AF_XDP socket ----

/// Entries of `XSK_MAP` (RX queue index -> AF_XDP socket): queues addressable.
pub const MAX_QUEUES: u32 = 256;

/// Entries of `XSK_ADDRS`: local addresses the AF_XDP program redirects for.
pub const MAX_XSK_ADDRS: u32 = 64;

/// Slots of [`XskCounters::passed`] (a power of two, > every reason's index).
pub const XSK_PASS_SLOTS: usize = 16;

/// `XskMeta::magic`: tells userspace the metadata area was written by this
/// program (and this ABI version), not left over.
pub const XSK_META_MAGIC: u32 = 0x5ca1_ab1e;

/// Prepended by `sip_lb_xsk` to a redirected frame (`bpf_xdp_adjust_head`;
/// the AF_XDP descriptor starts with it, the Ethernet header follows): the
/// owning worker and the Call-ID hash, so userspace hands the frame off
/// without scanning it again. 16 bytes. (XDP metadata proper,
/// `bpf_xdp_adjust_meta`, is refused to XDP programs by the 6.18 kernel
/// this was built on: "program of this type cannot use helper".)
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskMeta {
    /// `call_id_hash` of the Call-ID value.
    pub hash: u64,
    /// `worker_for_hash(hash, workers)`.
    pub worker: u32,
    /// [`XSK_META_MAGIC`].
    pub magic: u32,
}

/// Key of `XSK_ADDRS`: an IPv6 address, or an IPv4 one mapped
/// (`::ffff:a.b.c.d`). `::ffff:0.0.0.0` and `::` stand for "any IPv4" and
/// "any IPv6" (a wildcard listen address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskAddr {
    pub addr: [u8; 16],
}

impl XskAddr {
    /// The key of an IPv4 address given as its four bytes.
    pub const fn v4(a: [u8; 4]) -> Self {
        Self { addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]] }
    }

    /// The key of an IPv6 address.
    pub const fn v6(a: [u8; 16]) -> Self {
        Self { addr: a }
    }
}

/// Per-CPU counters of `sip_lb_xsk`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XskCounters {
    /// Frames seen.
    pub packets: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Passed to the kernel, by [`PassReason`] (index = the reason's value).
    pub passed: [u64; XSK_PASS_SLOTS],
    /// Redirected into the AF_XDP socket, by owning worker.
    pub redirected: [u64; MAX_WORKERS],
    /// Call-ID hash of the last redirected frame on this CPU (tests).
    pub last_hash: u64,
    /// Dropped (XDP_DROP) by the shield's block list.
    pub shield_blocked: u64,
    /// Dropped (XDP_DROP) over their source's rate.
    pub shield_rate_limited: u64,
}

impl XskCounters {
    pub const fn zeroed() -> Self {
        Self {
            packets: 0,
            bytes: 0,
            passed: [0; XSK_PASS_SLOTS],
            redirected: [0; MAX_WORKERS],
            last_hash: 0,
            shield_blocked: 0,
            shield_rate_limited: 0,
        }
    }
}

// ---- The shield's XDP stage (both XDP programs; `docs/shield.md`) ----

/// Entries of each prefix trie (block and allow together, per family).
pub const SHIELD_MAX_PREFIXES: u32 = 16_384;

/// Value of a `SHIELD_PREFIXES_*` entry: an allowed prefix; any other
/// value is a blocked prefix, and names its slot in `SHIELD_HITS`.
///
/// Block and allow share one trie per family so that a datagram costs one
/// longest-prefix lookup: the longest match decides. Allow wins over block
/// in the policy (checked first), so the loader leaves out every blocked
/// prefix that an allowed one covers; an allowed prefix inside a blocked one
/// is the longer match and wins by itself.
pub const SHIELD_ALLOW: u32 = u32::MAX;

/// Slots of `SHIELD_HITS` (a power of two: the program masks the index).
/// Slot 0 counts the config's block list; a runtime ban gets one of the
/// others while it lasts.
pub const SHIELD_HIT_SLOTS: u32 = 32_768;

/// Entries of `SHIELD_OVER`: over-rate sources reported between two reads
/// by the control plane (every 100 ms); beyond, the oldest are lost and
/// reported again 250 ms later.
pub const SHIELD_MAX_OVER: u32 = 4_096;

/// A source over its rate is reported in `SHIELD_OVER` at most this often.
pub const SHIELD_REPORT_NS: u64 = 250_000_000;

/// Sources of each family whose rate the XDP stage follows at once (a
/// table of fixed size: a spoofed flood recycles slots instead of growing
/// memory).
pub const SHIELD_MAX_SOURCES: u32 = 65_536;

/// Slots of a group (`ShieldGroup`): the sources whose keyed hash is the
/// same share a group, and a new one takes the slot quiet longest.
pub const SHIELD_WAYS: usize = 4;

/// Groups of each `SHIELD_BUCKETS_*` table (a power of two: the group index
/// is the top `SHIELD_GROUP_BITS` of the hash).
pub const SHIELD_GROUPS: u32 = SHIELD_MAX_SOURCES / SHIELD_WAYS as u32;
pub const SHIELD_GROUP_BITS: u32 = SHIELD_GROUPS.trailing_zeros();
const _: () = assert!(SHIELD_GROUPS.is_power_of_two());

/// The XDP stage's configuration, written by the control plane from the
/// `ShieldPolicy` and the runtime bans (at load, on reloads and on bans).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShieldConfig {
    /// GCRA: nanoseconds between datagrams at the sustained rate; 0: no
    /// rate limit.
    pub interval_ns: u64,
    /// GCRA: how far ahead of now a source may run (`(burst - 1) * interval`).
    pub tolerance_ns: u64,
    /// 0: the stage is off (no lookups at all); 1: lists (and the rate, if
    /// `interval_ns != 0`) are checked.
    pub enabled: u32,
    /// Which of the two trie pairs is in force (0 or 1): the control plane
    /// writes the other pair, then flips this, so a datagram meets the old
    /// lists or the new ones, never half of a change.
    pub active: u32,
    /// GCRA for sources not followed yet (per CPU); 0: no limit.
    pub new_interval_ns: u64,
    pub new_tolerance_ns: u64,
    /// The group of a source in `SHIELD_BUCKETS_*`: the top
    /// `SHIELD_GROUP_BITS` of `sum(group_keys[i] * word[i]) + group_keys[4]`
    /// over the address's 32-bit words (IPv4: its one word times
    /// `group_keys[0]`). Multiply-add-shift with random keys, chosen once per
    /// process: a flood cannot aim at one group.
    pub group_keys: [u64; 5],
    /// Nanoseconds per jiffy (the kernel's tick, `clock_getres` of
    /// `CLOCK_MONOTONIC_COARSE`): the stage's clock is jiffies times this.
    pub tick_ns: u64,
}

impl ShieldConfig {
    pub const fn zeroed() -> Self {
        Self {
            interval_ns: 0,
            tolerance_ns: 0,
            enabled: 0,
            active: 0,
            new_interval_ns: 0,
            new_tolerance_ns: 0,
            group_keys: [0; 5],
            tick_ns: 0,
        }
    }
}

/// Value of `SHIELD_BUCKETS_*`: the GCRA state of up to `SHIELD_WAYS`
/// sources whose keyed hash names this group. A slot whose `tat` is 0 is
/// free.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShieldGroup<A> {
    /// The source in each slot.
    pub source: [A; SHIELD_WAYS],
    /// Theoretical arrival time of each slot's source (ns, the program's clock).
    pub tat: [u64; SHIELD_WAYS],
    /// When each slot's source was last reported over its rate (`SHIELD_OVER`).
    pub reported: [u64; SHIELD_WAYS],
}

/// IPv4 sources: the address as read from the header (network order).
pub type ShieldGroupV4 = ShieldGroup<u32>;
/// IPv6 sources: the address as two words read from the header.
pub type ShieldGroupV6 = ShieldGroup<[u64; 2]>;

/// Key of `SHIELD_OVER`: the source address, IPv6, or IPv4 in its mapped
/// form (`::ffff:a.b.c.d`; a mapped source never occurs on the wire).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShieldSource {
    pub addr: [u8; 16],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: as below: #[repr(C)] integers and arrays without padding.
    unsafe impl aya::Pod for super::XskCounters {}
    // SAFETY: 16 bytes, valid for any bit pattern.
    unsafe impl aya::Pod for super::XskAddr {}
    // SAFETY: 16 bytes, valid for any bit pattern.
    unsafe impl aya::Pod for super::ShieldSource {}
    // SAFETY: integers without padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::ShieldConfig {}
    // SAFETY: plain #[repr(C)] integers and arrays, no padding
    // holes with uninitialised bytes (explicit `_pad`), valid for any bit
    // pattern.
    unsafe impl aya::Pod for super::SteerConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ScanBuf {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RxRate {}
}
