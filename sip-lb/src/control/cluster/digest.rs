//! The config digest: a short hash of everything that decides where a
//! Call-ID goes and whether a branch verifies, so nodes that would route
//! differently show different digests (`sip-lb config-digest`, and
//! `sip_lb_config_info{digest}` on `/metrics`).
//!
//! It covers pools (name, default, methods), backends (address, weight, and
//! the hash seed the rendezvous hashing derives from the address), the
//! branch keys' public ids, the advertised addresses (responses verify only
//! where our Via is recognised) and the cluster VIPs. Never a secret: only
//! `Key::id`, itself a hash of the key. Order in the file does not matter.

use sha2::{Digest, Sha256};
use sip_lb_proto::balance::hrw::backend_seed;
use sip_lb_proto::proxy::Key;

use crate::config::Config;

/// The canonical text the digest is taken over, one setting a line.
pub fn canonical(config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::from("sip-lb routing v1\n");
    let key = |s: &Option<Vec<u8>>| s.as_deref().map_or_else(|| "none".to_owned(), |s| Key::from_secret(s).id());
    // Without a secret each process draws its own key: nodes never agree.
    let _ = writeln!(out, "key {}", key(&config.security.secret));
    let _ = writeln!(out, "previous-key {}", key(&config.security.previous));
    let mut adv: Vec<String> = config.listen.iter().map(|l| l.advertise.to_string()).collect();
    adv.sort();
    for a in adv {
        let _ = writeln!(out, "advertise {a}");
    }
    let mut vips = config.cluster.vips.clone();
    vips.sort();
    for v in vips {
        let _ = writeln!(out, "vip {v}");
    }
    let mut pools: Vec<_> = config.pools.iter().collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    for p in pools {
        let mut methods = p.methods.clone();
        methods.sort();
        let _ = writeln!(out, "pool {:?} default={} methods={}", p.name, p.default, methods.join(","));
        let mut backends: Vec<_> = p.backends.iter().collect();
        backends.sort_by_key(|b| b.addr);
        for b in backends {
            let _ = writeln!(out, "  backend {} weight={} seed={:016x}", b.addr, b.weight, backend_seed(b.addr));
        }
    }
    out
}

/// The first 64 bits of SHA-256 over [`canonical`], in hex.
pub fn digest(config: &Config) -> String {
    let d = Sha256::digest(canonical(config).as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_toml_str(&format!(
            "listen = [\"10.0.0.5:5060\"]\n[security]\nsecret = \"0123456789abcdef\"\n{extra}\n\
             [[pool]]\nname = \"farm\"\nbackends = [\"10.0.1.1:5060\", {{ addr = \"10.0.1.2:5060\", weight = 2 }}]\n"
        ))
        .unwrap()
    }

    #[test]
    fn same_routing_same_digest_whatever_else_differs() {
        let a = config("");
        let b = Config::from_toml_str(
            "listen = [\"10.0.0.5:5060\"]\nworkers = 7\n[security]\nsecret = \"0123456789abcdef\"\n\
             [[pool]]\nname = \"farm\"\nbackends = [{ addr = \"10.0.1.2:5060\", weight = 2 }, \"10.0.1.1:5060\"]\n",
        )
        .unwrap();
        assert_eq!(digest(&a), digest(&b));
        assert_eq!(digest(&a).len(), 16);
    }

    #[test]
    fn routing_changes_change_it_and_the_secret_never_shows() {
        let a = config("");
        let text = canonical(&a);
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(text.contains("backend 10.0.1.2:5060 weight=2 seed="), "{text}");
        let other_secret = Config::from_toml_str(&canonical_free_config("fedcba9876543210")).unwrap();
        assert_ne!(digest(&a), digest(&other_secret));
        let weight = Config::from_toml_str(
            "listen = [\"10.0.0.5:5060\"]\n[security]\nsecret = \"0123456789abcdef\"\n\
             [[pool]]\nname = \"farm\"\nbackends = [\"10.0.1.1:5060\", \"10.0.1.2:5060\"]\n",
        )
        .unwrap();
        assert_ne!(digest(&a), digest(&weight));
    }

    fn canonical_free_config(secret: &str) -> String {
        format!(
            "listen = [\"10.0.0.5:5060\"]\n[security]\nsecret = \"{secret}\"\n\
             [[pool]]\nname = \"farm\"\nbackends = [\"10.0.1.1:5060\", {{ addr = \"10.0.1.2:5060\", weight = 2 }}]\n"
        )
    }
}
