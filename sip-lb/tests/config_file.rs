//! Configuration: the TOML file, the flags, and errors that say where.

use std::net::SocketAddr;

use clap::Parser;
use sip_lb::config::{
    Alias, BackendConfig, Config, ConfigError, Listen, RunArgs, SecurityConfig, SipConfig, FOLLOW_INVITE,
};
use sip_lb_proto::balance::Router;

const EXAMPLE: &str = include_str!("../../examples/sip-lb.toml");

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn err(src: &str) -> ConfigError {
    match Config::from_toml_str(src) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

/// Asserts line, column (if given), field and a piece of the message.
#[track_caller]
fn assert_err(src: &str, line: Option<usize>, col: Option<usize>, field: &str, msg: &str) {
    let e = err(src);
    eprintln!("{e}");
    assert_eq!(e.line(), line, "line of: {e}");
    if col.is_some() {
        assert_eq!(e.column(), col, "column of: {e}");
    }
    assert_eq!(e.field(), field, "field of: {e}");
    assert!(e.message().contains(msg), "message of: {e}");
}

const POOL: &str = "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:5060\"]\n";

/// The listen addresses alone.
fn addrs(c: &Config) -> Vec<SocketAddr> {
    c.listen.iter().map(|l| l.addr).collect()
}

/// A listen address advertising itself.
fn itself(s: &str) -> Listen {
    Listen { addr: sa(s), advertise: sa(s) }
}

#[test]
fn example_file_round_trips_into_router_choices() {
    let c = Config::from_toml_str(EXAMPLE).unwrap();
    // The IPv6 listen address serves the IPv6 backend of "proxies".
    assert_eq!(c.listen, [itself("127.0.0.1:5060"), itself("[::1]:5060")]);
    assert_eq!(c.listen[0].advertise, sa("127.0.0.1:5060"));
    assert_eq!(c.sip, SipConfig::default());
    assert_eq!(c.security, SecurityConfig::default());
    assert_eq!(c.workers, 2);
    assert_eq!(c.iface, None);
    assert_eq!(c.health.interval_ms, 2000);
    assert_eq!(c.pools.len(), 2);
    assert_eq!(
        c.pools[0].backends,
        [
            BackendConfig { addr: sa("10.0.0.1:5060"), weight: 2 },
            BackendConfig { addr: sa("10.0.0.2:5060"), weight: 1 }
        ]
    );
    assert_eq!(c.pools[0].methods, ["REGISTER"]);
    assert!(!c.pools[0].default && c.pools[1].default);
    assert_eq!(c.pool_for("REGISTER").unwrap().name, "registrars");
    assert_eq!(c.pool_for("INVITE").unwrap().name, "proxies");
    assert_eq!(c.pool_for("CANCEL").unwrap().name, "proxies");

    let r = Router::build_all(&c.pools);
    let mut regs = [0usize; 2];
    for i in 0..30_000 {
        let h = sip_lb_common::call_id_hash(format!("{i}@example").as_bytes());
        let reg = r.choose(b"REGISTER", h).unwrap();
        regs[usize::from(reg == sa("10.0.0.2:5060"))] += 1;
        let inv = r.choose(b"INVITE", h).unwrap();
        assert!(c.pools[1].backends.iter().any(|b| b.addr == inv));
    }
    // weight 2 : 1
    assert!((regs[0] as f64 / 30_000.0 - 2.0 / 3.0).abs() < 0.02, "{regs:?}");
}

#[test]
fn defaults() {
    let c = Config::from_toml_str(POOL).unwrap();
    assert_eq!(addrs(&c), [Config::DEFAULT_LISTEN]);
    assert_eq!(c.listen[0].advertise, sa("127.0.0.1:5060"));
    assert_eq!(c.workers, sip_lb::config::default_workers());
    assert!(c.workers >= 1);
    assert!(c.pools[0].default, "a pool without methods is the default");
    assert_eq!(c.pools[0].backends[0].weight, 1);

    let c = Config::from_toml_str(&format!("listen = [\"10.1.1.1\", \"[::1]:5070\"]\n{POOL}")).unwrap();
    assert_eq!(c.listen, [itself("10.1.1.1:5060"), itself("[::1]:5070")]);
    assert_eq!(c.listen[0].advertise, sa("10.1.1.1:5060"));
}

#[test]
fn syntax_error_names_line_and_column() {
    assert_err("workers = 2\nlisten = [\"127.0.0.1:5060\"\n", Some(3), None, "", "");
    let e = err("workers = 2\n[[pool]\n");
    assert_eq!(e.line(), Some(2), "{e}");
}

#[test]
fn type_errors_name_the_field() {
    // After a [[pool]] header, `workers` is a key of the pool table.
    assert_err(&format!("{POOL}\nworkers = 2"), Some(5), Some(1), "pool \"p\": workers", "unknown field `workers`");
    assert_err(&format!("workers = \"two\"\n{POOL}"), Some(1), Some(11), "workers", "invalid type");
    assert_err(&format!("workers = -1\n{POOL}"), Some(1), Some(11), "workers", "");
    assert_err(
        "[[pool]]\nname = \"p\"\nbackends = [{ addr = \"10.0.0.1:5060\", weight = -2 }]\n",
        Some(3),
        Some(48),
        "pool \"p\": weight",
        "",
    );
    assert_err("[[pool]]\nname = \"p\"\nbackends = [5060]\n", Some(3), Some(13), "pool \"p\": backends", "backend");
    assert_err(
        "[[pool]]\nname = \"p\"\nmethods = \"INVITE\"\nbackends = [\"10.0.0.1\"]\n",
        Some(3),
        Some(11),
        "pool \"p\": methods",
        "",
    );
}

#[test]
fn unknown_keys_are_errors() {
    assert_err(
        &format!("listen_on = [\"1.2.3.4:5\"]\n{POOL}"),
        Some(1),
        Some(1),
        "listen_on",
        "unknown field `listen_on`",
    );
    assert_err(
        "[[pool]]\nname = \"p\"\nbackend = [\"10.0.0.1:5060\"]\n",
        Some(3),
        Some(1),
        "pool \"p\": backend",
        "unknown field `backend`",
    );
    assert_err(
        "[[pool]]\nname = \"p\"\nbackends = [{ addr = \"10.0.0.1:5060\", wieght = 2 }]\n",
        Some(3),
        Some(13),
        "pool \"p\": backends",
        "unknown field `wieght`",
    );
    assert_err(&format!("{POOL}[health]\ninterval = 5\n"), Some(5), Some(1), "health.interval", "unknown field");
}

#[test]
fn bad_addresses_name_pool_and_backend() {
    let src = "workers = 1\n[[pool]]\nname = \"registrars\"\nmethods = [\"REGISTER\"]\nbackends = [\n  { addr = \"10.0.0.1:5060\" },\n  { addr = \"10.0.0.x:5060\", weight = 2 },\n]\n";
    let e = err(src);
    assert_eq!(
        e.to_string(),
        "7:12: pool \"registrars\": backend \"10.0.0.x:5060\": invalid socket address \"10.0.0.x:5060\" \
         (expected ip:port, [v6]:port or a bare ip for port 5060)"
    );
    assert_err(
        "[[pool]]\nname = \"p\"\nbackends = [\"nonsense\"]\n",
        Some(3),
        Some(13),
        "pool \"p\": backend \"nonsense\"",
        "invalid socket address",
    );
    assert_err(
        &format!("listen = [\"localhost:5060\"]\n{POOL}"),
        Some(1),
        Some(11),
        "listen",
        "invalid socket address",
    );
    assert_err(
        &format!("advertise = \"1.2.3.4:99999\"\n{POOL}"),
        Some(1),
        Some(13),
        "advertise",
        "invalid socket address",
    );
    assert_err(&format!("metrics = \"1.2.3.4\"\n{POOL}"), Some(1), Some(11), "metrics", "expected ip:port");
    assert_err(
        "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:0\"]\n",
        Some(3),
        Some(13),
        "pool \"p\": backend \"10.0.0.1:0\"",
        "port 0",
    );
}

#[test]
fn pool_semantics() {
    // Duplicate names: the second name.
    assert_err(&format!("{POOL}{POOL}"), Some(5), Some(8), "pool \"p\": name", "used twice");
    // A method in two pools: the second listing.
    assert_err(
        "[[pool]]\nname = \"a\"\nmethods = [\"REGISTER\"]\nbackends = [\"10.0.0.1\"]\n\
         [[pool]]\nname = \"b\"\nmethods = [\"OPTIONS\", \"REGISTER\"]\nbackends = [\"10.0.0.2\"]\n\
         [[pool]]\nname = \"c\"\nbackends = [\"10.0.0.3\"]\n",
        Some(7),
        Some(23),
        "pool \"b\": methods",
        "REGISTER is already routed to pool \"a\"",
    );
    assert_err(
        "[[pool]]\nname = \"a\"\nmethods = [\"IN VITE\"]\nbackends = [\"10.0.0.1\"]\n",
        Some(3),
        Some(12),
        "pool \"a\": methods",
        "not a SIP method token",
    );
    // No pool at all.
    assert_err("workers = 1\n", None, None, "pool", "no backend pools");
    // Zero backends.
    assert_err(
        "[[pool]]\nname = \"p\"\nbackends = []\n",
        Some(3),
        Some(12),
        "pool \"p\": backends",
        "at least one backend",
    );
    // Weight 0.
    assert_err(
        "[[pool]]\nname = \"p\"\nbackends = [{ addr = \"10.0.0.1\", weight = 0 }]\n",
        Some(3),
        Some(43),
        "pool \"p\": backend \"10.0.0.1:5060\": weight",
        "at least 1",
    );
    // Same backend twice in one pool.
    assert_err(
        "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1\", \"10.0.0.1:5060\"]\n",
        Some(3),
        Some(25),
        "pool \"p\": backend \"10.0.0.1:5060\"",
        "listed twice",
    );
    // Methods unmapped: no default pool.
    assert_err(
        "[[pool]]\nname = \"r\"\nmethods = [\"REGISTER\"]\nbackends = [\"10.0.0.1\"]\n",
        None,
        None,
        "pool",
        "no default pool: methods other than REGISTER have nowhere to go",
    );
    // Two default pools.
    assert_err(
        "[[pool]]\nname = \"a\"\nbackends = [\"10.0.0.1\"]\n[[pool]]\nname = \"b\"\nmethods = [\"BYE\"]\ndefault = true\nbackends = [\"10.0.0.2\"]\n",
        Some(7),
        Some(11),
        "pool \"b\": default",
        "pool \"a\" is already the default pool",
    );
    // A pool nothing reaches.
    assert_err(
        "[[pool]]\nname = \"a\"\nbackends = [\"10.0.0.1\"]\n[[pool]]\nname = \"b\"\ndefault = false\nbackends = [\"10.0.0.2\"]\n",
        Some(6),
        Some(11),
        "pool \"b\": default",
        "receives no requests",
    );
    // Missing name.
    assert_err("[[pool]]\nbackends = [\"10.0.0.1\"]\n", Some(1), None, "", "missing field `name`");
}

#[test]
fn scalar_semantics() {
    assert_err(&format!("workers = 0\n{POOL}"), Some(1), Some(11), "workers", "at least 1");
    assert_err(&format!("listen = [\"0.0.0.0:5060\"]\n{POOL}"), Some(1), Some(11), "listen", "set `advertise`");
    assert_err(&format!("listen = [\"[::]:5060\"]\n{POOL}"), Some(1), Some(11), "listen", "wildcard");
    assert_err(&format!("advertise = \"0.0.0.0\"\n{POOL}"), Some(1), Some(13), "advertise", "wildcard");
    assert_err(
        &format!("listen = [\"10.0.0.9\", \"10.0.0.9:5060\"]\n{POOL}"),
        Some(1),
        Some(23),
        "listen",
        "listed twice",
    );
    assert_err(&format!("{POOL}[health]\ntimeout_ms = 0\n"), Some(5), Some(14), "health.timeout_ms", "at least 1");
    let c = Config::from_toml_str(&format!("listen = [\"0.0.0.0:5060\"]\nadvertise = \"192.0.2.7\"\n{POOL}")).unwrap();
    assert_eq!(c.listen[0].advertise, sa("192.0.2.7:5060"));
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn args(argv: &[&str]) -> Result<RunArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("sip-lb").chain(argv.iter().copied())).map(|c| c.run)
}

