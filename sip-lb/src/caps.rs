//! Whether this process may load eBPF programs: as root, or as the
//! packaged service's unprivileged user with the unit's capabilities
//! (`sip-lb/debian/sip-lb.service`: CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON,
//! CAP_NET_RAW), read from `/proc/self/status` at start-up.

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The effective capability set (`CapEff`), or 0 if unreadable.
fn effective() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn may_load(eff: u64) -> bool {
    let has = |c: u32| eff & (1 << c) != 0;
    // Networking program types (SK_REUSEPORT, XDP) need both, or CAP_SYS_ADMIN.
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_NET_ADMIN))
}

/// True if the Call-ID steering programs can be loaded and attached.
pub fn may_load_bpf() -> bool {
    may_load(effective())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_capabilities_suffice_and_fewer_do_not() {
        let unit = parse_cap_eff("Name:\tsip-lb\nCapEff:\t000000c000003000\n");
        assert_eq!(unit, (1 << 12) | (1 << 13) | (1 << 38) | (1 << 39));
        assert!(may_load(unit));
        assert!(!may_load(1 << CAP_BPF));
        assert!(may_load(1 << CAP_SYS_ADMIN));
        assert!(!may_load(parse_cap_eff("CapEff:\t0000000000000000\n")));
    }
}
