use std::net::SocketAddr;

use super::Router;
use super::{BackendSpec, PoolSpec, FOLLOW_INVITE};
use crate::proxy::Chooser;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn pool(name: &str, methods: &[&str], default: bool, backends: &[(&str, u32)]) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        methods: methods.iter().map(|m| (*m).into()).collect(),
        default,
        backends: backends.iter().map(|&(a, weight)| BackendSpec { addr: addr(a), weight }).collect(),
    }
}

/// The pools of a config (the router's whole input).
fn config(pools: Vec<PoolSpec>) -> Vec<PoolSpec> {
    pools
}

#[test]
fn methods_pick_pools() {
    let cfg = config(vec![
        pool("registrars", &["REGISTER"], false, &[("10.0.0.1:5060", 1)]),
        pool("proxies", &[], true, &[("10.0.1.1:5060", 1)]),
    ]);
    let r = Router::build_all(&cfg);
    let c: &dyn Chooser = &r;
    assert_eq!(c.choose(b"REGISTER", 7), Some(addr("10.0.0.1:5060")));
    assert_eq!(c.choose(b"INVITE", 7), Some(addr("10.0.1.1:5060")));
    // Methods are case-sensitive: "register" is an unknown extension method.
    assert_eq!(c.choose(b"register", 7), Some(addr("10.0.1.1:5060")));
    assert_eq!(r.default_pool().unwrap().name(), "proxies");
    assert_eq!(r.pool_for(b"REGISTER").unwrap().name(), "registrars");
}

#[test]
fn no_default_pool_means_none() {
    let cfg = config(vec![pool("registrars", &["REGISTER"], false, &[("10.0.0.1:5060", 1)])]);
    let r = Router::build_all(&cfg);
    assert!(r.choose(b"REGISTER", 1).is_some());
    assert_eq!(r.choose(b"INVITE", 1), None);
    assert_eq!(Router::default().choose(b"INVITE", 1), None);
}

#[test]
fn all_down_is_none_and_listing_keeps_them() {
    let cfg = config(vec![pool("p", &[], true, &[("10.0.0.1:5060", 1), ("10.0.0.2:5060", 3)])]);
    let r = Router::build(&cfg, |_| false);
    assert_eq!(r.choose(b"INVITE", 42), None);
    let listed: Vec<_> = r.backends().map(|(p, b)| (p.name(), b.addr(), b.weight(), b.is_eligible())).collect();
    assert_eq!(listed, [("p", addr("10.0.0.1:5060"), 1, false), ("p", addr("10.0.0.2:5060"), 3, false)]);
    let r = Router::build(&cfg, |a| a == addr("10.0.0.2:5060"));
    assert_eq!(r.pools()[0].eligible_count(), 1);
    for h in 0..100u64 {
        assert_eq!(r.choose(b"BYE", h.wrapping_mul(0x9e37_79b9_7f4a_7c15)), Some(addr("10.0.0.2:5060")));
    }
}

#[test]
fn weight_zero_is_never_chosen() {
    let cfg = config(vec![pool("p", &[], true, &[("10.0.0.1:5060", 0), ("10.0.0.2:5060", 1)])]);
    let r = Router::build_all(&cfg);
    assert!(!r.pools()[0].backends()[0].is_eligible());
    assert!((0..1000u64).all(|h| r.choose(b"INVITE", h << 40) == Some(addr("10.0.0.2:5060"))));
}

/// The equal-weight fast path (compare mixed hashes) picks what the weighted
/// path (compare `-ln(u)/w`) picks: for the same pool, for the pool with all
/// weights scaled, and when only an ineligible backend made weights unequal.
#[test]
fn uniform_fast_path_matches_weighted_path() {
    let addrs = ["10.0.0.1:5060", "10.0.0.2:5060", "10.0.0.3:5060", "[2001:db8::7]:5060"];
    let plain = Router::build_all(&config(vec![pool("p", &[], true, &addrs.map(|a| (a, 1)))]));
    assert!(plain.pools()[0].uniform);

    let mut slow = Router::build_all(&config(vec![pool("p", &[], true, &addrs.map(|a| (a, 1)))]));
    slow.pools[0].uniform = false;

    let mut scaled = addrs.map(|a| (a, 5)).to_vec();
    scaled.push(("10.9.9.9:5060", 7));
    let down = addr("10.9.9.9:5060");
    let scaled = Router::build(&config(vec![pool("p", &[], true, &scaled)]), |a| a != down);
    assert!(scaled.pools()[0].uniform);

    for i in 0..20_000u64 {
        let h = sip_lb_common::call_id_hash(format!("{i}@host").as_bytes());
        let a = plain.choose(b"INVITE", h);
        assert_eq!(a, slow.choose(b"INVITE", h));
        assert_eq!(a, scaled.choose(b"INVITE", h));
    }
}