#[test]
fn flags_alone() {
    let flags =
        ["--backend", "10.0.1.1", "--backend", "10.0.1.2:5070", "--registrar", "[2001:db8::1]", "--workers", "3"];
    // The default listen address is IPv4: nothing could reach the registrar.
    let e = Config::load(&args(&flags).unwrap()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pool \"registrars\": backend \"[2001:db8::1]:5060\": an IPv6 backend needs an IPv6 \
         listen address (add one to listen; all listen addresses are IPv4)"
    );
    let a = args(&[&flags[..], &["--listen", "127.0.0.1", "--listen", "[::1]"]].concat()).unwrap();
    let c = Config::load(&a).unwrap();
    assert_eq!(c.workers, 3);
    assert_eq!(c.listen, [itself("127.0.0.1:5060"), itself("[::1]:5060")]);
    let names: Vec<_> = c.pools.iter().map(|p| (p.name.as_str(), p.default, p.backends.len())).collect();
    assert_eq!(names, [("default", true, 2), ("registrars", false, 1)]);
    let r = Router::build_all(&c.pools);
    assert_eq!(r.choose(b"REGISTER", 1), Some(sa("[2001:db8::1]:5060")));
    assert!([sa("10.0.1.1:5060"), sa("10.0.1.2:5070")].contains(&r.choose(b"INVITE", 1).unwrap()));

    // Without --registrar, REGISTER goes to the default pool.
    let c = Config::load(&args(&["--backend", "10.0.1.1"]).unwrap()).unwrap();
    assert_eq!(c.listen, [itself("127.0.0.1:5060")]);
    assert_eq!(Router::build_all(&c.pools).choose(b"REGISTER", 5), Some(sa("10.0.1.1:5060")));
}

