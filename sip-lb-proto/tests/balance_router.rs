//! Backend choice: stability, minimal disruption, weights, method routing.
//! Run with `--nocapture` to see the measured moved fractions.

use std::collections::HashMap;
use std::net::SocketAddr;

use proptest::prelude::*;
use sip_lb_common::call_id_hash;
use sip_lb_proto::balance::Router;
use sip_lb_proto::balance::{BackendSpec, PoolSpec};

const KEYS: usize = 100_000;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 5060))
}

/// One default pool of these backends (the router's whole input).
fn pool_config(backends: &[(SocketAddr, u32)]) -> Vec<PoolSpec> {
    vec![PoolSpec {
        name: "proxies".into(),
        methods: vec![],
        default: true,
        backends: backends.iter().map(|&(addr, weight)| BackendSpec { addr, weight }).collect(),
    }]
}

fn hashes(n: usize, salt: &str) -> Vec<u64> {
    (0..n).map(|i| call_id_hash(format!("{i:x}-{salt}@pc33.example.com").as_bytes())).collect()
}

fn choices(r: &Router, keys: &[u64]) -> Vec<SocketAddr> {
    keys.iter().map(|&h| r.choose(b"INVITE", h).expect("a backend")).collect()
}

fn counts(v: &[SocketAddr]) -> HashMap<SocketAddr, usize> {
    let mut m = HashMap::new();
    for &a in v {
        *m.entry(a).or_insert(0) += 1;
    }
    m
}

/// |observed - expected| within 5 binomial standard deviations (+1).
fn assert_close(what: &str, observed: usize, trials: usize, p: f64) {
    let exp = trials as f64 * p;
    let sd = (trials as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (observed as f64 - exp).abs() <= 5.0 * sd + 1.0,
        "{what}: {observed} of {trials}, expected {exp:.0} ± {:.0}",
        5.0 * sd
    );
}

/// Removes backend `gone` from a pool with `weights`; checks that exactly its
/// keys move, that they spread over every other backend by weight, and that
/// marking it down gives the same table as deleting it. Returns the moved
/// fraction.
fn check_removal(weights: &[u32], gone: usize, keys: &[u64]) -> f64 {
    let all: Vec<_> = weights.iter().enumerate().map(|(i, &w)| (addr(i), w)).collect();
    let mut rest = all.clone();
    rest.remove(gone);
    let before = choices(&Router::build_all(&pool_config(&all)), keys);
    let after = choices(&Router::build_all(&pool_config(&rest)), keys);
    let down = choices(&Router::build(&pool_config(&all), |a| a != addr(gone)), keys);
    assert_eq!(after, down, "marking down must equal removing");

    let total: u32 = weights.iter().sum();
    let rest_total = total - weights[gone];
    let mut moved_to: HashMap<SocketAddr, usize> = HashMap::new();
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            assert_eq!(*b, addr(gone), "a key of a surviving backend moved");
            moved += 1;
            *moved_to.entry(*a).or_insert(0) += 1;
        } else {
            assert_ne!(*b, addr(gone));
        }
    }
    let share = f64::from(weights[gone]) / f64::from(total);
    assert_close("moved keys", moved, keys.len(), share);
    for (i, &w) in weights.iter().enumerate().filter(|&(i, _)| i != gone) {
        let got = moved_to.get(&addr(i)).copied().unwrap_or(0);
        assert!(got > 0, "backend {i} got none of the moved keys");
        assert_close(&format!("moved keys to backend {i}"), got, moved, f64::from(w) / f64::from(rest_total));
    }
    moved as f64 / keys.len() as f64
}

#[test]
fn removing_one_of_n_moves_only_its_share_and_spreads_it() {
    let keys = hashes(KEYS, "rm");
    for n in 2..=10 {
        for gone in [0, n / 2, n - 1] {
            let frac = check_removal(&vec![1; n], gone, &keys);
            eprintln!(
                "hrw equal weights: remove 1 of {n} (#{gone}): moved {frac:.4} of Call-IDs \
                 (nominal share {:.4}); keys of other backends moved: 0",
                1.0 / n as f64,
            );
        }
    }
}

#[test]
fn removing_a_weighted_backend_moves_only_its_share() {
    let keys = hashes(KEYS, "wrm");
    for n in 3..=8 {
        let weights: Vec<u32> = (1..=n as u32).collect();
        let total: u32 = weights.iter().sum();
        for gone in [0, n - 1] {
            let frac = check_removal(&weights, gone, &keys);
            eprintln!(
                "hrw weights 1..={n}: remove #{gone} (weight {}): moved {frac:.4}, its share {:.4}",
                weights[gone],
                f64::from(weights[gone]) / f64::from(total)
            );
        }
    }
}

#[test]
fn weights_1_2_3_give_shares_1_2_3_sixths() {
    let keys = hashes(KEYS, "w");
    let cfg = pool_config(&[(addr(0), 1), (addr(1), 2), (addr(2), 3)]);
    let c = counts(&choices(&Router::build_all(&cfg), &keys));
    for (i, want) in [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0].into_iter().enumerate() {
        let got = c[&addr(i)] as f64 / KEYS as f64;
        eprintln!("hrw weight {}: share {got:.4}, want {want:.4}", i + 1);
        assert!((got - want).abs() < 0.03 * want, "weight {}: {got} vs {want}", i + 1);
    }
}

