//! Configuration: the TOML file, the flags, and errors that say where.

use std::net::SocketAddr;

use clap::Parser;
use sip_lb::balance::Router;
use sip_lb::config::{BackendConfig, Config, ConfigError, RunArgs};

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

#[test]
fn example_file_round_trips_into_router_choices() {
    let c = Config::from_toml_str(EXAMPLE).unwrap();
    assert_eq!(c.listen, [sa("127.0.0.1:5060")]);
    assert_eq!(c.advertise, sa("127.0.0.1:5060"));
    assert_eq!(c.workers, 2);
    assert_eq!(c.iface, None);
    assert_eq!(c.health.interval_ms, 2000);
    assert_eq!(c.pools.len(), 2);
    assert_eq!(
        c.pools[0].backends,
        [
            BackendConfig {
                addr: sa("10.0.0.1:5060"),
                weight: 2
            },
            BackendConfig {
                addr: sa("10.0.0.2:5060"),
                weight: 1
            }
        ]
    );
    assert_eq!(c.pools[0].methods, ["REGISTER"]);
    assert!(!c.pools[0].default && c.pools[1].default);
    assert_eq!(c.pool_for("REGISTER").unwrap().name, "registrars");
    assert_eq!(c.pool_for("INVITE").unwrap().name, "proxies");

    let r = Router::build_all(&c);
    let mut regs = [0usize; 2];
    for i in 0..30_000 {
        let h = sip_lb_common::call_id_hash(format!("{i}@example").as_bytes());
        let reg = r.choose(b"REGISTER", h).unwrap();
        regs[usize::from(reg == sa("10.0.0.2:5060"))] += 1;
        let inv = r.choose(b"INVITE", h).unwrap();
        assert!(c.pools[1].backends.iter().any(|b| b.addr == inv));
    }
    // weight 2 : 1
    assert!(
        (regs[0] as f64 / 30_000.0 - 2.0 / 3.0).abs() < 0.02,
        "{regs:?}"
    );
}

#[test]
fn defaults() {
    let c = Config::from_toml_str(POOL).unwrap();
    assert_eq!(c.listen, [Config::DEFAULT_LISTEN]);
    assert_eq!(c.advertise, sa("127.0.0.1:5060"));
    assert_eq!(c.workers, sip_lb::config::default_workers());
    assert!(c.workers >= 1);
    assert!(c.pools[0].default, "a pool without methods is the default");
    assert_eq!(c.pools[0].backends[0].weight, 1);

    let c =
        Config::from_toml_str(&format!("listen = [\"10.1.1.1\", \"[::1]:5070\"]\n{POOL}")).unwrap();
    assert_eq!(c.listen, [sa("10.1.1.1:5060"), sa("[::1]:5070")]);
    assert_eq!(c.advertise, sa("10.1.1.1:5060"));
}

#[test]
fn syntax_error_names_line_and_column() {
    assert_err(
        "workers = 2\nlisten = [\"127.0.0.1:5060\"\n",
        Some(3),
        None,
        "",
        "",
    );
    let e = err("workers = 2\n[[pool]\n");
    assert_eq!(e.line(), Some(2), "{e}");
}

#[test]
fn type_errors_name_the_field() {
    // After a [[pool]] header, `workers` is a key of the pool table.
    assert_err(
        &format!("{POOL}\nworkers = 2"),
        Some(5),
        Some(1),
        "pool \"p\": workers",
        "unknown field `workers`",
    );
    assert_err(
        &format!("workers = \"two\"\n{POOL}"),
        Some(1),
        Some(11),
        "workers",
        "invalid type",
    );
    assert_err(
        &format!("workers = -1\n{POOL}"),
        Some(1),
        Some(11),
        "workers",
        "",
    );
    assert_err(
        "[[pool]]\nname = \"p\"\nbackends = [{ addr = \"10.0.0.1:5060\", weight = -2 }]\n",
        Some(3),
        Some(48),
        "pool \"p\": weight",
        "",
    );
    assert_err(
        "[[pool]]\nname = \"p\"\nbackends = [5060]\n",
        Some(3),
        Some(13),
        "pool \"p\": backends",
        "backend",
    );
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
    assert_err(
        &format!("{POOL}[health]\ninterval = 5\n"),
        Some(5),
        Some(1),
        "health.interval",
        "unknown field",
    );
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
    assert_err(
        &format!("metrics = \"1.2.3.4\"\n{POOL}"),
        Some(1),
        Some(11),
        "metrics",
        "expected ip:port",
    );
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
    assert_err(
        &format!("{POOL}{POOL}"),
        Some(5),
        Some(8),
        "pool \"p\": name",
        "used twice",
    );
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
    assert_err(
        "[[pool]]\nbackends = [\"10.0.0.1\"]\n",
        Some(1),
        None,
        "",
        "missing field `name`",
    );
}