#[test]
fn bad_flags_name_the_flag() {
    for (flag, bad) in [
        ("--backend", "nonsense"),
        ("--registrar", "10.0.0.1:x"),
        ("--listen", "host:5060"),
        ("--advertise", "1.2.3"),
        ("--metrics", "1.2.3.4"),
    ] {
        let e = args(&[flag, bad]).unwrap_err().to_string();
        assert!(e.contains(flag) && e.contains(bad), "{e}");
    }
    assert!(args(&["--workers", "two"]).unwrap_err().to_string().contains("--workers"));

    let e = Config::load(&args(&["--workers", "0", "--backend", "10.0.0.1"]).unwrap()).unwrap_err();
    assert_eq!(e.to_string(), "--workers: must be at least 1");
    let e = Config::load(&args(&["--listen", "0.0.0.0", "--backend", "10.0.0.1"]).unwrap()).unwrap_err();
    assert_eq!(e.field(), "--listen");
    assert!(e.message().contains("--advertise"), "{e}");
    let e = Config::load(&args(&["--backend", "10.0.0.1", "--backend", "10.0.0.1:5060"]).unwrap()).unwrap_err();
    assert_eq!(e.field(), "--backend", "{e}");
    let e = Config::load(&RunArgs::default()).unwrap_err();
    assert!(e.message().contains("--backend"), "{e}");
}

struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let p = std::env::temp_dir().join(format!("sip-lb-{}-{name}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }
    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn file_then_flags() {
    // --listen replaces the file's list, IPv6 entry included: the example's
    // IPv6 backend would be unreachable.
    let f = TempFile::new("v6", EXAMPLE);
    let e = Config::load(&args(&["--config", f.arg(), "--listen", "192.0.2.1:5080"]).unwrap()).unwrap_err();
    let line = 1 + EXAMPLE[..EXAMPLE.find("\"[2001:db8::10]:5060\"").unwrap()].matches('\n').count();
    assert_eq!(e.file(), Some(f.arg()));
    assert_eq!(e.line(), Some(line), "{e}");
    assert_eq!(e.field(), "pool \"proxies\": backend \"[2001:db8::10]:5060\"");
    assert!(e.message().contains("an IPv6 backend needs an IPv6 listen address"), "{e}");

    let f = TempFile::new("ok", &EXAMPLE.replace(", \"[2001:db8::10]:5060\"", ""));
    let a = args(&[
        "--config",
        f.arg(),
        "--backend",
        "10.0.1.9",
        "--registrar",
        "10.0.0.9",
        "--listen",
        "0.0.0.0:5080",
        "--advertise",
        "192.0.2.1:5080",
        "--workers",
        "4",
        "--iface",
        "eth1",
        "--metrics",
        "127.0.0.1:9100",
    ])
    .unwrap();
    let c = Config::load(&a).unwrap();
    assert_eq!(c.listen, [Listen { addr: sa("0.0.0.0:5080"), advertise: sa("192.0.2.1:5080") }]);
    assert_eq!(c.workers, 4);
    assert_eq!(c.iface.as_deref(), Some("eth1"));
    assert_eq!(c.metrics, Some(sa("127.0.0.1:9100")));
    assert_eq!(c.pools.len(), 2, "flags add to the file's pools");
    assert_eq!(c.pools[0].backends.last().unwrap().addr, sa("10.0.0.9:5060"));
    assert_eq!(c.pools[1].backends.last().unwrap().addr, sa("10.0.1.9:5060"));
    assert_eq!(c.pools[1].backends.len(), 3);

    // Flags can complete a file that alone would be invalid.
    let f2 = TempFile::new("nopool", "workers = 1\n");
    let c = Config::load(&args(&["--config", f2.arg(), "--backend", "10.0.0.1"]).unwrap()).unwrap();
    assert_eq!(c.pools[0].name, "default");
}

#[test]
fn file_errors_name_the_file() {
    let f =
        TempFile::new("bad", "workers = 1\n[[pool]]\nname = \"p\"\nbackends = [{ addr = \"10.0.0.1\", weight = 0 }]\n");
    let e = Config::load(&args(&["--config", f.arg()]).unwrap()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:4:43: pool \"p\": backend \"10.0.0.1:5060\": weight: must be at least 1 (to take a backend out, remove it or mark it down)", f.arg())
    );
    let f = TempFile::new("syntax", "workers = \n");
    let e = Config::load(&args(&["--config", f.arg()]).unwrap()).unwrap_err();
    assert!(e.to_string().starts_with(&format!("{}:1:", f.arg())), "{e}");
    // A flag overriding a file value takes the blame itself.
    let f = TempFile::new("flagblame", &format!("listen = [\"10.0.0.5\"]\n{POOL}"));
    let e = Config::load(&args(&["--config", f.arg(), "--workers", "0"]).unwrap()).unwrap_err();
    assert_eq!(e.to_string(), "--workers: must be at least 1");
    let e = Config::load(&args(&["--config", "/nonexistent/sip-lb.toml"]).unwrap()).unwrap_err();
    assert_eq!(e.field(), "--config");
}

#[test]
fn listen_forms() {
    let c = Config::from_toml_str(&format!(
        "listen = [\"10.0.0.1\", {{ addr = \"0.0.0.0:5080\", advertise = \"192.0.2.7:5080\" }}, {{ addr = \"[::1]\" }}]\n{POOL}"
    ))
    .unwrap();
    assert_eq!(
        c.listen,
        [
            itself("10.0.0.1:5060"),
            Listen { addr: sa("0.0.0.0:5080"), advertise: sa("192.0.2.7:5080") },
            itself("[::1]:5060"),
        ]
    );
    // One listen address: the top-level advertise is its advertise.
    let c = Config::from_toml_str(&format!("listen = [{{ addr = \"0.0.0.0\" }}]\nadvertise = \"192.0.2.7\"\n{POOL}"))
        .unwrap();
    assert_eq!(c.listen, [Listen { addr: sa("0.0.0.0:5060"), advertise: sa("192.0.2.7:5060") }]);
    // ... also for the default listen address.
    let c = Config::from_toml_str(&format!("advertise = \"192.0.2.7:5090\"\n{POOL}")).unwrap();
    assert_eq!(c.listen, [Listen { addr: Config::DEFAULT_LISTEN, advertise: sa("192.0.2.7:5090") }]);
    // Advertising another family's address is the operator's business.
    let c = Config::from_toml_str(&format!(
        "listen = [{{ addr = \"10.0.0.1\", advertise = \"[2001:db8::1]:5060\" }}]\n{POOL}"
    ))
    .unwrap();
    assert_eq!(c.listen[0].advertise, sa("[2001:db8::1]:5060"));
}

#[test]
fn listen_errors_name_the_entry() {
    // A top-level advertise cannot choose among several listen addresses.
    assert_err(
        &format!("listen = [\"10.0.0.1\", \"10.0.0.2\"]\nadvertise = \"10.0.0.1\"\n{POOL}"),
        Some(2),
        Some(13),
        "advertise",
        "give each its own: listen = [{ addr = \"10.0.0.1:5060\", advertise = \"ip:port\" }",
    );
    // A wildcard among several says how to advertise it.
    assert_err(
        &format!("listen = [\"10.0.0.1\", \"0.0.0.0:5080\"]\n{POOL}"),
        Some(1),
        Some(23),
        "listen",
        "0.0.0.0:5080 is a wildcard address, so it cannot be advertised in Via/Record-Route; \
         write it as { addr = \"0.0.0.0:5080\", advertise = \"ip:port\" }",
    );
    assert_err(&format!("listen = [\"10.0.0.1:0\"]\n{POOL}"), Some(1), Some(11), "listen", "port 0");
    // What a listen entry advertises: not a wildcard, not port 0.
    assert_err(
        &format!("listen = [{{ addr = \"0.0.0.0\", advertise = \"[::]:5060\" }}]\n{POOL}"),
        Some(1),
        Some(43),
        "listen \"0.0.0.0:5060\": advertise",
        "[::]:5060 is a wildcard address or port 0",
    );
    assert_err(
        &format!("listen = [{{ addr = \"10.0.0.1\", advertise = \"10.0.0.1:0\" }}]\n{POOL}"),
        Some(1),
        Some(44),
        "listen \"10.0.0.1:5060\": advertise",
        "port 0",
    );
    assert_err(
        &format!("listen = [{{ addr = \"10.0.0.1\", advertise = \"lb.example\" }}]\n{POOL}"),
        Some(1),
        Some(44),
        "listen \"10.0.0.1:5060\": advertise",
        "invalid socket address \"lb.example\"",
    );
    // The same address twice, in either form.
    assert_err(
        &format!("listen = [\"10.0.0.1\", {{ addr = \"10.0.0.1:5060\", advertise = \"192.0.2.1\" }}]\n{POOL}"),
        Some(1),
        Some(32),
        "listen",
        "10.0.0.1:5060 is listed twice",
    );
    // The same advertised address twice: replies could not be told apart.
    assert_err(
        &format!("listen = [{{ addr = \"0.0.0.0\", advertise = \"192.0.2.7\" }}, \"192.0.2.7:5060\"]\n{POOL}"),
        Some(1),
        Some(58),
        "listen",
        "192.0.2.7:5060 would advertise 192.0.2.7:5060, as listen \"0.0.0.0:5060\" does",
    );
    assert_err(
        &format!(
            "listen = [{{ addr = \"10.0.0.1\", advertise = \"192.0.2.7\" }},\n  {{ addr = \"10.0.0.2\", advertise = \"192.0.2.7:5060\" }}]\n{POOL}"
        ),
        Some(2),
        Some(36),
        "listen \"10.0.0.2:5060\": advertise",
        "each listen address needs its own advertise",
    );
    // Both a top-level and an own advertise for the one address.
    assert_err(
        &format!("listen = [{{ addr = \"0.0.0.0\", advertise = \"192.0.2.1\" }}]\nadvertise = \"192.0.2.2\"\n{POOL}"),
        Some(2),
        Some(13),
        "advertise",
        "listen \"0.0.0.0:5060\" already sets its advertise",
    );
    // The table form knows its keys.
    let e = err(&format!("listen = [{{ addr = \"10.0.0.1\", advertize = \"192.0.2.1\" }}]\n{POOL}"));
    assert_eq!(e.line(), Some(1), "{e}");
    assert!(e.message().contains("unknown field `advertize`"), "{e}");
    let e = err(&format!("listen = [{{ advertise = \"192.0.2.1\" }}]\n{POOL}"));
    assert_eq!(e.line(), Some(1), "{e}");
    assert!(e.message().contains("missing field `addr`"), "{e}");
}

#[test]
fn advertise_flag_and_several_listen_addresses() {
    let e = Config::load(
        &args(&["--listen", "10.0.0.1", "--listen", "10.0.0.2", "--advertise", "192.0.2.9", "--backend", "10.0.0.5"])
            .unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.field(), "--advertise", "{e}");
    assert!(e.message().contains("give each its own"), "{e}");

    let e = Config::load(&args(&["--listen", "0.0.0.0", "--listen", "10.0.0.1", "--backend", "10.0.0.5"]).unwrap())
        .unwrap_err();
    assert_eq!((e.field(), e.line()), ("--listen", None), "{e}");
    assert!(e.message().contains("wildcard"), "{e}");

    let e = Config::load(&args(&["--advertise", "0.0.0.0:5060", "--backend", "10.0.0.5"]).unwrap()).unwrap_err();
    assert_eq!(e.field(), "--advertise", "{e}");
    assert!(e.message().contains("wildcard"), "{e}");

    // The file's top-level advertise with several --listen addresses: the
    // error points at the file's line.
    let f = TempFile::new("topadv", &format!("advertise = \"192.0.2.9\"\n{POOL}"));
    let e = Config::load(&args(&["--config", f.arg(), "--listen", "10.0.0.1", "--listen", "10.0.0.2"]).unwrap())
        .unwrap_err();
    assert!(e.to_string().starts_with(&format!("{}:1:13: advertise: there are 2 listen addresses", f.arg())), "{e}");
    // With one --listen address it applies to that one.
    let c = Config::load(&args(&["--config", f.arg(), "--listen", "0.0.0.0:5070"]).unwrap()).unwrap();
    assert_eq!(c.listen, [Listen { addr: sa("0.0.0.0:5070"), advertise: sa("192.0.2.9:5060") }]);
    // --advertise overrides the single entry's own advertise.
    let f = TempFile::new("ownadv", &format!("listen = [{{ addr = \"0.0.0.0\", advertise = \"192.0.2.1\" }}]\n{POOL}"));
    let c = Config::load(&args(&["--config", f.arg(), "--advertise", "192.0.2.2"]).unwrap()).unwrap();
    assert_eq!(c.listen[0].advertise, sa("192.0.2.2:5060"));
}

#[test]
fn every_backend_family_needs_a_listen_address() {
    let e = err(
        "listen = [\"127.0.0.1\"]\n[[pool]]\nname = \"proxies\"\nbackends = [\"10.0.1.1\", \"[2001:db8::10]:5060\"]\n",
    );
    assert_eq!(
        e.to_string(),
        "4:25: pool \"proxies\": backend \"[2001:db8::10]:5060\": an IPv6 backend needs an IPv6 \
         listen address (add one to listen; all listen addresses are IPv4)"
    );
    assert_err(
        &format!("listen = [\"[::1]\"]\n{POOL}"),
        Some(4),
        Some(13),
        "pool \"p\": backend \"10.0.0.1:5060\"",
        "an IPv4 backend needs an IPv4 listen address",
    );
    // The default listen address is IPv4; the table form points at `addr`.
    assert_err(
        "[[pool]]\nname = \"p\"\nbackends = [{ addr = \"[2001:db8::1]\", weight = 2 }]\n",
        Some(3),
        Some(22),
        "pool \"p\": backend \"[2001:db8::1]:5060\"",
        "IPv6 listen address",
    );
    // A v4-mapped backend is an IPv4 one.
    let mapped = "[[pool]]\nname = \"p\"\nbackends = [\"[::ffff:10.0.0.1]:5060\"]\n";
    assert!(Config::from_toml_str(mapped).is_ok());
    assert_err(
        &format!("listen = [\"[::1]\"]\n{mapped}"),
        Some(4),
        Some(13),
        "pool \"p\": backend \"[::ffff:10.0.0.1]:5060\"",
        "an IPv4 backend needs an IPv4 listen address",
    );
    // One listen address of each family serves both.
    let c = Config::from_toml_str(
        "listen = [\"127.0.0.1\", \"[::1]\"]\n[[pool]]\nname = \"p\"\nbackends = [\"10.0.1.1\", \"[2001:db8::10]\"]\n",
    )
    .unwrap();
    assert_eq!(c.pools[0].backends.len(), 2);
}

const INVITES: &str = "[[pool]]\nname = \"invites\"\nmethods = [\"INVITE\"]\nbackends = [\"10.0.0.1\"]\n";
const REST: &str = "[[pool]]\nname = \"rest\"\nbackends = [\"10.0.0.3\"]\n";

#[test]
fn follow_invite_methods_may_not_leave_invites_pool() {
    assert_err(
        &format!(
            "{INVITES}[[pool]]\nname = \"x\"\nmethods = [\"MESSAGE\", \"CANCEL\"]\nbackends = [\"10.0.0.2\"]\n{REST}"
        ),
        Some(7),
        Some(23),
        "pool \"x\": methods",
        "CANCEL must reach the pool INVITE goes to (\"invites\"): ",
    );
    for m in FOLLOW_INVITE {
        let e =
            err(&format!("{REST}{INVITES}[[pool]]\nname = \"x\"\nmethods = [\"{m}\"]\nbackends = [\"10.0.0.2\"]\n"));
        assert_eq!((e.line(), e.column()), (Some(10), Some(12)), "{e}");
        assert_eq!(e.field(), "pool \"x\": methods");
        assert!(
            e.message().starts_with(&format!("{m} must reach the pool INVITE goes to (\"invites\")"))
                && e.message().contains("RFC 3261 §16.11"),
            "{e}"
        );
    }
    // INVITE unlisted goes to the default pool; so must BYE.
    assert_err(
        &format!("[[pool]]\nname = \"x\"\nmethods = [\"BYE\"]\nbackends = [\"10.0.0.2\"]\n{REST}"),
        Some(3),
        Some(12),
        "pool \"x\": methods",
        "BYE must reach the pool INVITE goes to (\"rest\")",
    );
    // A default pool listing a follower while INVITE has its own pool.
    assert_err(
        &format!(
            "{INVITES}[[pool]]\nname = \"rest\"\nmethods = [\"ACK\"]\ndefault = true\nbackends = [\"10.0.0.3\"]\n"
        ),
        Some(7),
        Some(12),
        "pool \"rest\": methods",
        "ACK must reach the pool INVITE goes to (\"invites\")",
    );
    // Listing them with INVITE is redundant but allowed, as is listing them
    // in the default pool that INVITE goes to.
    let c = Config::from_toml_str(&format!(
        "[[pool]]\nname = \"invites\"\nmethods = [\"INVITE\", \"ACK\", \"CANCEL\", \"BYE\", \"PRACK\", \"UPDATE\", \"INFO\"]\nbackends = [\"10.0.0.1\"]\n{REST}"
    ))
    .unwrap();
    assert_eq!(c.pool_for("UPDATE").unwrap().name, "invites");
    let c = Config::from_toml_str(
        "[[pool]]\nname = \"r\"\nmethods = [\"REGISTER\"]\nbackends = [\"10.0.0.1\"]\n\
         [[pool]]\nname = \"rest\"\nmethods = [\"BYE\"]\ndefault = true\nbackends = [\"10.0.0.3\"]\n",
    )
    .unwrap();
    assert_eq!(c.pool_for("BYE").unwrap().name, "rest");
    assert_eq!(c.pool_for("REGISTER").unwrap().name, "r");
    // Methods outside the list route by themselves.
    let c = Config::from_toml_str(&format!(
        "{INVITES}[[pool]]\nname = \"x\"\nmethods = [\"MESSAGE\", \"REFER\", \"NOTIFY\", \"SUBSCRIBE\", \"OPTIONS\"]\nbackends = [\"10.0.0.2\"]\n{REST}"
    ))
    .unwrap();
    for m in ["MESSAGE", "REFER", "NOTIFY", "SUBSCRIBE", "OPTIONS"] {
        assert_eq!(c.pool_for(m).unwrap().name, "x", "{m}");
    }
    assert_eq!(c.pool_for("REGISTER").unwrap().name, "rest");
}

#[test]
fn sip_section() {
    assert_eq!(Config::from_toml_str(&format!("{POOL}[sip]\n")).unwrap().sip, SipConfig::default());
    let c = Config::from_toml_str(&format!(
        "{POOL}[sip]\naliases = [\"LB.Example.net\", \"198.51.100.7:5060\", \"[2001:DB8::7]\", \"lb.example.net:5061\"]\n\
         schemes = [\"SIP\", \"sips\", \"tel\"]\nproxy_require = [\"sec-agree\", \"Foo.bar\"]\n"
    ))
    .unwrap();
    let alias = |host: &str, port| Alias { host: host.into(), port };
    assert_eq!(
        c.sip,
        SipConfig {
            aliases: vec![
                alias("lb.example.net", None),
                alias("198.51.100.7", Some(5060)),
                alias("2001:db8::7", None),
                alias("lb.example.net", Some(5061)),
            ],
            schemes: Some(vec!["sip".into(), "sips".into(), "tel".into()]),
            proxy_require: vec!["sec-agree".into(), "Foo.bar".into()],
        }
    );
}

#[test]
fn sip_errors_name_the_entry() {
    let sip = |body: &str| format!("{POOL}[sip]\n{body}\n");
    assert_err(
        &sip("aliases = [\"lb.example.net\", \"lb_x.example\"]"),
        Some(5),
        Some(30),
        "sip.aliases",
        "\"lb_x.example\" is not a host alias",
    );
    assert_err(&sip("aliases = [\"2001:db8::7\"]"), Some(5), Some(12), "sip.aliases", "brackets");
    assert_err(&sip("aliases = [\"lb.example.net:0\"]"), Some(5), Some(12), "sip.aliases", "port");
    assert_err(
        &sip("aliases = [\"lb.example.net\", \"LB.example.net.\"]"),
        Some(5),
        Some(30),
        "sip.aliases",
        "listed twice",
    );
    assert_err(&sip("schemes = []"), Some(5), Some(11), "sip.schemes", "at least one scheme");
    assert_err(&sip("schemes = [\"sip\", \"1x\"]"), Some(5), Some(19), "sip.schemes", "\"1x\" is not a URI scheme");
    assert_err(&sip("schemes = [\"sip\", \"SIP\"]"), Some(5), Some(19), "sip.schemes", "listed twice");
    assert_err(&sip("proxy_require = [\"sec agree\"]"), Some(5), Some(18), "sip.proxy_require", "not an option-tag");
    assert_err(&sip("alias = [\"lb\"]"), Some(5), Some(1), "sip.alias", "unknown field `alias`");
    assert_err(&sip("aliases = \"lb\""), Some(5), Some(11), "sip.aliases", "invalid type");
}

const SECRET: &str = "0123456789abcdef";

#[test]
fn security_section() {
    assert_eq!(Config::from_toml_str(&format!("{POOL}[security]\n")).unwrap().security, SecurityConfig::default());
    let c = Config::from_toml_str(&format!(
        "{POOL}[security]\nsecret = \"{SECRET}\"\nprevious_secret = \"{SECRET}-old\"\n"
    ))
    .unwrap();
    assert_eq!(c.security.secret.as_deref(), Some(SECRET.as_bytes()));
    assert_eq!(c.security.previous.as_deref(), Some(format!("{SECRET}-old").as_bytes()));
    // Debug output (logs, test failures) never shows the bytes.
    let shown = format!("{c:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(
        shown.contains("SecurityConfig { secret: Some(<redacted, 16 bytes>), previous: Some(<redacted, 20 bytes>) }"),
        "{shown}"
    );
    assert_eq!(format!("{:?}", SecurityConfig::default()), "SecurityConfig { secret: None, previous: None }");
}

#[test]
fn secret_files_are_read_relative_to_the_config_file() {
    let dir = std::env::temp_dir().join(format!("sip-lb-{}-secrets", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cleanup = TempDir(dir.clone());
    std::fs::write(dir.join("current.key"), format!("{SECRET}\r\n")).unwrap();
    let old: Vec<u8> = (0u8..32).collect();
    std::fs::write(dir.join("old.key"), &old).unwrap();
    std::fs::write(dir.join("short.key"), "tooshort\n").unwrap();
    let cfg = dir.join("sip-lb.toml");
    let old_path = dir.join("old.key");
    std::fs::write(
        &cfg,
        format!("{POOL}[security]\nsecret_file = \"current.key\"\nprevious_secret_file = \"{}\"\n", old_path.display()),
    )
    .unwrap();
    let load = || Config::load(&args(&["--config", cfg.to_str().unwrap()]).unwrap());
    let c = load().unwrap();
    // One trailing line ending is not part of the secret; binary is fine.
    assert_eq!(c.security.secret.as_deref(), Some(SECRET.as_bytes()));
    assert_eq!(c.security.previous.as_deref(), Some(&old[..]));
    // An absolute path also works without a file to be relative to.
    let c = Config::from_toml_str(&format!("{POOL}[security]\nsecret_file = \"{}\"\n", old_path.display())).unwrap();
    assert_eq!(c.security.secret.as_deref(), Some(&old[..]));

    std::fs::write(&cfg, format!("{POOL}[security]\nsecret_file = \"short.key\"\n")).unwrap();
    let e = load().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:5:15: security.secret_file: the secret is 8 bytes; it must be at least 16 bytes", cfg.display())
    );
    std::fs::write(&cfg, format!("{POOL}[security]\nsecret_file = \"missing.key\"\n")).unwrap();
    let e = load().unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "{}:5:15: security.secret_file: cannot read {}: ",
            cfg.display(),
            dir.join("missing.key").display()
        )),
        "{e}"
    );
    drop(cleanup);
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn security_errors_name_the_line() {
    let sec = |body: &str| format!("{POOL}[security]\n{body}\n");
    let e = err(&sec("secret = \"short\""));
    assert_eq!(e.to_string(), "5:10: security.secret: the secret is 5 bytes; it must be at least 16 bytes");
    assert_err(
        &sec(&format!("secret = \"{SECRET}\"\nsecret_file = \"/etc/x\"")),
        Some(6),
        Some(15),
        "security.secret_file",
        "set either secret or secret_file, not both",
    );
    assert_err(
        &sec("secret_file = \"/nonexistent/sip-lb-secret\""),
        Some(5),
        Some(15),
        "security.secret_file",
        "cannot read /nonexistent/sip-lb-secret",
    );
    assert_err(&sec("secret_file = \"\""), Some(5), Some(15), "security.secret_file", "must name a file");
    assert_err(
        &sec(&format!("previous_secret = \"{SECRET}\"")),
        Some(5),
        Some(19),
        "security.previous_secret",
        "only accepted alongside the current one",
    );
    let old = TempFile::new("old-secret", SECRET);
    assert_err(
        &sec(&format!("previous_secret_file = \"{}\"", old.arg())),
        Some(5),
        Some(24),
        "security.previous_secret_file",
        "only accepted alongside the current one",
    );
    assert_err(
        &sec(&format!("secret = \"{SECRET}\"\nprevious_secret = \"old\"")),
        Some(6),
        Some(19),
        "security.previous_secret",
        "at least 16 bytes",
    );
    assert_err(
        &sec(&format!("secret = \"{SECRET}\"\nprevious_secret = \"{SECRET}\"\nprevious_secret_file = \"/x\"")),
        Some(7),
        Some(24),
        "security.previous_secret_file",
        "not both",
    );
    assert_err(&sec("key = \"x\""), Some(5), Some(1), "security.key", "unknown field `key`");
}

