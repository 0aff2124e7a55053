//! Pools from a config file, as the router routes them: methods to pools,
//! and CANCEL/ACK/in-dialog methods to INVITE's pool.

use std::net::SocketAddr;

use sip_lb::config::{Config, FOLLOW_INVITE};
use sip_lb_common::call_id_hash;
use sip_lb_proto::balance::Router;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 5060))
}

fn hashes(n: usize, salt: &str) -> Vec<u64> {
    (0..n).map(|i| call_id_hash(format!("{i:x}-{salt}@pc33.example.com").as_bytes())).collect()
}

#[test]
fn methods_route_to_pools() {
    let cfg = Config::from_toml_str(
        r#"
        [[pool]]
        name = "registrars"
        methods = ["REGISTER"]
        backends = ["10.0.0.1:5060", "10.0.0.2:5060"]
        [[pool]]
        name = "proxies"
        backends = ["10.0.1.1:5060", "10.0.1.2:5060", "10.0.1.3:5060"]
        "#,
    )
    .unwrap();
    let r = Router::build_all(&cfg.pools);
    let regs = [addr(0), addr(1)];
    let keys = hashes(2000, "m");
    for &h in &keys {
        let reg = r.choose(b"REGISTER", h).unwrap();
        assert!(regs.contains(&reg));
        let inv = r.choose(b"INVITE", h).unwrap();
        assert_eq!(inv.ip().to_string().rsplit_once('.').unwrap().0, "10.0.1");
        assert_eq!(r.choose(b"BYE", h), Some(inv), "a dialog's requests stay together");
    }
    assert_eq!(r.pool_for(b"REGISTER").unwrap().name(), "registrars");
    assert_eq!(r.pool_for(b"OPTIONS").unwrap().name(), "proxies");
    let names: Vec<_> = r.pools().iter().map(|p| (p.name(), p.backends().len(), p.is_default())).collect();
    assert_eq!(names, [("registrars", 2, false), ("proxies", 3, true)]);

    // Without a registrar pool REGISTER goes to the default pool.
    let cfg = Config::from_toml_str(
        r#"
        [[pool]]
        name = "proxies"
        backends = ["10.0.1.1:5060"]
        "#,
    )
    .unwrap();
    let r = Router::build_all(&cfg.pools);
    assert_eq!(r.choose(b"REGISTER", 9), Some("10.0.1.1:5060".parse().unwrap()));
    assert_eq!(r.choose(b"INVITE", 9), Some("10.0.1.1:5060".parse().unwrap()));
}

/// CANCEL, ACK and the in-dialog methods reach the backend that has the
/// INVITE, also when INVITE has a pool of its own (RFC 3261 §16.11); other
/// methods route by their own name.
#[test]
fn cancel_ack_and_dialog_methods_follow_invites_pool() {
    let cfg = Config::from_toml_str(
        r#"
        [[pool]]
        name = "invites"
        methods = ["INVITE"]
        backends = ["10.0.0.1:5060", "10.0.0.2:5060", "10.0.0.3:5060"]
        [[pool]]
        name = "rest"
        backends = ["10.0.1.1:5060", "10.0.1.2:5060"]
        "#,
    )
    .unwrap();
    let r = Router::build_all(&cfg.pools);
    let invites: Vec<SocketAddr> = cfg.pools[0].backends.iter().map(|b| b.addr).collect();
    let rest: Vec<SocketAddr> = cfg.pools[1].backends.iter().map(|b| b.addr).collect();
    for &h in &hashes(5000, "follow") {
        let inv = r.choose(b"INVITE", h).unwrap();
        assert!(invites.contains(&inv));
        for m in FOLLOW_INVITE {
            assert_eq!(r.choose(m.as_bytes(), h), Some(inv), "{m} follows INVITE");
        }
        for m in ["OPTIONS", "REGISTER", "MESSAGE", "REFER", "NOTIFY", "SUBSCRIBE"] {
            assert!(rest.contains(&r.choose(m.as_bytes(), h).unwrap()), "{m}");
        }
    }
    for m in FOLLOW_INVITE {
        assert_eq!(r.pool_for(m.as_bytes()).unwrap().name(), "invites", "{m}");
        assert_eq!(cfg.pool_for(m).unwrap().name, "invites", "{m}");
    }
    assert_eq!(r.pool_for(b"OPTIONS").unwrap().name(), "rest");
    assert_eq!(cfg.pool_for("OPTIONS").unwrap().name, "rest");
    // Case-sensitive, as every method: "cancel" is an extension method.
    assert_eq!(r.pool_for(b"cancel").unwrap().name(), "rest");
}