#[test]
fn scalar_semantics() {
    assert_err(
        &format!("workers = 0\n{POOL}"),
        Some(1),
        Some(11),
        "workers",
        "at least 1",
    );
    assert_err(
        &format!("listen = [\"0.0.0.0:5060\"]\n{POOL}"),
        Some(1),
        Some(11),
        "listen",
        "set `advertise`",
    );
    assert_err(
        &format!("listen = [\"[::]:5060\"]\n{POOL}"),
        Some(1),
        Some(11),
        "listen",
        "wildcard",
    );
    assert_err(
        &format!("advertise = \"0.0.0.0\"\n{POOL}"),
        Some(1),
        Some(13),
        "advertise",
        "wildcard",
    );
    assert_err(
        &format!("listen = [\"10.0.0.9\", \"10.0.0.9:5060\"]\n{POOL}"),
        Some(1),
        Some(23),
        "listen",
        "listed twice",
    );
    assert_err(
        &format!("{POOL}[health]\ntimeout_ms = 0\n"),
        Some(5),
        Some(14),
        "health.timeout_ms",
        "at least 1",
    );
    let c = Config::from_toml_str(&format!(
        "listen = [\"0.0.0.0:5060\"]\nadvertise = \"192.0.2.7\"\n{POOL}"
    ))
    .unwrap();
    assert_eq!(c.advertise, sa("192.0.2.7:5060"));
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
    let a = args(&[
        "--backend",
        "10.0.1.1",
        "--backend",
        "10.0.1.2:5070",
        "--registrar",
        "[2001:db8::1]",
        "--workers",
        "3",
    ])
    .unwrap();
    let c = Config::load(&a).unwrap();
    assert_eq!(c.workers, 3);
    assert_eq!(c.listen, [Config::DEFAULT_LISTEN]);
    let names: Vec<_> = c
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.default, p.backends.len()))
        .collect();
    assert_eq!(names, [("default", true, 2), ("registrars", false, 1)]);
    let r = Router::build_all(&c);
    assert_eq!(r.choose(b"REGISTER", 1), Some(sa("[2001:db8::1]:5060")));
    assert!([sa("10.0.1.1:5060"), sa("10.0.1.2:5070")].contains(&r.choose(b"INVITE", 1).unwrap()));

    // Without --registrar, REGISTER goes to the default pool.
    let c = Config::load(&args(&["--backend", "10.0.1.1"]).unwrap()).unwrap();
    assert_eq!(
        Router::build_all(&c).choose(b"REGISTER", 5),
        Some(sa("10.0.1.1:5060"))
    );
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
    assert!(args(&["--workers", "two"])
        .unwrap_err()
        .to_string()
        .contains("--workers"));

    let e = Config::load(&args(&["--workers", "0", "--backend", "10.0.0.1"]).unwrap()).unwrap_err();
    assert_eq!(e.to_string(), "--workers: must be at least 1");
    let e = Config::load(&args(&["--listen", "0.0.0.0", "--backend", "10.0.0.1"]).unwrap())
        .unwrap_err();
    assert_eq!(e.field(), "--listen");
    assert!(e.message().contains("--advertise"), "{e}");
    let e = Config::load(&args(&["--backend", "10.0.0.1", "--backend", "10.0.0.1:5060"]).unwrap())
        .unwrap_err();
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
    let f = TempFile::new("ok", EXAMPLE);
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
    assert_eq!(c.listen, [sa("0.0.0.0:5080")]);
    assert_eq!(c.advertise, sa("192.0.2.1:5080"));
    assert_eq!(c.workers, 4);
    assert_eq!(c.iface.as_deref(), Some("eth1"));
    assert_eq!(c.metrics, Some(sa("127.0.0.1:9100")));
    assert_eq!(c.pools.len(), 2, "flags add to the file's pools");
    assert_eq!(
        c.pools[0].backends.last().unwrap().addr,
        sa("10.0.0.9:5060")
    );
    assert_eq!(
        c.pools[1].backends.last().unwrap().addr,
        sa("10.0.1.9:5060")
    );
    assert_eq!(c.pools[1].backends.len(), 4);

    // Flags can complete a file that alone would be invalid.
    let f2 = TempFile::new("nopool", "workers = 1\n");
    let c = Config::load(&args(&["--config", f2.arg(), "--backend", "10.0.0.1"]).unwrap()).unwrap();
    assert_eq!(c.pools[0].name, "default");
}

#[test]
fn file_errors_name_the_file() {
    let f = TempFile::new(
        "bad",
        "workers = 1\n[[pool]]\nname = \"p\"\nbackends = [{ addr = \"10.0.0.1\", weight = 0 }]\n",
    );
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