/// `pin`: auto by default, from the file, overridden by `--pin`; a bad value
/// names its line.
#[test]
fn pin_modes() {
    use sip_lb::config::PinMode;
    assert_eq!(Config::from_toml_str(POOL).unwrap().pin, PinMode::Auto);
    for (text, mode) in [("auto", PinMode::Auto), ("on", PinMode::On), ("off", PinMode::Off)] {
        assert_eq!(Config::from_toml_str(&format!("pin = \"{text}\"\n{POOL}")).unwrap().pin, mode);
    }
    assert_err(&format!("workers = 1\npin = \"always\"\n{POOL}"), Some(2), Some(7), "pin", "unknown variant");
    let a = args(&["--backend", "10.0.1.1", "--pin", "off"]).unwrap();
    assert_eq!(Config::load(&a).unwrap().pin, PinMode::Off);
    assert!(args(&["--pin", "sometimes"]).is_err());
}

/// `datapath`: unset by default (AF_XDP with an interface, else sockets),
/// from the file, overridden by `--datapath`; "afxdp" needs an interface.
#[test]
fn datapath_modes() {
    use sip_lb::config::Datapath;
    assert_eq!(Config::from_toml_str(POOL).unwrap().datapath, None);
    let c = Config::from_toml_str(&format!("iface = \"eth0\"\ndatapath = \"afxdp\"\n{POOL}")).unwrap();
    assert_eq!(c.datapath, Some(Datapath::Afxdp));
    let c = Config::from_toml_str(&format!("datapath = \"socket\"\n{POOL}")).unwrap();
    assert_eq!(c.datapath, Some(Datapath::Socket));
    assert_err(&format!("datapath = \"dpdk\"\n{POOL}"), Some(1), Some(12), "datapath", "unknown variant");
    let e = err(&format!("datapath = \"afxdp\"\n{POOL}"));
    assert_eq!(e.field(), "datapath", "{e}");
    assert!(e.message().contains("needs an interface"), "{e}");
    let a = args(&["--backend", "10.0.1.1", "--iface", "eth1", "--datapath", "socket"]).unwrap();
    assert_eq!(Config::load(&a).unwrap().datapath, Some(Datapath::Socket));
}

