//! `[cluster]` (issue 15): the VIPs a node announces, one or a list, v4 and v6, each
//! advertised by a listen address; every mistake named with its line.

use sip_lb::config::{Config, DEFAULT_VIP_INTERFACE};

const POOL: &str = "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:5060\", \"[2001:db8::1]:5060\"]\n";
const LISTEN: &str = "listen = [\"198.51.100.10:5060\", \"[2001:db8::10]:5060\"]\n";

fn parse(cluster: &str) -> Result<Config, sip_lb::config::ConfigError> {
    Config::from_toml_str(&format!("{LISTEN}{POOL}[cluster]\n{cluster}"))
}

#[test]
fn one_vip_or_a_list_of_both_families() {
    let c = parse("vip = \"198.51.100.10\"\n").unwrap();
    assert_eq!(c.cluster.vips, ["198.51.100.10".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(c.cluster.interface, DEFAULT_VIP_INTERFACE);
    let c = parse("vip = [\"198.51.100.10\", \"2001:db8::10\"]\ninterface = \"lb-vip\"\n").unwrap();
    assert_eq!(c.cluster.vips.len(), 2);
    assert_eq!(c.cluster.interface, "lb-vip");
    // No [cluster]: a stand-alone node.
    assert!(Config::from_toml_str(&format!("{LISTEN}{POOL}")).unwrap().cluster.vips.is_empty());
}

#[test]
fn mistakes_are_named_at_their_line() {
    for (cluster, line, field, says) in [
        ("vip = \"198.51.100.x\"\n", 6, "cluster.vip", "is not an IP address"),
        ("\nvip = [\"198.51.100.10\", \"198.51.100.10\"]\n", 7, "cluster.vip", "listed twice"),
        ("vip = []\n", 6, "cluster.vip", "at least one"),
        ("vip = [\"0.0.0.0\"]\n", 6, "cluster.vip", "cannot be announced"),
        ("vip = [\"198.51.100.11\"]\n", 6, "cluster.vip", "no listen address advertises 198.51.100.11"),
        ("vip = \"198.51.100.10\"\ninterface = \"a/b\"\n", 7, "cluster.interface", "not an interface name"),
        ("vip = \"198.51.100.10\"\ninterface = \"sixteen-chars-xx\"\n", 7, "cluster.interface", "1-15"),
        ("vips = \"198.51.100.10\"\n", 6, "cluster.vips", "unknown field"),
    ] {
        let e = parse(cluster).expect_err(cluster);
        assert_eq!((e.line(), e.field()), (Some(line), field), "{cluster}: {e}");
        assert!(e.message().contains(says), "{cluster}: {e}");
    }
}
