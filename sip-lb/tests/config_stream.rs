//! Configuration of the TCP/TLS listeners (issue 13): `tcp:`/`tls:` in `listen` and
//! `--listen`, the `[tcp]` limits, `[tls]`, and the errors that name what is missing.

use clap::Parser;
use sip_lb::config::{Config, RunArgs, StreamConfig, StreamListen, TlsConfig, Transport};

const EXAMPLE: &str = include_str!("../../examples/sip-lb.toml");
const POOL: &str = "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:5060\"]\n";

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn tcp(addr: &str) -> StreamListen {
    StreamListen { transport: Transport::Tcp, addr: addr.parse().unwrap() }
}

#[test]
fn example_file_has_a_tcp_listener_and_the_default_limits() {
    let c = Config::from_toml_str(EXAMPLE).unwrap();
    assert_eq!(c.streams, [tcp("127.0.0.1:5060")]);
    assert_eq!(c.stream, StreamConfig::default());
    assert_eq!(c.tls, None);
    assert!(!c.stun);
    assert_eq!(c.record_route, sip_lb::config::RecordRoute::Auto);
    let off = Config::from_toml_str(&EXAMPLE.replace("# record_route = \"auto\"", "record_route = \"off\"")).unwrap();
    assert_eq!(off.record_route, sip_lb::config::RecordRoute::Off);
    assert_eq!(c.path, sip_lb::config::PathMode::Supported);
    let force = Config::from_toml_str(&EXAMPLE.replace("# path = \"supported\"", "path = \"force\"")).unwrap();
    assert_eq!(force.path, sip_lb::config::PathMode::Force);
    let require = Config::from_toml_str(&EXAMPLE.replace("# path = \"supported\"", "path = \"require\"")).unwrap();
    assert_eq!(require.path, sip_lb::config::PathMode::Require);
    assert!(c.links.is_empty() && c.backend_tls.is_none());
    assert!(Config::from_toml_str(&EXAMPLE.replace("# stun = true", "stun = true")).unwrap().stun);
}

#[test]
fn listen_strings_split_into_udp_and_stream_listeners() {
    let src = format!(
        "listen = [\"127.0.0.1:5060\", \"udp:127.0.0.1:5070\", \"tcp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]\n\
         [tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[tcp]\nmax_per_ip = 3\n{POOL}"
    );
    let c = Config::from_toml_str(&src).unwrap();
    assert_eq!(c.listen.iter().map(|l| l.addr.port()).collect::<Vec<_>>(), [5060, 5070]);
    assert_eq!(
        c.streams,
        [tcp("127.0.0.1:5060"), StreamListen { transport: Transport::Tls, addr: "127.0.0.1:5061".parse().unwrap() }]
    );
    assert_eq!(c.stream.max_per_ip, 3);
    assert_eq!(c.tls, Some(TlsConfig { cert: "c.pem".into(), key: "k.pem".into(), client_ca: None }));
}

#[test]
fn flags_take_tcp_and_tls_prefixes() {
    let args = Cli::try_parse_from([
        "sip-lb",
        "--listen",
        "127.0.0.1:5060",
        "--listen",
        "tcp:127.0.0.1:5060",
        "--backend",
        "10.0.0.1",
    ])
    .unwrap()
    .run;
    let c = Config::load(&args).unwrap();
    assert_eq!(c.listen.len(), 1);
    assert_eq!(c.streams, [tcp("127.0.0.1:5060")]);
    assert!(Cli::try_parse_from(["sip-lb", "--listen", "sctp:127.0.0.1:5060"]).is_err());
}

#[test]
fn stream_listener_errors_say_what_is_missing() {
    let err = |src: String| Config::from_toml_str(&src).unwrap_err().to_string();
    let e = err(format!("listen = [\"127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]\n{POOL}"));
    assert!(e.contains("needs a [tls] section"), "{e}");
    let e = err(format!("listen = [\"127.0.0.1:5060\", \"tcp:[::1]:5060\"]\n{POOL}"));
    assert!(e.contains("needs a UDP listen address of its family"), "{e}");
    let e = err(format!("listen = [\"127.0.0.1:5060\", \"tcp:127.0.0.1:5062\", \"tcp:127.0.0.1:5062\"]\n{POOL}"));
    assert!(e.contains("listed twice"), "{e}");
    let e = err(format!(
        "listen = [\"127.0.0.1:5060\", {{ addr = \"tcp:127.0.0.1:5060\", advertise = \"192.0.2.1:5060\" }}]\n{POOL}"
    ));
    assert!(e.contains("advertise is not supported on a stream listener"), "{e}");
    let e = err(format!("listen = [\"127.0.0.1:5060\"]\n[tcp]\nmax_message_bytes = 70000\n{POOL}"));
    assert!(e.contains("tcp.max_message_bytes"), "{e}");
    let e = err(format!("listen = [\"127.0.0.1:5060\"]\n[tcp]\nmax_conns = 1\n{POOL}"));
    assert!(e.contains("max_conns"), "{e}");
    // A tcp/tls pool's links are made for written addresses, not DNS answers.
    for backends in ["srv = \"_sip._tcp.farm.example\"", "backends = [\"farm.example:5060\"]"] {
        let e = err(format!(
            "listen = [\"127.0.0.1:5060\"]\n\n[[pool]]\nname = \"farm\"\ntransport = \"tls\"\n{backends}\n"
        ));
        assert!(e.starts_with("5:13: pool \"farm\": transport:"), "names the transport line: {e}");
        assert!(e.contains("backends found by DNS"), "{e}");
    }
}

#[test]
fn a_reload_cannot_change_the_stream_listeners_or_limits() {
    use sip_lb::control::reload::check_applicable;
    let with = |extra: &str| {
        Config::from_toml_str(&format!("listen = [\"127.0.0.1:5060\", \"tcp:127.0.0.1:5060\"]\n{extra}\n{POOL}"))
            .unwrap()
    };
    let running = with("");
    assert!(check_applicable(&with(""), &running).is_ok());
    let e = check_applicable(&with("[tcp]\nmax_per_ip = 1"), &running).unwrap_err().to_string();
    assert!(e.contains("need a restart"), "{e}");
    let other =
        Config::from_toml_str(&format!("listen = [\"127.0.0.1:5060\", \"tcp:127.0.0.1:5062\"]\n{POOL}")).unwrap();
    assert!(check_applicable(&other, &running).is_err());
    // Certificates and backends' connections follow a reload (`control/streams.rs`).
    let tls = with("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"");
    assert!(check_applicable(&tls, &running).is_ok());
    let tcp_pool = Config::from_toml_str(
        "listen = [\"127.0.0.1:5060\", \"tcp:127.0.0.1:5060\"]\n\
         [[pool]]\nname = \"farm\"\ntransport = \"tcp\"\nbackends = [\"127.0.0.1:5070\"]\n",
    )
    .unwrap();
    assert!(check_applicable(&tcp_pool, &running).is_ok());
}