#[test]
fn xdp_redirect_threshold() {
    use sip_lb::config::DEFAULT_XDP_REDIRECT_ABOVE_PPS;
    assert_eq!(Config::from_toml_str(POOL).unwrap().xdp_redirect_above_pps, DEFAULT_XDP_REDIRECT_ABOVE_PPS);
    let c = Config::from_toml_str(&format!("xdp_redirect_above_pps = 0\n{POOL}")).unwrap();
    assert_eq!(c.xdp_redirect_above_pps, 0);
    assert_err(
        &format!("workers = 1\nxdp_redirect_above_pps = -5\n{POOL}"),
        Some(2),
        None,
        "xdp_redirect_above_pps",
        "",
    );
    // The flag wins over the file.
    let dir = std::env::temp_dir().join(format!("sip-lb-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("redirect.toml");
    std::fs::write(&file, format!("xdp_redirect_above_pps = 5000\n{POOL}")).unwrap();
    let path = file.display().to_string();
    assert_eq!(Config::load(&args(&["--config", &path]).unwrap()).unwrap().xdp_redirect_above_pps, 5000);
    let a = args(&["--config", &path, "--xdp-redirect-above", "70000"]).unwrap();
    assert_eq!(Config::load(&a).unwrap().xdp_redirect_above_pps, 70000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn busy_poll_setting() {
    assert_eq!(Config::from_toml_str(POOL).unwrap().busy_poll_us, 0);
    assert_eq!(Config::from_toml_str(&format!("busy_poll_us = 50\n{POOL}")).unwrap().busy_poll_us, 50);
    assert_err(&format!("workers = 1\nbusy_poll_us = \"fast\"\n{POOL}"), Some(2), None, "busy_poll_us", "");
    let a = args(&["--backend", "10.0.1.1", "--busy-poll", "30"]).unwrap();
    assert_eq!(Config::load(&a).unwrap().busy_poll_us, 30);
}

#[test]
fn shield_section() {
    use sip_lb::config::{ShieldConfig, DEFAULT_REPLY_RATE};
    use sip_lb_proto::shield::Rate;
    // Defaults: nothing blocked or limited but stateless replies; scanners dropped.
    let d = Config::from_toml_str(POOL).unwrap().shield;
    assert_eq!(d, ShieldConfig::default());
    assert_eq!(d.reply_rate, Some(DEFAULT_REPLY_RATE));
    assert!(d.rate.is_none() && d.block.is_empty() && d.scanners.iter().any(|s| s == "friendly-scanner"));

    let text = format!(
        "{POOL}[shield]\nblock = [\"203.0.113.0/24\", \"2001:db8:bad::/48\"]\nallow = [\"10.1.2.3\"]\n\
         rate = 200\nreply_rate = 0\nscanners = [\"EvilScanner\"]\ntracked_sources = 1024\n"
    );
    let s = Config::from_toml_str(&text).unwrap().shield;
    assert_eq!(s.block.iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["203.0.113.0/24", "2001:db8:bad::/48"]);
    assert_eq!(s.allow.iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["10.1.2.3/32"]);
    assert_eq!(s.rate, Some(Rate { per_sec: 200, burst: 200 }), "a burst defaults to one second's worth");
    assert_eq!(s.reply_rate, None, "reply_rate = 0 turns the reply limit off");
    assert_eq!(s.scanners, ["evilscanner"]);
    assert_eq!(s.tracked_sources, 1024);
    let b = Config::from_toml_str(&format!("{POOL}[shield]\nrate = 50\nburst = 5\nreply_burst = 7\n")).unwrap().shield;
    assert_eq!(b.rate, Some(Rate { per_sec: 50, burst: 5 }));
    assert_eq!(b.reply_rate, Some(Rate { burst: 7, ..DEFAULT_REPLY_RATE }));

    // Errors name the line of the bad entry.
    let bad = |body: &str| format!("workers = 1\n[shield]\n{body}\n{POOL}");
    assert_err(&bad("block = [\"10.0.0.0/8\",\n \"10.0.0.0/40\"]"), Some(4), None, "shield.block", "prefix length");
    assert_err(&bad("allow = [\"lb.example.net\"]"), Some(3), None, "shield.allow", "not an IP address");
    assert_err(&bad("burst = 10"), Some(3), None, "shield.burst", "needs a rate");
    assert_err(&bad("tracked_sources = 3"), Some(3), None, "shield.tracked_sources", "outside");
    assert_err(&bad("scanners = [\" \"]"), Some(3), None, "shield.scanners", "every request");
    assert_err(&bad("bans = 1"), Some(3), None, "shield.bans", "unknown field");
    assert_err(&bad("ban_seconds = 0"), Some(3), None, "shield.ban_seconds", "at least 1");
    assert_eq!(Config::from_toml_str(&bad("ban_seconds = 30")).unwrap().shield.ban_seconds, 30);
    let auto = Config::from_toml_str(&bad("ban_after_over_rate_seconds = 0\nban_after_failures = 20")).unwrap().shield;
    assert_eq!((auto.ban_after_over_rate_seconds, auto.ban_after_failures), (0, 20));
    assert_eq!((d.ban_after_over_rate_seconds, d.ban_after_failures), (10, 0), "defaults");
}