/// FOLLOW_INVITE methods go to INVITE's pool whatever an (unvalidated)
/// config lists: INVITE's own pool, else the default; nowhere when INVITE
/// goes nowhere.
#[test]
fn follow_invite_methods_ignore_their_own_listing() {
    let cfg = config(vec![
        pool("byes", &["BYE", "CANCEL"], false, &[("10.0.2.1:5060", 1)]),
        pool("invites", &["INVITE", "ACK"], false, &[("10.0.0.1:5060", 1)]),
        pool("rest", &[], true, &[("10.0.1.1:5060", 1)]),
    ]);
    let r = Router::build_all(&cfg);
    for m in FOLLOW_INVITE {
        assert_eq!(r.choose(m.as_bytes(), 3), Some(addr("10.0.0.1:5060")), "{m}");
        assert_eq!(super::pool_for(&cfg, m).unwrap().name, "invites", "{m}");
    }
    assert_eq!(r.choose(b"OPTIONS", 3), Some(addr("10.0.1.1:5060")));

    // INVITE unlisted: it and its followers go to the default pool.
    let cfg = config(vec![
        pool("byes", &["BYE"], false, &[("10.0.2.1:5060", 1)]),
        pool("rest", &[], true, &[("10.0.1.1:5060", 1)]),
    ]);
    let r = Router::build_all(&cfg);
    assert_eq!(r.choose(b"BYE", 3), Some(addr("10.0.1.1:5060")));
    assert_eq!(r.pool_for(b"BYE").unwrap().name(), "rest");
    assert_eq!(super::pool_for(&cfg, "BYE").unwrap().name, "rest");
    // The pool still lists what it was configured with, for admin output.
    assert_eq!(r.pool("byes").unwrap().methods().collect::<Vec<_>>(), ["BYE"]);

    // No INVITE pool and no default: BYE goes nowhere, like INVITE.
    let cfg = config(vec![pool("byes", &["BYE"], false, &[("10.0.2.1:5060", 1)])]);
    let r = Router::build_all(&cfg);
    assert_eq!(r.choose(b"INVITE", 3), None);
    assert_eq!(r.choose(b"BYE", 3), None);
}

/// Pinned choices for literal Call-ID hashes (independent of
/// `call_id_hash`), worked out by a separate model of the formula (xxh3
/// seeds from the C libxxhash, splitmix finaliser, `-ln(u)/w`): equal
/// weights (the fast path), unequal weights (the `ln` path) and one backend
/// down (its Call-IDs go to their runner-up, the others stay). A changed
/// seed, mix or draw remaps Call-IDs across a farm mid-upgrade and fails
/// here.
#[test]
fn choices_for_literal_hashes_are_pinned() {
    let addrs = ["10.0.0.1:5060", "10.0.0.2:5060", "10.0.0.3:5060", "[2001:db8::7]:5060"];
    let hashes: Vec<u64> =
        [0, 1, u64::MAX].into_iter().chain((1..22u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect();
    let picks = |r: &Router| -> String {
        hashes
            .iter()
            .map(|&h| {
                let a = r.choose(b"INVITE", h).unwrap();
                addrs.iter().position(|&b| addr(b) == a).unwrap().to_string()
            })
            .collect()
    };
    let equal = Router::build_all(&config(vec![pool("p", &[], true, &addrs.map(|a| (a, 1)))]));
    assert!(equal.pools()[0].uniform);
    let weighted = [(addrs[0], 1), (addrs[1], 2), (addrs[2], 3), (addrs[3], 4)];
    let weighted = Router::build_all(&config(vec![pool("p", &[], true, &weighted)]));
    assert!(!weighted.pools()[0].uniform);
    let down = addr("10.0.0.2:5060");
    let down = Router::build(&config(vec![pool("p", &[], true, &addrs.map(|a| (a, 1)))]), |a| a != down);
    assert_eq!(
        [picks(&equal), picks(&weighted), picks(&down)],
        ["333021102313132011130332", "333031132313133011130332", "333023202303032003330332"]
    );
}