#[test]
fn equal_weights_split_evenly() {
    let keys = hashes(KEYS, "even");
    for n in [2, 3, 5, 8, 16, 64] {
        let cfg = pool_config(&(0..n).map(|i| (addr(i), 7)).collect::<Vec<_>>());
        let c = counts(&choices(&Router::build_all(&cfg), &keys));
        assert_eq!(c.len(), n);
        for i in 0..n {
            assert_close(&format!("{n} backends, #{i}"), c[&addr(i)], KEYS, 1.0 / n as f64);
        }
    }
}

#[test]
fn independent_routers_and_backend_order_agree() {
    let keys = hashes(20_000, "det");
    let backends: Vec<_> = (0..7).map(|i| (addr(i), 1 + i as u32 % 3)).collect();
    let a = choices(&Router::build_all(&pool_config(&backends)), &keys);
    let b = choices(&Router::build_all(&pool_config(&backends)), &keys);
    assert_eq!(a, b);
    let mut reversed = backends.clone();
    reversed.reverse();
    assert_eq!(a, choices(&Router::build_all(&pool_config(&reversed)), &keys));
}

/// Pinned choices: every sip-lb process, build and release must map these
/// Call-IDs the same way, or a farm mid-upgrade splits dialogs.
#[test]
fn choices_are_pinned_across_releases() {
    let equal: Vec<_> = (0..5).map(|i| (addr(i), 1)).collect();
    let weighted: Vec<_> = (0..5).map(|i| (addr(i), 1 + i as u32)).collect();
    let v6: SocketAddr = "[2001:db8::5]:5070".parse().unwrap();
    let mut mixed = equal.clone();
    mixed.push((v6, 2));
    let pick = |cfg: &[(SocketAddr, u32)]| -> String {
        let r = Router::build_all(&pool_config(cfg));
        (0..24)
            .map(|i| {
                let h = call_id_hash(format!("call-{i}@atlanta.example.com").as_bytes());
                let a = r.choose(b"INVITE", h).unwrap();
                cfg.iter().position(|b| b.0 == a).unwrap().to_string()
            })
            .collect()
    };
    let got = [pick(&equal), pick(&weighted), pick(&mixed)];
    eprintln!("pinned: {got:?}");
    assert_eq!(got, PINNED);
}

/// Recomputed for the word-at-a-time `call_id_hash` (issue 11), which moves
/// every Call-ID once: by a Python model of `Router::choose` (mix13,
/// `-ln(u)/w`, seeds from python-xxhash's xxh3, checked against
/// `hrw::seeds_are_pinned`) over a Python model of the new hash, not by
/// copying this test's output.
const PINNED: [&str; 3] = ["434131344100424324210314", "434133344440444344210314", "454135344100454354210354"];

fn distinct_addrs(max: usize) -> impl Strategy<Value = Vec<(SocketAddr, u32)>> {
    prop::collection::btree_set((any::<[u8; 4]>(), 1024u16..65535), 2..=max).prop_flat_map(|set| {
        let n = set.len();
        let addrs: Vec<SocketAddr> = set.into_iter().map(|(ip, port)| SocketAddr::from((ip, port))).collect();
        prop::collection::vec(1u32..=5, n).prop_map(move |w| addrs.iter().copied().zip(w).collect::<Vec<_>>())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn removal_and_addition_move_only_the_changed_backends_keys(
        backends in distinct_addrs(10),
        gone in any::<prop::sample::Index>(),
        salt in any::<u64>(),
    ) {
        let keys: Vec<u64> = (0..2000u64).map(|i| call_id_hash(format!("{salt:x}.{i}").as_bytes())).collect();
        let gone = gone.index(backends.len());
        let gone_addr = backends[gone].0;
        let full = Router::build_all(&pool_config(&backends));
        let again = Router::build_all(&pool_config(&backends));
        let mut rest = backends.clone();
        rest.remove(gone);
        let smaller = Router::build_all(&pool_config(&rest));
        let down = Router::build(&pool_config(&backends), |a| a != gone_addr);
        for &h in &keys {
            let before = full.choose(b"INVITE", h).unwrap();
            prop_assert_eq!(Some(before), again.choose(b"INVITE", h));
            let after = smaller.choose(b"INVITE", h).unwrap();
            prop_assert_eq!(Some(after), down.choose(b"INVITE", h));
            prop_assert_ne!(after, gone_addr);
            // Removal moves only the removed backend's keys; read backwards,
            // adding a backend moves keys only onto the new one.
            if before != gone_addr {
                prop_assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn any_call_id_maps_to_the_same_backend(
        backends in distinct_addrs(12),
        call_id in "[ -~]{1,64}",
    ) {
        let h = call_id_hash(call_id.as_bytes());
        let a = Router::build_all(&pool_config(&backends)).choose(b"ACK", h);
        let b = Router::build_all(&pool_config(&backends)).choose(b"ACK", h);
        prop_assert!(a.is_some());
        prop_assert_eq!(a, b);
    }
}
